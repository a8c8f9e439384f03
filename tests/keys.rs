//! At-rest key management against real SQLite and PostgreSQL: blobs bound
//! to their row, `keys rotate-at-rest` resumable after a crash, the audit
//! trail of the commands and its hash chain (docs/key-management.md,
//! docs/audit-trail.md).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chartbridge::app::rotate::{RotateOptions, rotate_at_rest};
use chartbridge::event::MessageKey;
use chartbridge::seal::Sealer;
use chartbridge::store::sealed::{self, COLUMNS};
use chartbridge::store::{Store, millis};

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
    key_file: PathBuf,
    url: String,
}

/// A configuration with the store at SQLite (`postgres = false`) or a
/// fresh PostgreSQL database, and a version-1 key file (bare base64).
async fn env(postgres: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("at-rest.key");
    let key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    chmod(&key_file, 0o600);
    let url = if postgres {
        common::fresh_postgres_database("chartbridge_k").await
    } else {
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("state.db").display()
        )
    };
    let config = dir.path().join("chartbridge.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nurl = \"amqp://127.0.0.1:1\"\n[store]\nurl = \"{url}\"\nkey_file = \"{}\"\n\
             [kis]\nbase_url = \"http://127.0.0.1:1/fhir\"\n[mappings]\nrules_file = \"{}\"\n",
            key_file.display(),
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("mappings/rules.toml")
                .display()
        ),
    )
    .unwrap();
    Env {
        dir,
        config,
        key_file,
        url,
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn cli(e: &Env, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chartbridge"))
        .arg("--config")
        .arg(&e.config)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn key(i: usize) -> MessageKey {
    MessageKey {
        source: "whatsapp".into(),
        message_id: format!("wamid.HBgM49170000{i:04}"),
    }
}

/// `n` quarantined messages with event and detail sealed.
async fn quarantine(store: &Store, sealer: &Sealer, n: usize) {
    for i in 0..n {
        let event = format!("{{\"text\":\"Befund {i}\"}}");
        assert!(
            store
                .record_quarantine(
                    &key(i),
                    "unknown_patient",
                    &sealer.seal(event.as_bytes()),
                    Some(&sealer.seal(b"detail")),
                    millis(chrono::Utc::now()),
                )
                .await
                .unwrap()
        );
    }
}

/// A version-1 blob (`0x01 || nonce || ciphertext`, raw key, no binding).
fn v1_blob(raw: [u8; 32], plain: &[u8]) -> Vec<u8> {
    let nonce = [3u8; 12];
    let mut out = vec![1u8];
    out.extend_from_slice(&nonce);
    out.extend(
        chacha20poly1305::ChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&raw))
            .encrypt(chacha20poly1305::Nonce::from_slice(&nonce), plain)
            .unwrap(),
    );
    out
}

async fn quarantined_blob(
    store: &Store,
    k: &(impl chartbridge::store::RowKey + ?Sized),
) -> Vec<u8> {
    store.quarantine_detail(k).await.unwrap().unwrap().1
}

async fn swapped_blobs_fail_naming_the_row(postgres: bool) {
    let e = env(postgres).await;
    let sealer = Sealer::load(&e.key_file).unwrap();
    let store = Store::open(&e.url, 2, &sealer).await.unwrap();
    quarantine(&store, &sealer, 2).await;
    let (a, b) = (key(0), key(1));
    let (blob_a, blob_b) = (
        quarantined_blob(&store, &a).await,
        quarantined_blob(&store, &b).await,
    );
    let (a, b) = (
        store.message_ref(&a).unwrap(),
        store.message_ref(&b).unwrap(),
    );
    assert!(sealer.open(&sealed::quarantine_event(&a), &blob_a).is_ok());
    for (k, blob) in [(&a, &blob_b), (&b, &blob_a)] {
        sqlx::query("UPDATE quarantine SET sealed_event = $1 WHERE message_token = $2")
            .bind(blob.clone())
            .bind(&k.token)
            .execute(store.pool())
            .await
            .unwrap();
    }
    let swapped = quarantined_blob(&store, &b).await;
    let err = sealer
        .open(&sealed::quarantine_event(&b), &swapped)
        .unwrap_err()
        .to_string();
    let id_b = chartbridge::quarantine::item_id(&sealer, &b);
    assert_eq!(
        err,
        format!(
            "sealed data in quarantine.sealed_event of whatsapp item {id_b} does not open: \
             it belongs to another row or column, or it is damaged"
        )
    );
    // The operator sees the same through `quarantine release`, which is
    // recorded in the audit trail before it runs.
    let out = cli(&e, &["quarantine", "release", &id_b]);
    assert!(!out.status.success(), "{out:?}");
    let text = stderr(&out);
    assert!(
        text.contains(&format!(
            "quarantine.sealed_event of whatsapp item {id_b} does not open"
        )),
        "{text}"
    );
    assert!(!text.contains("wamid"), "{text}");
    let rows = store.audit_trail().await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].action, "quarantine.release");
    assert_eq!(rows[0].target, format!("item {id_b}"));
    store.close().await;
}

