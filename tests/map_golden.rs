//! Golden tests of `chartbridge map`: the Bundle each fixture becomes,
//! compared with `fixtures/expected/<name>.bundle.json`, and the real FHIR
//! server's validator accepting every golden Bundle.
//!
//! After an intended mapping change, regenerate and review the diff:
//! `UPDATE_EXPECT=1 cargo test --test map_golden`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use chartbridge::app::offline_map;
use chartbridge::classify::Rules;
use chartbridge::config::Config;
use chartbridge::map::MapSettings;
use chrono::{DateTime, TimeZone, Utc};
use common::{Harness, fhir_url, repo};
use serde_json::{Value, json};

const NOW: &str = "2026-11-28T10:00:00Z";
const PATIENT: &str = "Patient/example";
const LITERAL_PATIENT: &str = "Patient/example-literal";
const LITERAL_ENCOUNTER: &str = "Encounter/example-literal";

/// A minimal configuration: everything the mapping reads is a default.
const MINIMAL: &str = r#"
[broker]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
[store]
key_file = "k"
[kis]
base_url = "http://127.0.0.1:8090"
"#;

/// What a fixture must give offline.
enum Want {
    /// The golden file `fixtures/expected/<name>.bundle.json`.
    Golden(&'static str),
    /// An error naming the message and this text.
    Error(&'static str, &'static str),
}

/// `(fixture, --patient, expectation)`; every file in `fixtures/events/`
/// appears at least once.
fn cases() -> Vec<(&'static str, Option<&'static str>, Want)> {
    vec![
        (
            "text-canonical",
            Some(PATIENT),
            Want::Golden("text-canonical"),
        ),
        (
            "text-canonical",
            None,
            Want::Error(
                "matrix:$msg-0001",
                "relevant, but no literal patient (give --patient)",
            ),
        ),
        (
            "image-canonical",
            Some(PATIENT),
            Want::Golden("image-canonical"),
        ),
        // `--patient` links the conversation: its text is archived...
        ("team-chat", Some(PATIENT), Want::Golden("team-chat")),
        // ...while unlinked team chatter is not relevant: the decision, no Bundle.
        ("team-chat", None, Want::Golden("team-chat-unlinked")),
        // The text would map, but the image is a media id: no IO offline.
        (
            "whatsapp-text-image",
            Some(PATIENT),
            Want::Error(
                "whatsapp:wamid.HBgLNDkxNTExMjM0NTY3OBUCABIYFDNBMDA2",
                "offline mapping needs inline media",
            ),
        ),
    ]
}

fn now() -> DateTime<Utc> {
    let t = Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap();
    assert_eq!(t, DateTime::parse_from_rfc3339(NOW).unwrap());
    t
}

fn config() -> Config {
    Config::from_parts(Path::new("minimal.toml"), MINIMAL, std::iter::empty()).unwrap()
}

fn rules() -> Rules {
    Rules::load(&repo().join("mappings/rules.toml")).unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo().join(format!("fixtures/events/{name}.json"))).unwrap()
}

/// What `chartbridge map` prints: one Bundle, or an array for several messages.
fn map(payload: &[u8], patient: Option<&str>) -> Result<Value, String> {
    let settings = MapSettings::from(&config().kis);
    let mut out = offline_map(payload, &rules(), &settings, patient, now())?;
    Ok(if out.len() == 1 {
        out.remove(0)
    } else {
        Value::Array(out)
    })
}

fn expected_path(name: &str) -> PathBuf {
    repo().join(format!("fixtures/expected/{name}.bundle.json"))
}

/// Compares `actual` with the golden file of `name`; with `UPDATE_EXPECT=1`
/// rewrites the golden file instead.
fn check(name: &str, actual: &Value) {
    let path = expected_path(name);
    if std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
        eprintln!("updated {}", path.display());
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; create it with UPDATE_EXPECT=1",
            path.display()
        )
    });
    let expected: Value = serde_json::from_str(&text).unwrap();
    if &expected != actual {
        let mut diffs = Vec::new();
        diff("$", &expected, actual, &mut diffs);
        panic!(
            "{name}: the mapping differs from {}\n{}\n\
             (if the change is intended: UPDATE_EXPECT=1 cargo test --test map_golden, then review the diff)",
            path.display(),
            diffs.join("\n")
        );
    }
}

