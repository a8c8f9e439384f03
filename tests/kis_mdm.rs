//! `kis.output = "hl7v2_mdm"`: MDM^T02 over MLLP to a real HL7 v2 receiver
//! (the `hl7` package's MLLP server, `deploy/dev/mllp-peer.sh`). AA archives
//! and releases the deletion; AE/AR quarantine; no answer is retried.
//! Patient resolution still uses the FHIR test server.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use chartbridge::push::OutputMode;
use chartbridge::store::MessageState;
use common::Harness;
use serde_json::Value;
use sha2::Digest;

fn peer() -> (String, PathBuf) {
    let port = std::env::var("CHARTBRIDGE_TEST_MLLP_PORT").unwrap_or_else(|_| "2575".into());
    let dir = std::env::var("CHARTBRIDGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/chartbridge")
        })
        .join("mllp")
        .join(format!("received-{port}"));
    let address = format!("127.0.0.1:{port}");
    assert!(
        std::net::TcpStream::connect(&address).is_ok(),
        "no MLLP peer at {address}: start it with deploy/dev/mllp-peer.sh start"
    );
    (address, dir)
}

async fn mdm_harness() -> (Harness, PathBuf) {
    let (address, dir) = peer();
    let mut h = Harness::new(None, None).await;
    h.config.kis.output = OutputMode::Hl7v2Mdm;
    h.config.kis.mllp.address = address;
    // Long enough that a loaded CI machine never resends an answered message
    // (the peer would then count it twice); the no-ACK test shortens it.
    h.config.kis.mllp.ack_timeout = Duration::from_secs(10);
    (h, dir)
}

/// Waits for `n` deletion commands. (`Harness::expect_deletions` reads each
/// archive back over FHIR, which a v2-only KIS does not offer.)
async fn deletions(h: &Harness, n: usize) -> Vec<chartbridge::delete::DeletionCommand> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < n {
        assert!(tokio::time::Instant::now() < deadline, "deletions in time");
        got.extend(h.deletion_commands().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got
}

fn text_event(h: &Harness, id: &str, text: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&h.fixture("events/text-canonical.json")).unwrap();
    v["message_id"] = format!("{id}-{}", h.run).into();
    v["event_id"] = format!("evt-{id}-{}", h.run).into();
    v["text"] = text.into();
    serde_json::to_vec(&v).unwrap()
}

/// The message the peer received for an archive `MDM/{control id}`, and
/// how often it arrived.
fn received(dir: &std::path::Path, resource: &str) -> (Vec<Vec<String>>, usize) {
    let control = resource.strip_prefix("MDM/").unwrap();
    let text = std::fs::read_to_string(dir.join(format!("{control}.hl7"))).unwrap();
    let count = std::fs::read_to_string(dir.join(format!("{control}.count")))
        .unwrap()
        .len();
    let segments = text
        .split(['\r', '\n'])
        .filter(|s| !s.is_empty())
        .map(|s| s.split('|').map(str::to_owned).collect())
        .collect();
    (segments, count)
}