#[tokio::test]
async fn swapped_sealed_blobs_do_not_open_sqlite() {
    swapped_blobs_fail_naming_the_row(false).await;
}

#[tokio::test]
async fn swapped_sealed_blobs_do_not_open_postgres() {
    swapped_blobs_fail_naming_the_row(true).await;
}

/// Every sealed blob of the store: (place description, key id, opens?).
async fn every_blob(store: &Store, sealer: &Sealer) -> Vec<(String, Option<String>, bool)> {
    let mut out = Vec::new();
    for c in COLUMNS {
        let sql = format!(
            "SELECT {}, {} FROM {} WHERE {} IS NOT NULL AND length({}) > 0",
            c.keys.join(", "),
            c.column,
            c.table,
            c.column,
            c.column
        );
        for r in sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(store.pool())
            .await
            .unwrap()
        {
            use sqlx::Row;
            let ids: Vec<String> = (0..c.keys.len()).map(|i| r.get(i)).collect();
            let blob: Vec<u8> = r.get(c.keys.len());
            let place = (c.place)(&ids);
            out.push((
                place.describe(sealer),
                Sealer::key_id_of(&blob).map(|k| k.to_string()),
                sealer.open(&place, &blob).is_ok(),
            ));
        }
    }
    out
}

async fn rotation_resumes_after_a_crash(postgres: bool) {
    let e = env(postgres).await;
    let old = Sealer::load(&e.key_file).unwrap();
    let store = Store::open(&e.url, 2, &old).await.unwrap();
    let token_before = old.token(&["whatsapp", "4917000000"]);
    quarantine(&store, &old, 15).await;
    // Three events as version 1 sealed them.
    for i in 0..3 {
        sqlx::query("UPDATE quarantine SET sealed_event = $1 WHERE message_token = $2")
            .bind(v1_blob([42; 32], b"{\"text\":\"alt\"}"))
            .bind(store.message_ref(&key(i)).unwrap().token)
            .execute(store.pool())
            .await
            .unwrap();
    }
    let options = |stop| RotateOptions {
        batch_size: 4,
        progress: false,
        stop_after_batches: stop,
    };
    // 30 blobs; the "crash" comes after 3 batches of 4.
    let first = rotate_at_rest(&e.key_file, &store, &options(Some(3)))
        .await
        .unwrap();
    assert!(!first.finished && !first.resumed);
    assert_eq!(first.resealed, 12);
    let mid = Sealer::load(&e.key_file).unwrap();
    assert_eq!(mid.current_key_id().to_string(), first.key_id);
    let blobs = every_blob(&store, &mid).await;
    assert_eq!(blobs.len(), 30);
    assert!(blobs.iter().all(|(_, _, opens)| *opens), "{blobs:?}");
    let under_new = blobs
        .iter()
        .filter(|(_, k, _)| k.as_deref() == Some(first.key_id.as_str()))
        .count();
    assert_eq!(under_new, 12);

    let second = rotate_at_rest(&e.key_file, &store, &options(None))
        .await
        .unwrap();
    assert!(second.finished && second.resumed, "{second:?}");
    assert_eq!(second.key_id, first.key_id, "no second new key");
    assert_eq!(second.resealed, 18);
    let new = Sealer::load(&e.key_file).unwrap();
    assert_eq!(new.key_ids().len(), 2);
    let blobs = every_blob(&store, &new).await;
    assert_eq!(blobs.len(), 30);
    for (place, key_id, opens) in &blobs {
        assert!(opens, "{place}");
        assert_eq!(key_id.as_deref(), Some(first.key_id.as_str()), "{place}");
    }
    assert_eq!(
        store.stale_blob_count(new.current_key_id()).await.unwrap(),
        0
    );
    // Lookup tokens and derived keys do not rotate.
    assert_eq!(new.token(&["whatsapp", "4917000000"]), token_before);
    assert_eq!(new.derive("x/v1"), old.derive("x/v1"));
    // The keyring the old worker held cannot open the new blobs.
    let (place, _, _) = &blobs[0];
    assert!(
        !every_blob(&store, &old).await.iter().any(|(_, _, o)| *o),
        "{place}"
    );

    // The next run is a new rotation.
    let third = rotate_at_rest(&e.key_file, &store, &options(None))
        .await
        .unwrap();
    assert!(third.finished && !third.resumed);
    assert_ne!(third.key_id, first.key_id);
    assert_eq!(third.resealed, 30);
    store.close().await;
}

#[tokio::test]
async fn rotate_at_rest_resumes_after_a_crash_sqlite() {
    rotation_resumes_after_a_crash(false).await;
}

