//! The bad-input corpus (`fixtures/bad/`, manifest `fixtures/bad/cases.toml`)
//! end to end: every case is published to the real RabbitMQ, the worker runs
//! against the real FHIR server, and each case must reach its expected
//! outcome with its reason code: the dead-letter header, the quarantine
//! record in the store, the rule, or exactly one archive. The table in
//! `docs/bad-input.md` is checked against the manifest.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chartbridge::consume::REASON_HEADER;
use chartbridge::event::MessageKey;
use chartbridge::store::MessageState;
use chartbridge::store::sealed;
use common::standins::{MediaApi, Medium};
use common::{Harness, repo, wait_until};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    case: Vec<Case>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    file: String,
    outcome: String,
    reason: String,
    what: String,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    twice: bool,
}

const OUTCOMES: [&str; 5] = [
    "dead-lettered",
    "quarantined",
    "not-relevant",
    "archived-once",
    "skipped",
];

fn manifest() -> Vec<Case> {
    let text = std::fs::read_to_string(repo().join("fixtures/bad/cases.toml")).unwrap();
    let m: Manifest = toml::from_str(&text).expect("cases.toml parses");
    m.case
}

/// The table in docs/bad-input.md, rendered from the manifest.
fn table(cases: &[Case]) -> String {
    let mut out = String::from("| # | file | input | outcome | reason |\n|---|---|---|---|---|\n");
    for (i, c) in cases.iter().enumerate() {
        let reason = if c.reason.is_empty() {
            "—".to_owned()
        } else {
            format!("`{}`", c.reason)
        };
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} |\n",
            i + 1,
            c.file,
            c.what.replace('|', "\\|"),
            c.outcome,
            reason
        ));
    }
    out
}

const BEGIN: &str = "<!-- cases:begin (generated from fixtures/bad/cases.toml) -->\n";
const END: &str = "<!-- cases:end -->";

