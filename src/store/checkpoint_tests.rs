//! Checkpoint and signing-key storage, on SQLite and PostgreSQL.

use super::tests::fresh;
use super::*;
use crate::event::MessageKey;
use crate::prove::checkpoint::KeyInfo;
use crate::prove::note::Signer;

fn checkpoint(size: u64, ts: i64, key: &str) -> StoredCheckpoint {
    StoredCheckpoint {
        size,
        root: [size as u8; 32],
        timestamp_ms: ts,
        note: format!("note {size} {ts} {key}"),
        key_name: "log.test".into(),
        key_id: key.into(),
    }
}

fn key(seed: u8, from: i64) -> KeyInfo {
    KeyInfo::new(
        &Signer::from_seed("log.test", &[seed; 32])
            .unwrap()
            .verifier(),
        from,
    )
}

fn archive(i: u32) -> ArchiveRecord {
    let k = MessageKey {
        source: "whatsapp".into(),
        message_id: format!("wamid.{i}"),
    };
    ArchiveRecord {
        deletion: NewDeletion {
            deletion_id: format!("del-{i}"),
            key: k.clone(),
            reason: "archived",
            sealed_command: crate::seal::Sealer::from_key([1; 32]).seal(b"command"),
            not_before_ms: 0,
            state: DeletionState::Pending,
        },
        key: k,
        rule: "r".into(),
        content_sha256: "00".repeat(32),
        resource: format!("DocumentReference/{i}"),
        resources: vec![format!("DocumentReference/{i}")],
        leaf_data: format!("leaf {i}").into_bytes(),
    }
}

async fn ii2_checkpoints_are_kept_and_found_by_leaf(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    assert_eq!(store.latest_checkpoint().await.unwrap(), None);
    assert!(
        store
            .save_checkpoint(&checkpoint(3, 10, "aa"), 1)
            .await
            .unwrap()
    );
    assert!(
        !store
            .save_checkpoint(&checkpoint(3, 11, "aa"), 1)
            .await
            .unwrap()
    );
    assert!(
        store
            .save_checkpoint(&checkpoint(7, 20, "aa"), 1)
            .await
            .unwrap()
    );
    // The same size, signed again by a new key after a revocation.
    assert!(
        store
            .save_checkpoint(&checkpoint(7, 30, "bb"), 1)
            .await
            .unwrap()
    );
    assert_eq!(
        store.latest_checkpoint().await.unwrap(),
        Some(checkpoint(7, 30, "bb"))
    );
    assert_eq!(
        store.checkpoint_covering(0).await.unwrap(),
        Some(checkpoint(3, 10, "aa"))
    );
    assert_eq!(
        store.checkpoint_covering(2).await.unwrap(),
        Some(checkpoint(3, 10, "aa"))
    );
    assert_eq!(
        store.checkpoint_covering(3).await.unwrap(),
        Some(checkpoint(7, 30, "bb"))
    );
    assert_eq!(store.checkpoint_covering(7).await.unwrap(), None);
    assert_eq!(
        store.checkpoint_of_size(3).await.unwrap(),
        Some(checkpoint(3, 10, "aa"))
    );
    assert_eq!(store.checkpoint_of_size(4).await.unwrap(), None);
}

async fn i5_keys_rotate_and_revoke(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let (old, new) = (key(1, 100), key(2, 500));
    assert!(store.add_signing_key(&old, 1).await.unwrap());
    assert!(!store.add_signing_key(&old, 2).await.unwrap());
    assert!(store.rotate_signing_key(&new, 3).await.unwrap());
    assert!(!store.rotate_signing_key(&new, 4).await.unwrap());
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].key_id, old.key_id);
    assert_eq!(keys[0].valid_until_ms, Some(500));
    assert_eq!(keys[1], new);

    let revoked = store.revoke_signing_key(&new.key_id, 900).await.unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].revoked_at_ms, Some(900));
    // An earlier revocation wins; a later one does not undo it.
    store.revoke_signing_key(&new.key_id, 700).await.unwrap();
    let again = store.revoke_signing_key(&new.key_id, 950).await.unwrap();
    assert_eq!(again[0].revoked_at_ms, Some(700));
    assert!(
        store
            .revoke_signing_key("00000000", 1)
            .await
            .unwrap()
            .is_empty()
    );
    // A revoked key is not current: the next rotation leaves it alone.
    store.rotate_signing_key(&key(3, 1000), 5).await.unwrap();
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(keys[1].valid_until_ms, None);
    assert_eq!(keys[1].revoked_at_ms, Some(700));
}

async fn ii2_archived_messages_are_found_by_resource(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    for i in 0..5 {
        store.record_archive(&archive(i), 1).await.unwrap();
    }
    let k = store
        .message_by_resource("DocumentReference/3")
        .await
        .unwrap()
        .unwrap();
    let named = |i: u32| {
        store
            .message_ref(&MessageKey {
                source: "whatsapp".into(),
                message_id: format!("wamid.{i}"),
            })
            .unwrap()
    };
    assert_eq!(k, named(3));
    assert_eq!(
        store
            .message_by_resource("DocumentReference/9")
            .await
            .unwrap(),
        None
    );
    let sample = store.archived_sample(3).await.unwrap();
    assert_eq!(sample.len(), 3);
    assert!(
        sample
            .iter()
            .all(|(k, r)| (0..5).any(|i| *k == named(i) && *r == format!("DocumentReference/{i}")))
    );
    assert_eq!(store.archived_sample(50).await.unwrap().len(), 5);
}

use crate::store::tests::both_backends;

both_backends!(
    ii2_checkpoints_are_kept_and_found_by_leaf,
    i5_keys_rotate_and_revoke,
    ii2_archived_messages_are_found_by_resource,
);
