//! The console's in-page verifier (`/console/verify`, docs/console.md) in
//! a real headless Chromium: good and tampered bundles give the same
//! verdict and the same failed step as `chartbridge verify`
//! (`prove::service::verify_bundle_files`) and `deploy/tools/verify_bundle.py`;
//! the page saved to disk verifies offline; no page or asset names another
//! host.

mod browser;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chartbridge::console::{ConsoleState, router};
use fantoccini::{Client, Locator};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/proofs")
}

async fn serve() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(ConsoleState::verifier_only())).await });
    addr
}

/// The page's verdict: verified, failed step, and the (step, state) rows.
#[derive(Debug, PartialEq)]
struct Verdict {
    verified: bool,
    failed_step: Option<String>,
}

async fn run_in_page(
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
async fn run_files(
    c: &Client,
    url: &str,
    files: &[(&str, &Path)],
    keys: &str,
) -> (Verdict, Vec<(String, String)>) {
    c.goto(url).await.unwrap();
    for (id, path) in files {
        let input = c.find(Locator::Id(id)).await.unwrap();
        input.send_keys(path.to_str().unwrap()).await.unwrap();
    }
    browser::js(
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
        let state = browser::js(
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
    let r = browser::js(
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

fn rust_verdict(bundle: &Path, content: Option<&Path>, key: Option<&Path>) -> Verdict {
    let v = chartbridge::prove::service::verify_bundle_files(bundle, content, key).unwrap();
    Verdict {
        verified: v.verified,
        failed_step: v.failed_step.map(|s| format!("{s:?}")),
    }
}

fn python_verdict(bundle: &Path, content: Option<&Path>, key: Option<&Path>) -> Verdict {
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/tools/verify_bundle.py"))
        .arg(bundle);
    if let Some(c) = content {
        cmd.arg("--content").arg(c);
    }
    if let Some(k) = key {
        cmd.arg("--key").arg(k);
    }
    let out = cmd.output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let failed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("FAIL "))
        .map(|l| l.split(':').next().unwrap().to_owned());
    assert!(
        out.status.code() == Some(0) || failed.is_some(),
        "verify_bundle.py: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Verdict {
        verified: out.status.code() == Some(0),
        failed_step: failed,
    }
}

/// (name, bundle, content, with the trusted key, expected failed step)
type Case<'a> = (&'a str, PathBuf, Option<PathBuf>, bool, Option<&'a str>);

/// Replaces the character at `at` of a base64 field with another
/// base64 character (one flipped byte in the file).
fn flip_char(text: &str, at: usize) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

fn tamper(bundle: &Value, field: &str, at: impl Fn(&str) -> usize) -> Value {
    let mut b = bundle.clone();
    let pointer = field;
    let old = b.pointer(pointer).unwrap().as_str().unwrap().to_owned();
    *b.pointer_mut(pointer).unwrap() = json!(flip_char(&old, at(&old)));
    b
}

#[tokio::test(flavor = "multi_thread")]
async fn in_page_verifier_agrees_with_chartbridge_verify_and_verify_bundle_py() {
    let Some(browser) = browser::start().await else {
        return;
    };
    let c = &browser.client;
    let addr = serve().await;
    let url = format!("http://{addr}/console/verify");
    let dir = tempfile::tempdir().unwrap();
    let f = fixtures();
    let key = f.join("sample.vkey");
    let vkey = std::fs::read_to_string(&key).unwrap();

    let v1: Value =
        serde_json::from_slice(&std::fs::read(f.join("sample-bundle.json")).unwrap()).unwrap();
    let v2: Value =
        serde_json::from_slice(&std::fs::read(f.join("sample-v2-bundle.json")).unwrap()).unwrap();
    let mut content = std::fs::read(f.join("sample-content.bin")).unwrap();
    content[0] ^= 0x01;
    let flipped_content = dir.path().join("flipped-content.bin");
    std::fs::write(&flipped_content, &content).unwrap();
    let mut content2 = std::fs::read(f.join("sample-v2-content.bin")).unwrap();
    let last = content2.len() - 1;
    content2[last] ^= 0x80;
    let flipped_content2 = dir.path().join("flipped-v2-content.bin");
    std::fs::write(&flipped_content2, &content2).unwrap();

    let sig_at = |s: &str| s.rfind(' ').unwrap() + 12;
    let write = |name: &str, v: &Value| {
        let p = dir.path().join(name);
        std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
        p
    };
    let root_at = |s: &str| s.find('\n').unwrap() + 3 + 10;
    // (name, bundle, content, with key, expected failed step)
    let cases: Vec<Case> = vec![
        (
            "v1-good",
            f.join("sample-bundle.json"),
            Some(f.join("sample-content.bin")),
            true,
            None,
        ),
        (
            "v1-good-own-keys",
            f.join("sample-bundle.json"),
            Some(f.join("sample-content.bin")),
            false,
            None,
        ),
        (
            "v2-good",
            f.join("sample-v2-bundle.json"),
            Some(f.join("sample-v2-content.bin")),
            true,
            None,
        ),
        (
            "v2-good-received",
            f.join("sample-v2-bundle.json"),
            Some(f.join("sample-v2-received.bin")),
            true,
            None,
        ),
        (
            "v1-content-flipped",
            f.join("sample-bundle.json"),
            Some(flipped_content.clone()),
            true,
            Some("ContentHash"),
        ),
        (
            "v2-content-flipped",
            f.join("sample-v2-bundle.json"),
            Some(flipped_content2),
            true,
            Some("ContentHash"),
        ),
        (
            "v1-leaf-flipped",
            write("leaf.json", &tamper(&v1, "/leaf_data", |_| 40)),
            None,
            true,
            Some("LeafData"),
        ),
        (
            "v1-path-flipped",
            write("path.json", &tamper(&v1, "/inclusion_path/1", |_| 10)),
            Some(f.join("sample-content.bin")),
            true,
            Some("Inclusion"),
        ),
        (
            "v1-root-flipped",
            write("root.json", &tamper(&v1, "/checkpoint", root_at)),
            Some(f.join("sample-content.bin")),
            true,
            Some("Inclusion"),
        ),
        (
            "v1-signature-flipped",
            write("sig.json", &tamper(&v1, "/checkpoint", sig_at)),
            Some(f.join("sample-content.bin")),
            true,
            Some("Signature"),
        ),
        (
            "v2-signature-flipped",
            write("sig2.json", &tamper(&v2, "/checkpoint", sig_at)),
            Some(f.join("sample-v2-content.bin")),
            true,
            Some("Signature"),
        ),
    ];
    for (name, bundle, content, with_key, expected) in &cases {
        let keys = if *with_key { vkey.as_str() } else { "" };
        let key = with_key.then_some(key.as_path());
        let (page, rows) = run_in_page(c, &url, bundle, content.as_deref(), keys).await;
        browser::js(
            c,
            "document.getElementById('result').scrollIntoView();",
            vec![],
        )
        .await;
        browser::screenshot(c, &format!("verify-{name}")).await;
        let expected = Verdict {
            verified: expected.is_none(),
            failed_step: expected.map(str::to_owned),
        };
        assert_eq!(page, expected, "{name}: the page's verdict; steps {rows:?}");
        assert_eq!(
            rust_verdict(bundle, content.as_deref(), key),
            expected,
            "{name}: chartbridge verify"
        );
        assert_eq!(
            python_verdict(bundle, content.as_deref(), key),
            expected,
            "{name}: verify_bundle.py"
        );
        let passed: Vec<&str> = rows
            .iter()
            .filter(|r| r.1 == "pass")
            .map(|r| r.0.as_str())
            .collect();
        let all = [
            "Format",
            "LeafData",
            "ContentHash",
            "Checkpoint",
            "Inclusion",
            "Signature",
            "KeyRevoked",
            "KeyNotValid",
        ];
        let shown: Vec<&str> = all
            .iter()
            .copied()
            .filter(|s| *s != "ContentHash" || content.is_some())
            .collect();
        match &expected.failed_step {
            None => assert_eq!(passed, shown, "{name}: every step shown as passed"),
            Some(step) => {
                let at = shown.iter().position(|s| s == step).unwrap();
                assert_eq!(
                    passed,
                    shown[..at],
                    "{name}: the steps before {step} passed"
                );
                assert_eq!(
                    rows.last().unwrap(),
                    &(step.clone(), "fail".to_owned()),
                    "{name}"
                );
            }
        }
    }

    // The page saved to disk verifies offline (file://, no server).
    let html = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let saved = dir.path().join("verify.html");
    std::fs::write(&saved, &html).unwrap();
    let offline = format!("file://{}", saved.display());
    let (page, _) = run_in_page(
        c,
        &offline,
        &f.join("sample-v2-bundle.json"),
        Some(&f.join("sample-v2-content.bin")),
        &vkey,
    )
    .await;
    assert_eq!(
        page,
        Verdict {
            verified: true,
            failed_step: None
        },
        "offline, good"
    );
    let (page, _) = run_in_page(
        c,
        &offline,
        &f.join("sample-bundle.json"),
        Some(&flipped_content),
        &vkey,
    )
    .await;
    assert_eq!(
        page.failed_step.as_deref(),
        Some("ContentHash"),
        "offline, flipped byte"
    );
}

#[tokio::test]
async fn console_pages_load_nothing_from_another_host() {
    let addr = serve().await;
    for path in [
        "/console/",
        "/console/verify",
        "/console/assets/console.css",
        "/console/assets/verify.js",
    ] {
        let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.starts_with("default-src 'none';"), "{path}: {csp}");
        assert!(
            !csp.contains("http") && !csp.contains('*'),
            "{path}: CSP names no other host: {csp}"
        );
        let body = r.text().await.unwrap();
        for needle in ["http://", "https://", "//cdn", "@import"] {
            assert!(!body.contains(needle), "{path} names {needle}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn in_page_consistency_check_agrees_with_rfc9162_verify_consistency() {
    use base64::Engine;
    use chartbridge::prove::checkpoint::Checkpoint;
    use chartbridge::prove::merkle::{MemoryLog, verify_consistency};
    use chartbridge::prove::note::Signer;
    let Some(browser) = browser::start().await else {
        return;
    };
    let c = &browser.client;
    let addr = serve().await;
    let url = format!("http://{addr}/console/verify");
    let dir = tempfile::tempdir().unwrap();
    let b64 = |h: &[u8]| base64::engine::general_purpose::STANDARD.encode(h);
    let mut log = MemoryLog::new();
    for i in 0..13u32 {
        log.append(format!("leaf {i}").as_bytes());
    }
    let signer = Signer::from_seed("test.chartbridge.invalid/console", &[7; 32]).unwrap();
    let other = Signer::from_seed("test.chartbridge.invalid/console", &[8; 32]).unwrap();
    let vkey = signer.verifier().to_string();
    let doc = |first: u64, second: u64, by: &Signer| {
        let (r1, r2) = (log.root(first).unwrap(), log.root(second).unwrap());
        let note = |size, root| {
            Checkpoint::new(
                "test.chartbridge.invalid/console",
                size,
                root,
                1_800_000_000_000,
            )
            .sign(&[by])
            .unwrap()
        };
        json!({
            "first": first, "second": second, "first_root": b64(&r1), "second_root": b64(&r2),
            "proof": log.consistency_proof(first, second).unwrap().iter().map(|h| b64(h)).collect::<Vec<_>>(),
            "first_checkpoint": note(first, r1), "second_checkpoint": note(second, r2),
        })
    };
    let rust = |d: &Value| {
        let h = |v: &Value| -> [u8; 32] {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        };
        let proof: Vec<[u8; 32]> = d["proof"].as_array().unwrap().iter().map(h).collect();
        verify_consistency(
            d["first"].as_u64().unwrap(),
            d["second"].as_u64().unwrap(),
            &h(&d["first_root"]),
            &h(&d["second_root"]),
            &proof,
        )
        .is_ok()
    };
    let mut flipped = doc(5, 13, &signer);
    flipped["proof"][1] = json!(flip_char(flipped["proof"][1].as_str().unwrap(), 5));
    let mut unsigned = doc(3, 7, &signer);
    unsigned["first_checkpoint"] = Value::Null;
    unsigned["second_checkpoint"] = Value::Null;
    let mut bad_root = unsigned.clone();
    bad_root["second_root"] = json!(flip_char(bad_root["second_root"].as_str().unwrap(), 7));
    let cases = [
        ("consistency-good", doc(5, 13, &signer), None),
        ("consistency-good-pow2", doc(4, 13, &signer), None),
        ("consistency-unsigned", unsigned, None),
        ("consistency-flipped-proof", flipped, Some("Consistency")),
        ("consistency-flipped-root", bad_root, Some("Consistency")),
        (
            "consistency-other-key",
            doc(5, 13, &other),
            Some("Signature"),
        ),
    ];
    for (name, d, expected) in cases {
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec(&d).unwrap()).unwrap();
        let (page, rows) = run_files(c, &url, &[("consistency", &path)], &vkey).await;
        browser::js(
            c,
            "document.getElementById('result').scrollIntoView();",
            vec![],
        )
        .await;
        browser::screenshot(c, &format!("verify-{name}")).await;
        assert_eq!(page.failed_step.as_deref(), expected, "{name}: {rows:?}");
        if expected != Some("Signature") {
            assert_eq!(
                rust(&d),
                expected.is_none(),
                "{name}: agrees with prove::merkle::verify_consistency"
            );
        }
    }
}
