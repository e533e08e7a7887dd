//! Real headless Chromium (playwright-core driving Debian's chromium):
//! - the widget on the demo page: open, type, see the reply, reload and resume, phone width
//!   (`tests/browser/widget.mjs`);
//! - the agent console with a customer beside it: an angry customer in the widget is handed off,
//!   appears live in the logged-in agent's console with its emotion badge and the reason, the
//!   agent's reply reaches the widget, and after a hand back the bot answers again; a wrong
//!   password is refused (`tests/browser/console.mjs`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Backend, Options, Server};

fn browser_available() -> Result<(), String> {
    let chromium = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Err(format!("no Chromium at {chromium}"));
    }
    let modules =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/playwright-core");
    if !modules.exists() {
        return Err("tests/browser/node_modules is missing (npm ci --prefix tests/browser)".into());
    }
    Ok(())
}

#[tokio::test]
async fn the_demo_page_widget_chats_in_headless_chromium() {
    if let Err(why) = browser_available() {
        assert!(
            std::env::var("FRONTDESK_REQUIRE_BROWSER").is_err(),
            "browser test required but {why}"
        );
        eprintln!("SKIPPED browser test: {why} (scripts/test installs it)");
        return;
    }
    let server = Server::start(Options::new(&Backend::Sqlite)).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/widget.mjs");
    let run = tokio::process::Command::new("node")
        .arg(script)
        .arg("--base")
        .arg(&server.base)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("browser test finished within 180 s")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser test failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        out.status,
        server.log()
    );
    assert!(stdout.contains("browser widget test: ok"), "{stdout}");
}

#[tokio::test]
async fn an_agent_takes_over_an_angry_widget_customer_in_the_console() {
    if let Err(why) = browser_available() {
        assert!(
            std::env::var("FRONTDESK_REQUIRE_BROWSER").is_err(),
            "browser test required but {why}"
        );
        eprintln!("SKIPPED browser test: {why} (scripts/test installs it)");
        return;
    }
    let mut opts = Options::new(&Backend::Sqlite);
    opts.knowledge = true;
    let server = Server::start(opts).await;
    server
        .add_agent("anna@example.com", "Anna", "en,ru,vi,zh", 3)
        .await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.mjs");
    let run = tokio::process::Command::new("node")
        .arg(script)
        .args(["--base", &server.base])
        .args(["--email", "anna@example.com"])
        .args(["--password", common::AGENT_PASSWORD])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("console browser test finished within 240 s")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "console browser test failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        out.status,
        server.log()
    );
    assert!(stdout.contains("browser console test: ok"), "{stdout}");
}