#[tokio::test]
async fn rotate_at_rest_resumes_after_a_crash_postgres() {
    rotation_resumes_after_a_crash(true).await;
}

#[tokio::test]
async fn cli_rotate_at_rest_stopped_then_rerun_and_audited() {
    let e = env(false).await;
    let sealer = Sealer::load(&e.key_file).unwrap();
    let store = Store::open(&e.url, 2, &sealer).await.unwrap();
    quarantine(&store, &sealer, 6).await;
    let out = cli(
        &e,
        &[
            "keys",
            "rotate-at-rest",
            "--batch-size",
            "2",
            "--stop-after-batches",
            "2",
            "--reason",
            "annual rotation",
        ],
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("run the command again to resume"),
        "{}",
        stderr(&out)
    );
    let out = cli(&e, &["keys", "rotate-at-rest", "--batch-size", "2"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("rotation finished"),
        "{}",
        stderr(&out)
    );
    let sealer = Sealer::load(&e.key_file).unwrap();
    let blobs = every_blob(&store, &sealer).await;
    // 12 quarantine blobs and the first audit row's reason.
    assert_eq!(blobs.len(), 13, "{blobs:?}");
    let current = sealer.current_key_id().to_string();
    assert!(
        blobs
            .iter()
            .all(|(_, k, o)| *o && k.as_deref() == Some(current.as_str())),
        "{blobs:?}"
    );
    let rows = store.audit_trail().await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.action == "at-rest-key.rotate"));
    let out = cli(&e, &["audit-trail", "--reasons"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("why: annual rotation"), "{listing}");
    let out = cli(&e, &["audit-trail", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    store.close().await;
}

#[tokio::test]
async fn key_files_open_to_group_or_others_are_refused() {
    let e = env(false).await;
    chmod(&e.key_file, 0o640);
    let out = cli(&e, &["quarantine", "list"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("has mode 640: group or others may access it"),
        "{}",
        stderr(&out)
    );
    drop(e.dir);
}

async fn audit_chain_detects_a_deleted_row(postgres: bool) {
    let e = env(postgres).await;
    let sealer = Sealer::load(&e.key_file).unwrap();
    let store = Store::open(&e.url, 2, &sealer).await.unwrap();
    let config = chartbridge::config::Config::load(&e.config).unwrap();
    // A worker start records its configuration once, and again on change.
    use chartbridge::app::audit::record_config_change;
    assert!(
        record_config_change(&store, &sealer, &config)
            .await
            .unwrap()
    );
    assert!(
        !record_config_change(&store, &sealer, &config)
            .await
            .unwrap()
    );
    let mut changed = config.clone();
    changed.pipeline.concurrency += 1;
    assert!(
        record_config_change(&store, &sealer, &changed)
            .await
            .unwrap()
    );
    let rows = store.audit_trail().await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.action == "config.change"
        && r.target.starts_with("config sha256:")
        && r.actor.starts_with("os:")));
    // Revoking a signing key is recorded with its why, sealed.
    let out = cli(
        &e,
        &[
            "keys",
            "revoke",
            "--key-id",
            "0badc0de",
            "--reason",
            "laptop lost",
        ],
    );
    assert!(!out.status.success(), "no such key: {out:?}");
    let rows = store.audit_trail().await.unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2].action, "signing-key.revoke");
    assert_eq!(rows[2].target, "signing-key 0badc0de");
    let raw: Vec<u8> = sqlx::query_scalar("SELECT sealed_reason FROM audit_trail WHERE seq = 3")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("laptop"));
    let out = cli(&e, &["audit-trail", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = cli(&e, &["audit-trail", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);
    assert_eq!(json[2]["reason"], "(sealed)");

    // The table refuses deletes and edits; an administrator who drops
    // that guard and deletes a row is caught by the chain.
    for sql in [
        "DELETE FROM audit_trail WHERE seq = 2",
        "UPDATE audit_trail SET actor = 'os:nobody' WHERE seq = 2",
    ] {
        let err = sqlx::query(sql).execute(store.pool()).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }
    let drop = if postgres {
        "DROP TRIGGER audit_trail_append_only ON audit_trail"
    } else {
        "DROP TRIGGER audit_trail_no_delete"
    };
    sqlx::query(drop).execute(store.pool()).await.unwrap();
    sqlx::query("DELETE FROM audit_trail WHERE seq = 2")
        .execute(store.pool())
        .await
        .unwrap();
    let out = cli(&e, &["audit-trail", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("audit trail gap: rows 2..=2 are missing (deleted)"),
        "{}",
        stderr(&out)
    );
    store.close().await;
}

#[tokio::test]
async fn audit_trail_verify_names_a_deleted_row_sqlite() {
    audit_chain_detects_a_deleted_row(false).await;
}

#[tokio::test]
async fn audit_trail_verify_names_a_deleted_row_postgres() {
    audit_chain_detects_a_deleted_row(true).await;
}
