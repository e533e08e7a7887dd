//! The widget on the demo page in real headless Chromium: open, type, see the reply, reload and
//! resume, phone width. Driven by `tests/browser/widget.mjs` (playwright-core + Debian chromium).

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
