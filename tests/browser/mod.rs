//! A real Chromium (Debian's `chromium` and `chromium-driver`) driven
//! over WebDriver by fantoccini, for the console's browser tests.
//! Without `chromedriver` on PATH a test skips with a message, unless
//! `CHARTBRIDGE_TEST_REQUIRE_BROWSER` is set (then it fails).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// A headless Chromium session and the chromedriver behind it.
pub struct Browser {
    pub client: Client,
    _driver: Child,
    _profile: tempfile::TempDir,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Starts chromedriver and a headless Chromium; `None` (with a message on
/// stderr) when they are not installed and not required.
pub async fn start() -> Option<Browser> {
    let Some(driver) = on_path("chromedriver") else {
        if std::env::var_os("CHARTBRIDGE_TEST_REQUIRE_BROWSER").is_some() {
            panic!("chromedriver not found; apt-get install chromium chromium-driver");
        }
        eprintln!("SKIP: chromedriver not found (apt-get install chromium chromium-driver)");
        return None;
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/status")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let profile = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--window-size=1280,1000".to_owned(),
        format!("--user-data-dir={}", profile.path().display()),
    ];
    if std::env::var_os("CHARTBRIDGE_TEST_BROWSER_ARGS").is_some() {
        args.extend(
            std::env::var("CHARTBRIDGE_TEST_BROWSER_ARGS")
                .unwrap()
                .split_whitespace()
                .map(str::to_owned),
        );
    }
    let mut options = json!({ "args": args });
    if let Some(chromium) = on_path("chromium") {
        options["binary"] = json!(chromium);
    }
    let caps = json!({ "browserName": "chrome", "goog:chromeOptions": options });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let client = ClientBuilder::rustls()
        .expect("rustls client")
        .capabilities(caps)
        .connect(&url)
        .await
        .expect("WebDriver session");
    Some(Browser {
        client,
        _driver: child,
        _profile: profile,
    })
}

/// Where the browser tests write screenshots: `$CARGO_TARGET_DIR/console-screenshots`
/// or `target/console-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves a PNG of the current page as `<name>.png` in [`screenshot_dir`].
pub async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let png = client.screenshot().await.expect("screenshot");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    path
}

/// Evaluates `script` (a function body; `arguments` are `args`).
pub async fn js(client: &Client, script: &str, args: Vec<Value>) -> Value {
    client.execute(script, args).await.expect("script runs")
}

pub mod console;
pub mod oidc;
pub mod verifier;