fn segment<'a>(segments: &'a [Vec<String>], name: &str, nth: usize) -> &'a [String] {
    segments.iter().filter(|s| s[0] == name).nth(nth).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_mdm_t02_over_mllp_archives_text_and_image_after_aa() {
    let (h, dir) = mdm_harness().await;
    let (patient, encounter) = h.seed_patient("P-1001").await;
    let worker = h.start_worker();
    h.publish(&h.fixture("events/text-canonical.json")).await;
    h.publish(&h.fixture("events/image-canonical.json")).await;
    let text = h.key("matrix", "$msg-0001");
    let image = h.key("matrix", "$msg-0002");
    let t = h.wait_state(&text, MessageState::Archived).await;
    let i = h.wait_state(&image, MessageState::Archived).await;
    let cmds = deletions(&h, 2).await;
    assert!(
        cmds.iter()
            .all(|c| c.archive.as_ref().unwrap().resource.starts_with("MDM/"))
    );
    worker.stop().await;

    let (seg, n) = received(&dir, t.resource.as_deref().unwrap());
    assert_eq!(n, 1);
    let msh = segment(&seg, "MSH", 0);
    assert_eq!(msh[8], "MDM^T02^MDM_T02");
    // MSH-n is field n-1 here (MSH-1 is the separator itself): the
    // original acknowledgment mode (MSH-15/16 empty) and the character
    // set in MSH-18.
    assert_eq!((msh[14].as_str(), msh[15].as_str()), ("", ""));
    assert_eq!(msh[16], "");
    assert_eq!(msh[17], "UNICODE UTF-8");
    assert_eq!(
        segment(&seg, "PID", 0)[3],
        format!("{}^^^KIS^PI", &patient["Patient/".len()..])
    );
    assert_eq!(
        segment(&seg, "PV1", 0)[19],
        format!("{}^^^KIS^VN", &encounter["Encounter/".len()..])
    );
    assert_eq!(segment(&seg, "TXA", 0)[3], "TX");
    assert_eq!(
        segment(&seg, "OBX", 0)[5],
        "Wundkontrolle heute: Rötung rückläufig, Verbandwechsel morgen."
    );
    assert_eq!(
        segment(&seg, "OBX", 1)[5],
        t.content_sha256.clone().unwrap()
    );

    let (seg, _) = received(&dir, i.resource.as_deref().unwrap());
    let txa = segment(&seg, "TXA", 0);
    assert!(txa[2].ends_with("^KDL"), "KDL document type: {}", txa[2]);
    assert!(txa[12].starts_with("urn:uuid:"), "unique document number");
    let obx = &segment(&seg, "OBX", 0)[5];
    let parts: Vec<&str> = obx.split('^').collect();
    assert_eq!(parts[1..4], ["IM", "png", "Base64"]);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(parts[4])
        .unwrap();
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&bytes)),
        i.content_sha256.clone().unwrap()
    );
    assert_eq!(segment(&seg, "OBX", 1)[5], i.content_sha256.unwrap());
    // The caption and the file name travel too: the KIS keeps all of it.
    assert_eq!(
        segment(&seg, "OBX", 2)[3..6],
        ["DESCRIPTION^Description^L", "", "Foto der Wunde, Tag 3"]
    );
    assert_eq!(
        segment(&seg, "OBX", 3)[3..6],
        ["FILENAME^File name^L", "", "wound.png"]
    );
    assert_eq!(h.store.log_size().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_mdm_ae_ar_and_ca_quarantine_without_deletion() {
    let (h, _) = mdm_harness().await;
    h.seed_patient("P-1001").await;
    let worker = h.start_worker();
    h.publish(&text_event(&h, "ae", "Befund [peer:AE]")).await;
    h.publish(&text_event(&h, "ar", "Befund [peer:AR]")).await;
    // A commit acknowledgment (an engine queued the message) is not the
    // application's word that it filed the document.
    h.publish(&text_event(&h, "ca", "Befund [peer:CA]")).await;
    for id in ["ae", "ar", "ca"] {
        let key = h.key("matrix", id);
        let got = h.wait_state(&key, MessageState::Quarantined).await;
        assert_eq!(got.reason, "kis_rejected");
        assert_eq!(h.store.deletion_state(&key).await.unwrap(), None);
    }
    worker.stop().await;
    assert!(h.deletion_commands().await.is_empty());
    assert_eq!(h.store.log_size().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_mdm_without_ack_is_retried_with_the_same_control_id() {
    let (mut h, dir) = mdm_harness().await;
    h.config.kis.mllp.ack_timeout = Duration::from_secs(1);
    h.seed_patient("P-1001").await;
    let worker = h.start_worker();
    h.publish(&text_event(&h, "silent", "Befund [peer:silent-once]"))
        .await;
    let key = h.key("matrix", "silent");
    let got = h.wait_state(&key, MessageState::Archived).await;
    deletions(&h, 1).await;
    worker.stop().await;
    let (_, count) = received(&dir, got.resource.as_deref().unwrap());
    assert_eq!(count, 2, "sent twice: no ACK the first time");
}
