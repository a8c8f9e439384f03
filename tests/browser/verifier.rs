//! The verifier page (`/console/verify`) driven in the browser: serve it,
//! choose files, read the verdict the page shows.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chartbridge::console::{ConsoleState, router};
use fantoccini::{Client, Locator};
use serde_json::json;

/// Serves the console with the verifier only on a free loopback port.
pub async fn serve() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(ConsoleState::verifier_only())).await });
    addr
}

/// The page's verdict: verified, and the step that failed.
#[derive(Debug, PartialEq)]
pub struct Verdict {
    pub verified: bool,
    pub failed_step: Option<String>,
}

/// Verifies `bundle` (and `content`) in the page at `url`; the verdict and
/// the (step, pass|fail) rows the page shows.
pub async fn run_in_page(
    c: &Client,
    url: &str,
    bundle: &Path,
    content: Option<&Path>,
    keys: &str,
) -> (Verdict, Vec<(String, String)>) {
    let mut files = vec![("bundle", bundle)];
    files.extend(content.map(|c| ("content", c)));
    run_files(c, url, &files, keys).await
}

/// Chooses `files` (input id, path), sets the trusted keys, verifies.
pub async fn run_files(
    c: &Client,
    url: &str,
    files: &[(&str, &Path)],
    keys: &str,
) -> (Verdict, Vec<(String, String)>) {
    c.goto(url).await.unwrap();
    run_here(c, files, keys).await
}

/// On the verifier page already open: chooses `files`, sets the trusted
/// keys, verifies (with a bundle fetched by resource when no bundle file
/// is chosen).
pub async fn run_here(
    c: &Client,
    files: &[(&str, &Path)],
    keys: &str,
) -> (Verdict, Vec<(String, String)>) {
    for (id, path) in files {
        let input = c.find(Locator::Id(id)).await.unwrap();
        input.send_keys(path.to_str().unwrap()).await.unwrap();
    }
    super::js(
        c,
        "document.getElementById('keys').value = arguments[0];",
        vec![json!(keys)],
    )
    .await;
    c.find(Locator::Id("run"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let mut done = false;
    for _ in 0..200 {
        let state = super::js(
            c,
            "return document.getElementById('result').dataset.state;",
            vec![],
        )
        .await;
        if state == json!("done") {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(done, "the page finished verifying");
    let r = super::js(
        c,
        "const r = document.getElementById('result');
         return { verified: r.dataset.verified === 'true', failed: r.dataset.failedStep || null,
                  rows: Array.from(document.querySelectorAll('#steps > li'), li => [li.dataset.step, li.dataset.state]) };",
        vec![],
    )
    .await;
    let rows = r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_owned(),
                p[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (
        Verdict {
            verified: r["verified"].as_bool().unwrap(),
            failed_step: r["failed"].as_str().map(str::to_owned),
        },
        rows,
    )
}

/// Replaces the character at `at` of a base64 field with another
/// base64 character (one flipped byte in the file).
pub fn flip_char(text: &str, at: usize) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}
