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

/// Whether to run: false (and a SKIPPED line) without a browser, unless the suite requires one.
fn should_run() -> bool {
    match browser_available() {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var("FRONTDESK_REQUIRE_BROWSER").is_err(),
                "browser test required but {why}"
            );
            eprintln!("SKIPPED browser test: {why} (scripts/test installs it)");
            false
        }
    }
}

/// Runs `tests/browser/<script>` with `args` against the server; fails with its output and the
/// server's log unless it passes and prints `ok_line`.
async fn run_script(server: &Server, script: &str, args: &[&str], ok_line: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(script);
    let run = tokio::process::Command::new("node")
        .arg(path)
        .args(["--base", &server.base])
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .unwrap_or_else(|_| panic!("{script} finished within 240 s"))
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        out.status,
        server.log()
    );
    assert!(stdout.contains(ok_line), "{stdout}");
}

#[tokio::test]
async fn the_demo_page_widget_chats_in_headless_chromium() {
    if !should_run() {
        return;
    }
    let server = Server::start(Options::new(&Backend::Sqlite)).await;
    run_script(&server, "widget.mjs", &[], "browser widget test: ok").await;
}

#[tokio::test]
async fn an_agent_takes_over_an_angry_widget_customer_in_the_console() {
    if !should_run() {
        return;
    }
    let mut opts = Options::new(&Backend::Sqlite);
    opts.knowledge = true;
    let server = Server::start(opts).await;
    server
        .add_agent("anna@example.com", "Anna", "en,ru,vi,zh", 3)
        .await;
    run_script(
        &server,
        "console.mjs",
        &[
            "--email",
            "anna@example.com",
            "--password",
            common::AGENT_PASSWORD,
        ],
        "browser console test: ok",
    )
    .await;
}