#[test]
fn i12_bad_input_manifest_and_docs_agree() {
    let cases = manifest();
    assert!(cases.len() >= 50, "the corpus has {} cases", cases.len());
    let listed: BTreeSet<&str> = cases.iter().map(|c| c.file.as_str()).collect();
    assert_eq!(listed.len(), cases.len(), "a file is listed twice");
    let on_disk: BTreeSet<String> = std::fs::read_dir(repo().join("fixtures/bad"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f != "cases.toml")
        .collect();
    assert_eq!(
        on_disk,
        listed.iter().map(|s| s.to_string()).collect(),
        "fixtures/bad/ and cases.toml list different files"
    );
    for c in &cases {
        assert!(
            OUTCOMES.contains(&c.outcome.as_str()),
            "{}: outcome",
            c.file
        );
        let needs_keys = !matches!(c.outcome.as_str(), "dead-lettered" | "skipped");
        assert_eq!(!c.keys.is_empty(), needs_keys, "{}: keys", c.file);
        let needs_reason = matches!(
            c.outcome.as_str(),
            "dead-lettered" | "quarantined" | "not-relevant"
        );
        assert_eq!(!c.reason.is_empty(), needs_reason, "{}: reason", c.file);
        if let Some(a) = &c.after {
            assert!(listed.contains(a.as_str()), "{}: after {a}", c.file);
        }
    }
    let doc_path = repo().join("docs/bad-input.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let start = doc
        .find(BEGIN)
        .expect("docs/bad-input.md has the cases marker")
        + BEGIN.len();
    let end = doc.find(END).expect("docs/bad-input.md has the end marker");
    let want = table(&cases);
    if doc[start..end] != want {
        if std::env::var_os("CHARTBRIDGE_BLESS").is_some() {
            std::fs::write(&doc_path, format!("{}{want}{}", &doc[..start], &doc[end..])).unwrap();
        } else {
            panic!(
                "docs/bad-input.md is out of date with fixtures/bad/cases.toml; \
                 rerun with CHARTBRIDGE_BLESS=1 to rewrite the table"
            );
        }
    }
}

/// The run suffix on message and event ids, where they are strings (cases
/// whose ids are broken on purpose are published verbatim anyway).
fn uniquify(h: &Harness, v: &mut Value) {
    let suffix = format!("-{}", h.run);
    // Only usable ids get the suffix: an entry with an unusable one is held
    // under a digest of the entry as published.
    let push = |v: &mut Value| {
        if let Some(s) = v.as_str().filter(|s| chartbridge::event::is_message_id(s)) {
            *v = Value::String(format!("{s}{suffix}"));
        }
    };
    if v.get("schema").is_some() {
        push(&mut v["message_id"]);
        push(&mut v["event_id"]);
    } else if let Some(entries) = v.get_mut("entry").and_then(Value::as_array_mut) {
        for e in entries {
            for c in e["changes"].as_array_mut().into_iter().flatten() {
                for m in c["value"]["messages"].as_array_mut().into_iter().flatten() {
                    if let Some(id) = m.get_mut("id") {
                        push(id);
                    }
                }
            }
        }
    } else if v.get("room_id").is_some() {
        push(&mut v["event_id"]);
    }
}

fn payload(h: &Harness, c: &Case) -> Vec<u8> {
    let raw = std::fs::read(repo().join("fixtures/bad").join(&c.file)).unwrap();
    if matches!(c.outcome.as_str(), "dead-lettered" | "skipped") {
        return raw;
    }
    let mut v: Value = serde_json::from_slice(&raw).unwrap();
    uniquify(h, &mut v);
    serde_json::to_vec(&v).unwrap()
}

fn key(h: &Harness, k: &str) -> MessageKey {
    let (source, id) = k.split_once(':').unwrap();
    if id.starts_with("entry-") {
        // A held entry's digest key: the entry is published unchanged.
        return MessageKey {
            source: source.into(),
            message_id: id.into(),
        };
    }
    h.key(source, id)
}

fn header(m: &lapin::message::BasicGetMessage) -> String {
    let headers = m.delivery.properties.headers().clone().unwrap_or_default();
    match headers.inner().get(REASON_HEADER) {
        Some(lapin::types::AMQPValue::LongString(s)) => {
            String::from_utf8_lossy(s.as_bytes()).into_owned()
        }
        other => panic!("reason header {other:?}"),
    }
}

/// Has `c` reached a terminal state (for cases with keys)?
async fn settled(h: &Harness, c: &Case) -> bool {
    for k in &c.keys {
        if h.state(&key(h, k)).await.is_none() {
            return false;
        }
        if c.outcome == "quarantined"
            && c.reason == "duplicate_id_conflict"
            && h.store.conflicts(&key(h, k)).await.unwrap().is_empty()
        {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i12_every_bad_input_reaches_its_outcome() {
    let cases = manifest();
    let png = std::fs::read(repo().join("fixtures/media/wound.png")).unwrap();
    let media = MediaApi::start().await;
    let mut tampered = png.clone();
    *tampered.last_mut().unwrap() ^= 0xff;
    media.put(
        "bad-tampered",
        Medium {
            bytes: tampered,
            mime_type: "image/png".into(),
        },
    );
    media.put(
        "bad-huge",
        Medium {
            bytes: vec![7; 100_000],
            mime_type: "image/png".into(),
        },
    );
    let mut h = Harness::new(None, Some(&media.url)).await;
    h.config.broker.max_event_bytes = 256 * 1024;
    h.config.media.max_bytes = 64 * 1024;
    let (patient, _) = h.seed_patient("P-1001").await;
    h.store
        .set_link(
            &chartbridge::resolve::conversation_token(
                &h.sealer,
                "whatsapp",
                "106540352242922:4915112345678",
            ),
            &chartbridge::store::Link {
                patient,
                encounter: None,
            },
            0,
        )
        .await
        .unwrap();

    let payloads: BTreeMap<&str, Vec<u8>> = cases
        .iter()
        .map(|c| (c.file.as_str(), payload(&h, c)))
        .collect();
    let worker = h.start_worker();

    // Rounds: a case is published once the case it comes after has settled.
    let mut published: BTreeSet<&str> = BTreeSet::new();
    while published.len() < cases.len() {
        let mut round = Vec::new();
        for c in &cases {
            if published.contains(c.file.as_str()) {
                continue;
            }
            if let Some(a) = &c.after
                && !published.contains(a.as_str())
            {
                continue;
            }
            round.push(c);
        }
        assert!(!round.is_empty(), "cyclic 'after' in cases.toml");
        for c in &round {
            h.publish(&payloads[c.file.as_str()]).await;
            if c.twice {
                h.publish(&payloads[c.file.as_str()]).await;
            }
        }
        for c in &round {
            wait_until(Duration::from_secs(90), &c.file, || settled(&h, c)).await;
            published.insert(c.file.as_str());
        }
    }

    // Dead letters, matched to their cases by payload.
    let expected_dead: Vec<&Case> = cases
        .iter()
        .filter(|c| c.outcome == "dead-lettered")
        .collect();
    let mut dead: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while dead.values().map(Vec::len).sum::<usize>() < expected_dead.len() {
        if tokio::time::Instant::now() >= deadline {
            let missing: Vec<&str> = expected_dead
                .iter()
                .filter(|c| !dead.contains_key(&payloads[c.file.as_str()]))
                .map(|c| c.file.as_str())
                .collect();
            panic!("timed out waiting for dead letters of {missing:?}");
        }
        for m in h.drain_queue(&h.config.broker.dead_letter_queue).await {
            // The worker seals what it dead-letters.
            let payload = chartbridge::consume::open_dead_letter(
                &h.sealer,
                &m.delivery.properties,
                &m.delivery.data,
            )
            .unwrap();
            dead.entry(payload).or_default().push(header(&m));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let archived: Vec<&Case> = cases
        .iter()
        .filter(|c| c.outcome == "archived-once" && c.after.is_none())
        .collect();
    let deletions = h.expect_deletions(archived.len()).await;
    worker.stop().await;

    let conflicting: BTreeSet<&str> = cases
        .iter()
        .filter(|c| c.reason == "duplicate_id_conflict")
        .flat_map(|c| c.keys.iter().map(String::as_str))
        .collect();
    let mut failures = Vec::new();
    for c in &cases {
        let p = &payloads[c.file.as_str()];
        let got_dead = dead.get(p).cloned().unwrap_or_default();
        let problem = match c.outcome.as_str() {
            "dead-lettered" => {
                (got_dead != [c.reason.clone()]).then(|| format!("dead-lettered with {got_dead:?}"))
            }
            _ if !got_dead.is_empty() => Some(format!("dead-lettered with {got_dead:?}")),
            "skipped" => None,
            outcome => check_keys(&h, c, outcome, &conflicting).await.err(),
        };
        if let Some(p) = problem {
            failures.push(format!("{} (want {} {}): {p}", c.file, c.outcome, c.reason));
        }
    }
    // One deletion per archived message, none for anything else.
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for c in &archived {
        for k in &c.keys {
            wanted.insert(key(&h, k).message_id);
        }
    }
    let got: BTreeSet<String> = deletions.iter().map(|d| d.message_id.clone()).collect();
    if got != wanted {
        failures.push(format!("deletions for {got:?}, want {wanted:?}"));
    }
    let extra = h.deletion_commands().await;
    if !extra.is_empty() {
        failures.push(format!("{} further deletion commands", extra.len()));
    }
    // Everything was acked: nothing is left on the events queue.
    let left = h.drain_queue(&h.config.broker.events_queue).await;
    if !left.is_empty() {
        failures.push(format!("{} deliveries left unacked", left.len()));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

async fn check_keys(
    h: &Harness,
    c: &Case,
    outcome: &str,
    conflicting: &BTreeSet<&str>,
) -> Result<(), String> {
    for k in &c.keys {
        let key = key(h, k);
        let got = h.state(&key).await.ok_or("no terminal state")?;
        let text = c.file.as_str();
        match outcome {
            "quarantined" if c.reason == "duplicate_id_conflict" => {
                // The first content keeps its state; the duplicate is kept sealed.
                let conflicts = h.store.conflicts(&key).await.unwrap();
                if conflicts.len() != 1 {
                    return Err(format!("{} conflicts recorded", conflicts.len()));
                }
                let (digest, blob) = &conflicts[0];
                let event = h
                    .sealer
                    .open(
                        &sealed::conflict(&h.store.message_ref(&key).unwrap(), digest),
                        blob,
                    )
                    .unwrap();
                let event: Value = serde_json::from_slice(&event).unwrap();
                if !event["text"].as_str().unwrap_or("").starts_with("Anderer") {
                    return Err("the conflict record holds other content".into());
                }
                let ids = h.kis_ids("Communication", &key).await;
                let comm = h.kis.read(&ids[0]).await.unwrap();
                if ids.len() != 1
                    || comm["payload"][0]["contentString"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("Anderer"))
                {
                    return Err(format!("KIS holds {ids:?} with replaced content"));
                }
            }
            "quarantined" => {
                if got.state != MessageState::Quarantined || got.reason != c.reason {
                    return Err(format!("{:?} {}", got.state, got.reason));
                }
                if h.store.quarantine_detail(&key).await.unwrap().is_none() {
                    return Err("no sealed quarantine record".into());
                }
                if h.store.deletion_state(&key).await.unwrap().is_some() {
                    return Err("a deletion was queued for quarantined content".into());
                }
            }
            "not-relevant" => {
                if got.state != MessageState::NotRelevant || got.reason != c.reason {
                    return Err(format!("{:?} {}", got.state, got.reason));
                }
            }
            "archived-once" => {
                if got.state != MessageState::Archived {
                    return Err(format!("{:?} {}", got.state, got.reason));
                }
                let primary = got.resource.clone().unwrap_or_default();
                let rtype = primary.split('/').next().unwrap_or_default();
                let ids = h.kis_ids(rtype, &key).await;
                if ids != [primary.clone()] {
                    return Err(format!("KIS holds {ids:?}, ledger {primary}"));
                }
                if h.store.log_leaf(&key).await.unwrap().is_none() {
                    return Err("no proof leaf".into());
                }
                if !conflicting.contains(k.as_str())
                    && !h.store.conflicts(&key).await.unwrap().is_empty()
                {
                    return Err("a redelivery was recorded as a conflict".into());
                }
            }
            other => return Err(format!("{text}: unknown outcome {other}")),
        }
    }
    Ok(())
}
