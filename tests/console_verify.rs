//! The console's in-page verifier (`/console/verify`, docs/console.md) in
//! a real headless Chromium: good and tampered bundles give the same
//! verdict and the same failed step as `chartbridge verify`
//! (`prove::service::verify_bundle_files`) and `deploy/tools/verify_bundle.py`;
//! the page saved to disk verifies offline; no page or asset names another
//! host.

mod browser;

use std::path::{Path, PathBuf};

use browser::verifier::{Verdict, flip_char, run_in_page, serve};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/proofs")
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
