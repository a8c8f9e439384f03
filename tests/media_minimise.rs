//! Data minimisation end to end (DSK I.11, GDPR Art. 5(1)(c), 25): real
//! RabbitMQ, the real FHIR server, SQLite, the real `chartbridge` binary
//! for the reviewer and the independent Python verifier. Photos, PNGs,
//! WebPs and PDFs with known metadata are archived without it (read back
//! from the KIS and parsed with `img-parts`, `kamadak-exif`, `image` and
//! `lopdf`), upright; both hashes are in the Provenance and the v2 leaf and
//! verify; an unstrippable type is held; a photo a rule sends to review is
//! held until a reviewer's rectangles are rendered black.

mod common;

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chartbridge::event::MessageKey;
use chartbridge::prove::bundle::{LeafSummary, verify_bundle};
use chartbridge::prove::checkpoint::KeyInfo;
use chartbridge::prove::leaf_v2::Leaf;
use chartbridge::prove::pseudonym::salted;
use chartbridge::prove::service::{self, CheckOutcome, ProofTarget};
use chartbridge::store::{MessageState, millis};
use common::Harness;
use common::photos;
use exif::Tag;
use img_parts::ImageEXIF;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A canonical event for the seeded patient carrying `bytes` inline.
fn event(h: &Harness, id: &str, mime: &str, bytes: &[u8]) -> (Vec<u8>, MessageKey) {
    let mut v: Value = serde_json::from_slice(&h.fixture("events/image-canonical.json")).unwrap();
    let key = h.key("matrix", id);
    v["message_id"] = key.message_id.clone().into();
    v["event_id"] = format!("evt-{}", key.message_id).into();
    v.as_object_mut().unwrap().remove("part");
    v["media"] = serde_json::json!({
        "mime_type": mime, "file_name": "anhang", "size": bytes.len(),
        "sha256": hex::encode(Sha256::digest(bytes)),
        "data_base64": STANDARD.encode(bytes),
    });
    (serde_json::to_vec(&v).unwrap(), key)
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// The `derivation` entity of the message's Provenance: (received SHA-256
/// hex, transformation code), and the Provenance's own content hash.
async fn derivation(h: &Harness, key: &MessageKey) -> (String, String, String) {
    let id = chartbridge::map::stable_id(key, "Provenance");
    let p = h.kis.read(&format!("Provenance/{id}")).await.unwrap();
    let ext = |v: &Value, url: &str| -> String {
        v["extension"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["url"] == url)
            .map(|e| {
                e["valueString"]
                    .as_str()
                    .or(e["valueCode"].as_str())
                    .unwrap()
                    .to_owned()
            })
            .unwrap()
    };
    let entity = p["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["role"] == "derivation")
        .expect("a derivation entity")
        .clone();
    (
        ext(&entity, chartbridge::map::SHA256_EXTENSION),
        ext(
            &entity,
            chartbridge::map::provenance::TRANSFORMATION_EXTENSION,
        ),
        ext(&p, chartbridge::map::SHA256_EXTENSION),
    )
}

/// Checks the v2 leaf of `key` binds the archived and received bytes and
/// the transformation, under the message's token.
async fn check_leaf(h: &Harness, key: &MessageKey, archived: &[u8], received: &[u8], t: &str) {
    let leaf = h.store.log_leaf(key).await.unwrap().unwrap();
    let text = String::from_utf8(leaf.leaf_data.clone()).unwrap();
    assert!(!text.contains(&key.message_id), "{text}");
    let Leaf::V2(r) = Leaf::decode(&leaf.leaf_data).unwrap() else {
        panic!("not a v2 leaf: {text}")
    };
    let keys = h.sealer.proof_keys();
    assert_eq!(r.message_token, keys.message_token(key));
    let salt = keys.salt(&r.message_token);
    assert_eq!(r.content_hmac, salted(&salt, &sha256(archived)));
    assert_eq!(r.received_hmac, salted(&salt, &sha256(received)));
    assert_eq!(r.transformation(), t);
}

async fn archived(h: &Harness, key: &MessageKey) -> Vec<u8> {
    let resource = h
        .wait_state(key, MessageState::Archived)
        .await
        .resource
        .unwrap();
    h.kis_content(&resource).await
}

fn python_verifies(dir: &std::path::Path, bundle: &str, content: &[u8], vkey: &str) -> String {
    std::fs::write(dir.join("bundle.json"), bundle).unwrap();
    std::fs::write(dir.join("content.bin"), content).unwrap();
    std::fs::write(dir.join("log.vkey"), format!("{vkey}\n")).unwrap();
    let out = Command::new("python3")
        .arg(common::repo().join("deploy/tools/verify_bundle.py"))
        .arg(dir.join("bundle.json"))
        .arg("--content")
        .arg(dir.join("content.bin"))
        .arg("--key")
        .arg(dir.join("log.vkey"))
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.ends_with("VERIFIED\n"), "{stdout}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_stripped_orientation_kept_both_hashes_proven() {
    let mut h = Harness::new(None, None).await;
    h.seed_patient("P-1001").await;
    let key_path = h.add_proofs_config("0 0 0 1 1 *");
    let signer = service::generate_signer_file("test-log", &key_path).unwrap();
    let now = || millis(chrono::Utc::now());
    h.store
        .add_signing_key(&KeyInfo::new(&signer.verifier(), now()), now())
        .await
        .unwrap();
    let (jpeg, png, webp, pdf) = (photos::jpeg(), photos::png(), photos::webp(), photos::pdf());
    // The fixtures carry what must go (else this test proves nothing).
    let received_exif = img_parts::jpeg::Jpeg::from_bytes(jpeg.clone().into())
        .unwrap()
        .exif()
        .unwrap();
    assert!(photos::exif_tags(&received_exif).contains(&Tag::GPSLatitude));
    let heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic\0\0\0\x10meta-with-gps".to_vec();
    let voice = b"OggS\0\x02voice-note".to_vec();
    let events = [
        event(&h, "$jpeg", "image/jpeg", &jpeg),
        event(&h, "$png", "image/png", &png),
        event(&h, "$webp", "image/webp", &webp),
        event(&h, "$pdf", "application/pdf", &pdf),
        event(&h, "$heic", "image/heic", &heic),
        event(&h, "$voice", "audio/ogg", &voice),
    ];
    let worker = h.start_worker();
    for (payload, _) in &events {
        h.publish(payload).await;
    }
    let keys: Vec<MessageKey> = events.iter().map(|(_, k)| k.clone()).collect();

    // JPEG: only the Orientation tag is left, no XMP, IPTC, comment or
    // trailer; the scan data is untouched and the photo displays upright.
    let out = archived(&h, &keys[0]).await;
    let parsed = img_parts::jpeg::Jpeg::from_bytes(out.clone().into()).unwrap();
    for s in parsed.segments() {
        assert!(
            !matches!(s.marker(), 0xED | 0xFE),
            "segment {:x}",
            s.marker()
        );
        if s.marker() == 0xE1 {
            assert!(s.contents().starts_with(b"Exif\0\0"), "XMP left");
        }
    }
    assert_eq!(
        photos::exif_tags(&parsed.exif().unwrap()),
        [Tag::Orientation]
    );
    assert!(out.ends_with(&[0xFF, 0xD9]), "bytes after EOI");
    let shown = photos::displayed(&out);
    assert_eq!(shown.dimensions(), (64, 48));
    assert!(shown.get_pixel(8, 8).0[0] > 180 && shown.get_pixel(56, 40).0[2] > 180);
    assert_eq!(shown, photos::displayed(&jpeg), "pixels changed");

    // PNG and WebP: no text, XMP, Exif or time chunks; same pixels.
    let out_png = archived(&h, &keys[1]).await;
    let parsed = img_parts::png::Png::from_bytes(out_png.clone().into()).unwrap();
    let kinds: Vec<[u8; 4]> = parsed.chunks().iter().map(|c| c.kind()).collect();
    for gone in [b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"tIME"] {
        assert!(!kinds.contains(gone), "{kinds:?}");
    }
    assert_eq!(photos::displayed(&out_png), photos::upright());
    let out_webp = archived(&h, &keys[2]).await;
    let parsed = img_parts::webp::WebP::from_bytes(out_webp.clone().into()).unwrap();
    assert!(parsed.exif().is_none() && !parsed.has_chunk(*b"XMP "));
    assert_eq!(photos::displayed(&out_webp), photos::upright());

    // PDF: no document information, no XMP; the page is still there.
    let out_pdf = archived(&h, &keys[3]).await;
    let doc = lopdf::Document::load_mem(&out_pdf).unwrap();
    assert!(doc.trailer.get(b"Info").is_err());
    assert!(doc.catalog().unwrap().get(b"Metadata").is_err());
    assert_eq!(doc.get_pages().len(), 1);
    assert!(!out_pdf.windows(12).any(|w| w == b"Dr. Beispiel"));

    // HEIC cannot be stripped: held, never archived as if it were.
    let held = h.wait_state(&keys[4], MessageState::Quarantined).await;
    assert_eq!(held.reason, "metadata_unstrippable");
    assert!(h.kis_ids("DocumentReference", &keys[4]).await.is_empty());
    // Audio passes by policy, recorded as not stripped.
    assert_eq!(archived(&h, &keys[5]).await, voice);
    let (received, transformation, _) = derivation(&h, &keys[5]).await;
    assert_eq!(
        (received.as_str(), transformation.as_str()),
        (hex::encode(sha256(&voice)).as_str(), "not-stripped")
    );
    check_leaf(&h, &keys[5], &voice, &voice, "not-stripped").await;
    worker.stop().await;

    // Both hashes in the Provenance and the leaf, for every stripped format.
    for (key, received, out) in [
        (&keys[0], &jpeg, &out),
        (&keys[1], &png, &out_png),
        (&keys[2], &webp, &out_webp),
        (&keys[3], &pdf, &out_pdf),
    ] {
        let (got_received, transformation, got_archived) = derivation(&h, key).await;
        assert_eq!(got_received, hex::encode(sha256(received)));
        assert_eq!(got_archived, hex::encode(sha256(out)));
        assert_eq!(transformation, "metadata-removed");
        assert_ne!(sha256(received), sha256(out));
        check_leaf(&h, key, out, received, "metadata-removed").await;
    }

    // The bundle verifies, in Rust and in Python, given the archived Binary
    // or the original as received; `verify --kis` agrees.
    let origin = h.config.proofs.origin.clone();
    service::sign_checkpoint(&h.store, &signer, &origin, now())
        .await
        .unwrap();
    let bundle = service::export_bundle(
        &h.store,
        &ProofTarget::Message(keys[0].clone()),
        (None, &h.sealer.proof_keys()),
        &origin,
        now(),
    )
    .await
    .unwrap();
    assert!(matches!(bundle.leaf, LeafSummary::V2(_)));
    let trusted = h.store.signing_keys().await.unwrap();
    for content in [&out, &jpeg] {
        verify_bundle(&bundle, Some(content), Some(&trusted)).unwrap();
    }
    assert!(verify_bundle(&bundle, Some(&out_png), Some(&trusted)).is_err());
    let vkey = signer.verifier().to_string();
    let said = python_verifies(h.dir.path(), &bundle.to_json(), &out, &vkey);
    assert!(said.contains("the archived content"), "{said}");
    let said = python_verifies(h.dir.path(), &bundle.to_json(), &jpeg, &vkey);
    assert!(said.contains("before metadata-removed"), "{said}");
    let resource = h.state(&keys[0]).await.unwrap().resource.unwrap();
    let report = service::verify_against_kis(&h.kis, &resource, (&h.store, &h.sealer.proof_keys()))
        .await
        .unwrap();
    assert!(
        report
            .checks
            .iter()
            .all(|c| c.outcome == CheckOutcome::Pass),
        "{}",
        report.human()
    );
}

/// A rules file whose first rule sends photos of this test to review.
fn review_rules(h: &Harness) -> std::path::PathBuf {
    let base = std::fs::read_to_string(common::repo().join("mappings/rules.toml")).unwrap();
    let rule = "[[rule]]\nname = \"ward-photos-review\"\ncontent = [\"image/*\"]\n\
                relevant = true\ndocument_type = \"wound-photo\"\nreview_before_archive = true\n\n";
    let path = h.dir.path().join("rules.toml");
    std::fs::write(&path, format!("{rule}{base}")).unwrap();
    path
}

fn cli(h: &Harness, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chartbridge"))
        .arg("--config")
        .arg(h.config_file())
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_holds_then_archives_only_the_redacted_rendering() {
    let mut h = Harness::new(None, None).await;
    h.seed_patient("P-1001").await;
    let rules = review_rules(&h);
    let text = std::fs::read_to_string(h.config_file()).unwrap().replace(
        &common::repo()
            .join("mappings/rules.toml")
            .display()
            .to_string(),
        &rules.display().to_string(),
    );
    std::fs::write(h.config_file(), &text).unwrap();
    h.config = chartbridge::config::Config::from_parts(h.config_file(), &text, std::iter::empty())
        .unwrap();
    let jpeg = photos::jpeg();
    let (payload, key) = event(&h, "$review", "image/jpeg", &jpeg);
    let worker = h.start_worker();
    h.publish(&payload).await;
    let held = h.wait_state(&key, MessageState::Quarantined).await;
    worker.stop().await;
    assert_eq!(held.reason, "review_redaction");
    assert!(h.kis_ids("DocumentReference", &key).await.is_empty());

    let list = String::from_utf8(cli(&h, &["quarantine", "list"]).stdout).unwrap();
    let line = list
        .lines()
        .find(|l| l.contains("review_redaction"))
        .unwrap_or_else(|| panic!("{list}"));
    let id = line.split_whitespace().next().unwrap().to_owned();
    let view = h.dir.path().join("view.jpg");
    let out = cli(
        &h,
        &["quarantine", "view", &id, "--out", view.to_str().unwrap()],
    );
    assert!(out.status.success(), "{out:?}");
    let seen = std::fs::read(&view).unwrap();
    assert_eq!(photos::displayed(&seen), photos::displayed(&jpeg));
    // A rectangle outside the image is refused and nothing is recorded.
    let out = cli(
        &h,
        &[
            "quarantine",
            "redact",
            &id,
            "--rect",
            "60,0,10,10",
            "--by",
            "rev",
        ],
    );
    assert!(!out.status.success());
    assert_eq!(
        h.state(&key).await.unwrap().state,
        MessageState::Quarantined
    );

    // Black out the red quadrant (as displayed: top-left 32×24).
    let out = cli(
        &h,
        &[
            "quarantine",
            "redact",
            &id,
            "--rect",
            "0,0,32,24",
            "--by",
            "reviewer-1",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let redacted = archived(&h, &key).await;
    let shown = photos::displayed(&redacted);
    let original = photos::displayed(&jpeg);
    assert_eq!(shown.dimensions(), (64, 48));
    for (x, y, p) in shown.enumerate_pixels() {
        let o = original.get_pixel(x, y);
        if x < 32 && y < 24 {
            assert!(p.0.iter().all(|&c| c <= 8), "({x},{y}) {p:?} not black");
        } else if x >= 40 || y >= 32 {
            // JPEG re-encoding tolerance, away from the blacked-out blocks.
            let d =
                p.0.iter()
                    .zip(o.0)
                    .map(|(a, b)| a.abs_diff(b))
                    .max()
                    .unwrap();
            assert!(d <= 40, "({x},{y}) {p:?} vs {o:?}");
        }
    }
    // No metadata at all, and the original's hash recorded as the source.
    let parsed = img_parts::jpeg::Jpeg::from_bytes(redacted.clone().into()).unwrap();
    assert!(parsed.exif().is_none());
    let (received, transformation, archived_sha) = derivation(&h, &key).await;
    assert_eq!(received, hex::encode(sha256(&jpeg)));
    assert_eq!(transformation, "redacted");
    assert_eq!(archived_sha, hex::encode(sha256(&redacted)));
    check_leaf(&h, &key, &redacted, &jpeg, "redacted").await;
    // The held original is gone from the store.
    let (_, event, detail) = h.store.quarantine_detail(&key).await.unwrap().unwrap();
    assert!(event.is_empty() && detail.is_none());
}
