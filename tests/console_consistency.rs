//! The console's verifier page checks RFC 9162 consistency proofs (as
//! `chartbridge log consistency` prints them, with signed checkpoints) in
//! a real headless Chromium, agreeing with `prove::merkle::verify_consistency`.

mod browser;

use browser::verifier::{flip_char, run_files, serve};
use serde_json::{Value, json};

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
