//! A store written before migration 0018 (messenger ids in the clear,
//! blobs bound to them) opened with its key file: every id becomes a token,
//! every blob opens at its new place, nothing is left in the clear; on
//! SQLite and PostgreSQL.

use chacha20poly1305::aead::{Aead, KeyInit};
use sqlx::any::install_default_drivers;

use super::super::tests::{both_backends, fresh_postgres_url, test_sealer};
use super::super::*;
use crate::event::MessageKey;
use crate::seal::Place;

const LEGACY_IDS: [&str; 7] = [
    "wamid.LEGACYA",
    "wamid.LEGACYQ",
    "wamid.LEGACYP",
    "$LEGACYT",
    "$LEGACYR",
    "$LEGACYU",
    "@LEGACYBOT",
];

fn key(source: &str, id: &str) -> MessageKey {
    MessageKey {
        source: source.into(),
        message_id: id.into(),
    }
}

/// A database migrated up to 0017, as the previous release left it.
async fn before_0018(backend: Backend) -> (String, Option<tempfile::TempDir>) {
    install_default_drivers();
    let (url, dir) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
            (url, Some(dir))
        }
        Backend::Postgres => (fresh_postgres_url().await, None),
    };
    let name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/store/migrations")
        .join(name);
    let old = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        if file.as_str() < "0018" {
            std::fs::copy(&path, old.path().join(file)).unwrap();
        }
    }
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(old.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let s = test_sealer();
    let seal = |place: Place<'_>, plain: &[u8]| s.seal_at(&place, plain);
    let q = |sql: &'static str| sqlx::query(sql);
    let statements = vec![
        q("INSERT INTO messages (source, message_id, state, reason, content_sha256, resource,
               resources, created_at, updated_at)
           VALUES ('whatsapp', 'wamid.LEGACYA', 'archived', 'linked-text', 'aa',
               'Communication/a', '[\"Communication/a\"]', 1, 1),
                  ('whatsapp', 'wamid.LEGACYQ', 'quarantined', 'unknown_patient', NULL,
               NULL, NULL, 1, 1)"),
        q("UPDATE log_head SET size = 1"),
        q("INSERT INTO log_leaves (leaf_index, source, message_id, leaf_data, leaf_hash, created_at)
           VALUES (0, 'whatsapp', 'wamid.LEGACYA', $1, $2, 1)")
        .bind(b"leaf".to_vec())
        .bind(vec![7u8; 32]),
        q("INSERT INTO deletions (deletion_id, source, message_id, reason, state, sealed_command,
               not_before, created_at)
           VALUES ('del-a', 'whatsapp', 'wamid.LEGACYA', 'archived', 'requested', $1, 0, 1)")
        .bind(seal(sealed::deletion_command("del-a"), b"command")),
        q("INSERT INTO content_digests (source, message_id, digest, created_at)
           VALUES ('whatsapp', 'wamid.LEGACYQ', 'dd', 1)"),
        q("INSERT INTO quarantine (source, message_id, reason, sealed_event, sealed_detail, created_at)
           VALUES ('whatsapp', 'wamid.LEGACYQ', 'unknown_patient', $1, $2, 1)")
        .bind(seal(
            Place::message("quarantine", "sealed_event", "whatsapp", "wamid.LEGACYQ"),
            b"event-q",
        ))
        .bind(seal(
            Place::message("quarantine", "sealed_detail", "whatsapp", "wamid.LEGACYQ"),
            b"detail-q",
        )),
        q("INSERT INTO conflicts (source, message_id, digest, sealed_event, created_at)
           VALUES ('whatsapp', 'wamid.LEGACYQ', 'ee', $1, 1)")
        .bind(seal(
            Place::conflict("conflicts", "sealed_event", "whatsapp", "wamid.LEGACYQ", "ee"),
            b"conflict-q",
        )),
        q("INSERT INTO split_groups (source, group_token, part_count, first_seen, state)
           VALUES ('whatsapp', 'g', 2, 1, 'waiting')"),
        // A version-1 blob: the raw key, no associated data.
        q("INSERT INTO held_parts (source, message_id, group_token, part_index, sealed_event, created_at)
           VALUES ('whatsapp', 'wamid.LEGACYP', 'g', 1, $1, 1)")
        .bind({
            let nonce = [3u8; 12];
            let mut blob = vec![1u8];
            blob.extend_from_slice(&nonce);
            blob.extend(
                chacha20poly1305::ChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(
                    &[1; 32],
                ))
                .encrypt(chacha20poly1305::Nonce::from_slice(&nonce), &b"part-p"[..])
                .unwrap(),
            );
            blob
        }),
        q("INSERT INTO transcript_windows (source, window_token, window_start, window_end, state)
           VALUES ('matrix', 'w', 0, 10, 'open')"),
        q("INSERT INTO transcript_messages (source, message_id, window_token, sent_at, sealed_entry, created_at)
           VALUES ('matrix', '$LEGACYT', 'w', 5, $1, 1)")
        .bind(seal(
            Place::message("transcript_messages", "sealed_entry", "matrix", "$LEGACYT"),
            b"entry-t",
        )),
        q("INSERT INTO source_redactions (source, redaction_id, target_id, state, resource, recorded_at)
           VALUES ('matrix', '$LEGACYR', '$LEGACYT', 'marked', 'Communication/t', 1)"),
        q("INSERT INTO matrix_undecrypted (event_id, sealed_event, state, first_seen_at, last_try_at, tries)
           VALUES ('$LEGACYU', $1, 'awaiting_keys', 1, 1, 1)")
        .bind(seal(
            Place::id("matrix_undecrypted", "sealed_event", "$LEGACYU"),
            b"encrypted-u",
        )),
        q("INSERT INTO source_cursors (source, account, cursor, updated_at)
           VALUES ('matrix', '@LEGACYBOT', 's1', 1)"),
    ];
    for statement in statements {
        statement.execute(&pool).await.unwrap();
    }
    pool.close().await;
    (url, dir)
}

async fn rows_from_before_0018_become_pseudonyms(backend: Backend) {
    let (url, dir) = before_0018(backend).await;
    let s = test_sealer();
    let store = Store::open(&url, 2, &s).await.unwrap();
    let (a, q, p) = (
        key("whatsapp", "wamid.LEGACYA"),
        key("whatsapp", "wamid.LEGACYQ"),
        key("whatsapp", "wamid.LEGACYP"),
    );
    let named = |k: &MessageKey| store.message_ref(k).unwrap();

    // Found by key, as before.
    let m = store.message(&a).await.unwrap().unwrap();
    assert_eq!(
        (m.state, m.resource.as_deref()),
        (MessageState::Archived, Some("Communication/a"))
    );
    assert_eq!(store.log_leaf(&a).await.unwrap().unwrap().index, 0);
    assert_eq!(
        store.deletion_state(&a).await.unwrap(),
        Some(DeletionState::Requested)
    );
    assert_eq!(
        store.message_by_resource("Communication/a").await.unwrap(),
        Some(named(&a))
    );
    assert_eq!(
        store.claim_content(&q, "dd", 2).await.unwrap(),
        Claim::Ours,
        "the first content's claim is found under the token"
    );
    // Blobs open at their new places, bound to the token.
    let entry = store.quarantine_entry(&q).await.unwrap().unwrap();
    assert_eq!(
        s.open(&sealed::quarantine_event(&named(&q)), &entry.sealed_event)
            .unwrap(),
        b"event-q"
    );
    let (_, _, detail) = store.quarantine_detail(&q).await.unwrap().unwrap();
    assert_eq!(
        s.open(&sealed::quarantine_detail(&named(&q)), &detail.unwrap())
            .unwrap(),
        b"detail-q"
    );
    assert_eq!(
        store.quarantine_list().await.unwrap()[0].key,
        named(&q),
        "the item is listed"
    );
    let conflicts = store.conflicts(&q).await.unwrap();
    assert_eq!(
        s.open(&sealed::conflict(&named(&q), "ee"), &conflicts[0].1)
            .unwrap(),
        b"conflict-q"
    );
    assert!(store.is_held(&p).await.unwrap());
    let group = store.held_group("whatsapp", "g").await.unwrap().unwrap();
    let part = &group.parts[0];
    assert_eq!(part.key, named(&p));
    assert_eq!(
        Sealer::key_id_of(&part.sealed_event),
        Some(s.current_key_id()),
        "the version-1 blob is sealed again as version 2"
    );
    assert_eq!(
        s.open(&sealed::held_part(&part.key), &part.sealed_event)
            .unwrap(),
        b"part-p"
    );
    let entries = store.window_entries("matrix", "w").await.unwrap();
    assert_eq!(entries[0].key, named(&key("matrix", "$LEGACYT")));
    assert_eq!(
        s.open(
            &sealed::transcript_entry(&entries[0].key),
            &entries[0].sealed_entry
        )
        .unwrap(),
        b"entry-t"
    );
    let mark = store
        .redaction_mark(&key("matrix", "$LEGACYR"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mark.target, named(&key("matrix", "$LEGACYT")));
    let undecrypted = store.undecrypted().await.unwrap();
    let token = store.undecrypted_token("$LEGACYU").unwrap();
    assert_eq!(undecrypted[0].event_token, token);
    assert_eq!(
        s.open(
            &sealed::undecrypted_event(&token),
            &undecrypted[0].sealed_event
        )
        .unwrap(),
        b"encrypted-u"
    );
    assert_eq!(
        store.source_cursor("matrix", "@LEGACYBOT").await.unwrap(),
        Some("s1".into())
    );
    // Every sealed column opens where `keys rotate-at-rest` looks for it.
    assert_eq!(store.stale_blob_count(s.current_key_id()).await.unwrap(), 0);

    // Nothing in the clear is left, in any table (nor, on SQLite, in the
    // database file and its log).
    for t in store.every_value().await.unwrap() {
        let text = String::from_utf8_lossy(&t.bytes);
        for id in LEGACY_IDS {
            assert!(!text.contains(id), "{id} in {}: {text}", t.table);
        }
        assert!(!text.contains("legacy:"), "{}: {text}", t.table);
    }
    if let Some(dir) = &dir {
        for file in ["t.db", "t.db-wal"] {
            let Ok(raw) = std::fs::read(dir.path().join(file)) else {
                continue;
            };
            let raw = String::from_utf8_lossy(&raw);
            assert!(!raw.contains("LEGACY"), "an id is left in {file}");
        }
    }
    // Converting again finds nothing; a fresh open too.
    assert_eq!(store.pseudonymise_legacy(&s).await.unwrap(), 0);
    store.close().await;
    let again = Store::open(&url, 2, &s).await.unwrap();
    assert!(again.message(&a).await.unwrap().is_some());
    again.close().await;
}

/// A blob whose key is missing stops the conversion, naming its place;
/// the row keeps its marked id, so adding the key and starting again works.
async fn a_blob_that_does_not_open_stops_the_conversion(backend: Backend) {
    let (url, _dir) = before_0018(backend).await;
    let other = crate::seal::Sealer::from_key([9; 32]);
    let err = Store::open(&url, 2, &other).await.unwrap_err().to_string();
    assert!(
        err.contains("quarantine.sealed_event of whatsapp item")
            || err.contains("does not open")
            || err.contains("not in the keyring"),
        "{err}"
    );
    assert!(!err.contains("LEGACY"), "{err}");
    let store = Store::open(&url, 2, &test_sealer()).await.unwrap();
    assert!(
        store
            .message(&key("whatsapp", "wamid.LEGACYQ"))
            .await
            .unwrap()
            .is_some()
    );
    store.close().await;
}

both_backends!(
    rows_from_before_0018_become_pseudonyms,
    a_blob_that_does_not_open_stops_the_conversion,
);