/// One line per differing JSON path: `path: expected X, got Y`.
fn diff(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let p = format!("{path}.{k}");
                match a.get(k) {
                    Some(av) => diff(&p, ev, av, out),
                    None => out.push(format!("{p}: expected {ev}, missing")),
                }
            }
            for (k, av) in a {
                if !e.contains_key(k) {
                    out.push(format!("{path}.{k}: unexpected {av}"));
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            for i in 0..e.len().max(a.len()) {
                let p = format!("{path}[{i}]");
                match (e.get(i), a.get(i)) {
                    (Some(ev), Some(av)) => diff(&p, ev, av, out),
                    (Some(ev), None) => out.push(format!("{p}: expected {ev}, missing")),
                    (None, Some(av)) => out.push(format!("{p}: unexpected {av}")),
                    (None, None) => unreachable!(),
                }
            }
        }
        _ if expected != actual => out.push(format!("{path}: expected {expected}, got {actual}")),
        _ => {}
    }
}

/// Every golden file that holds a transaction Bundle.
fn golden_bundles() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(repo().join("fixtures/expected")).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(name) = name.strip_suffix(".bundle.json") else {
            continue;
        };
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if v["resourceType"] == "Bundle" {
            out.push((name.to_owned(), v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn i10_map_fixtures_match_golden_bundles() {
    let mut listed: Vec<String> = std::fs::read_dir(repo().join("fixtures/events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    let cases = cases();
    let mut covered: Vec<String> = cases.iter().map(|c| c.0.to_owned()).collect();
    covered.sort();
    covered.dedup();
    assert_eq!(
        listed, covered,
        "a fixture without a case (add it to cases())"
    );
    for (fixture_name, patient, want) in &cases {
        let got = map(&fixture(fixture_name), *patient);
        match want {
            Want::Golden(golden) => check(
                golden,
                &got.unwrap_or_else(|e| panic!("{fixture_name}: {e}")),
            ),
            Want::Error(key, text) => {
                let e = got.expect_err(fixture_name);
                assert!(e.contains(key) && e.contains(text), "{fixture_name}: {e}");
            }
        }
    }
    // The unlinked team chat is a decision with its retention, not a Bundle.
    let unlinked = map(&fixture("team-chat"), None).unwrap();
    assert_eq!(unlinked["decision"], "not-relevant");
}

#[test]
fn i10_map_literal_case_references_become_subject_and_encounter() {
    // With literal references the event itself names patient and encounter:
    // no `--patient` needed, and the resource carries the encounter.
    for name in ["text-canonical", "image-canonical"] {
        let mut v: Value = serde_json::from_slice(&fixture(name)).unwrap();
        v["case"] = json!({
            "patient": {"reference": LITERAL_PATIENT},
            "encounter": {"reference": LITERAL_ENCOUNTER}
        });
        let got = map(&serde_json::to_vec(&v).unwrap(), None).unwrap();
        let golden = format!("{}-literal-case", name.trim_end_matches("-canonical"));
        check(&golden, &got);
    }
}

#[test]
fn i10_map_cli_prints_the_golden_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chartbridge.toml");
    std::fs::write(
        &config,
        format!(
            "{MINIMAL}[mappings]\nrules_file = \"{}\"\n",
            repo().join("mappings/rules.toml").display()
        ),
    )
    .unwrap();
    for name in ["text-canonical", "image-canonical"] {
        let out = Command::new(env!("CARGO_BIN_EXE_chartbridge"))
            .arg("map")
            .arg(repo().join(format!("fixtures/events/{name}.json")))
            .args(["--now", NOW, "--patient", PATIENT, "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .env_remove("CHARTBRIDGE_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
        check(name, &printed);
    }

    // Media by reference: a clear error and a failing exit status.
    let out = Command::new(env!("CARGO_BIN_EXE_chartbridge"))
        .arg("map")
        .arg(repo().join("fixtures/events/whatsapp-text-image.json"))
        .args(["--now", NOW, "--patient", PATIENT, "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("offline mapping needs inline media"),
        "{stderr}"
    );
}

/// Gives a golden Bundle fresh identities: new UUIDs for every stable id,
/// a run suffix on every message identifier, and the references of `refs`
/// (quoted JSON strings) replaced.
fn fresh_copy(bundle: &Value, run: &str, refs: &[(&str, &str)]) -> Value {
    let system = config().kis.identifier_system;
    let mut uuids = Vec::new();
    let mut messages = Vec::new();
    for e in bundle["entry"].as_array().unwrap() {
        if let Some(u) = e["fullUrl"]
            .as_str()
            .and_then(|u| u.strip_prefix("urn:uuid:"))
        {
            uuids.push(u.to_owned());
        }
        let r = &e["resource"];
        if let Some(id) = r["id"].as_str() {
            uuids.push(id.to_owned());
        }
        if let Some(u) = r["masterIdentifier"]["value"]
            .as_str()
            .and_then(|u| u.strip_prefix("urn:uuid:"))
        {
            uuids.push(u.to_owned());
        }
        for i in r["identifier"].as_array().into_iter().flatten() {
            if i["system"] == system.as_str() {
                messages.push(i["value"].as_str().unwrap().to_owned());
            }
        }
    }
    assert!(!messages.is_empty(), "no message identifier in {bundle}");
    let mut text = serde_json::to_string(bundle).unwrap();
    for u in uuids {
        assert!(uuid::Uuid::parse_str(&u).is_ok(), "{u}");
        text = text.replace(&u, &uuid::Uuid::new_v4().to_string());
    }
    for m in messages {
        text = text.replace(&format!("\"{m}\""), &format!("\"{m}-{run}\""));
        // The conditional create's query names it too.
        text = text.replace(&format!("|{m}\""), &format!("|{m}-{run}\""));
    }
    for (from, to) in refs {
        text = text.replace(&format!("\"{from}\""), &format!("\"{to}\""));
    }
    let mut out: Value = serde_json::from_str(&text).unwrap();
    // A percent-encoded conditional query (`identifier=system%7Cvalue`)
    // ends with the message's value: the suffix goes there too, so the
    // create never matches a resource of an earlier run on the same server.
    let suffix = format!("-{run}");
    for e in out["entry"].as_array_mut().unwrap() {
        if let Some(q) = e["request"]["ifNoneExist"].as_str()
            && q.starts_with("identifier=")
            && !q.ends_with(&suffix)
        {
            e["request"]["ifNoneExist"] = format!("{q}{suffix}").into();
        }
    }
    assert!(
        !text.contains("Patient/example") && !text.contains("Encounter/example"),
        "left over: {out:#}"
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_golden_bundles_pass_the_fhir_validator() {
    let h = Harness::new(None, None).await;
    let (patient, encounter) = h.seed_patient("P-1001").await;
    let http = reqwest::Client::new();
    let bundles = golden_bundles();
    assert!(
        bundles.len() >= 3,
        "{:?}",
        bundles.iter().map(|b| &b.0).collect::<Vec<_>>()
    );
    for (name, golden) in bundles {
        // Goldens share messages (text-canonical, text-literal-case): a
        // suffix per Bundle keeps every conditional create a create.
        let bundle = fresh_copy(
            &golden,
            &format!("{}-{name}", h.run),
            &[
                (PATIENT, &patient),
                (LITERAL_PATIENT, &patient),
                (LITERAL_ENCOUNTER, &encounter),
            ],
        );
        let answer = http
            .post(fhir_url())
            .header("content-type", "application/fhir+json")
            .header("accept", "application/fhir+json")
            .body(bundle.to_string())
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let body: Value = answer.json().await.unwrap();
        assert_eq!(status.as_u16(), 200, "{name}: {body:#}");
        assert_eq!(body["type"], "transaction-response", "{name}: {body:#}");
        let entries = body["entry"].as_array().unwrap();
        assert_eq!(entries.len(), bundle["entry"].as_array().unwrap().len());
        for (i, e) in entries.iter().enumerate() {
            let s = e["response"]["status"].as_str().unwrap_or_default();
            // Fresh identities: everything is created, nothing matched.
            assert!(s.starts_with("201"), "{name} entry {i}: {e:#}");
        }
        // The primary resource reads back with the seeded patient.
        let primary = entries
            .iter()
            .filter_map(|e| e["response"]["location"].as_str())
            .find(|l| l.starts_with("Communication/") || l.starts_with("DocumentReference/"))
            .unwrap();
        let id: String = primary.split('/').take(2).collect::<Vec<_>>().join("/");
        let read = h.kis.read(&id).await.unwrap();
        assert_eq!(read["subject"]["reference"], patient.as_str(), "{name}");
    }
}
