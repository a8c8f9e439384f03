//! The key lifecycle through the service (DSK I.5): signing, revocation,
//! re-signing with a new key, rotation; on SQLite and PostgreSQL.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tempfile::TempDir;

use super::*;
use crate::prove::bundle::{Step, verify_bundle};
use crate::prove::checkpoint::Checkpoint;
use crate::prove::leaf::LeafRecord;
use crate::prove::pseudonym::ProofKeys;
use crate::store::tests::fresh;
use crate::store::{ArchiveRecord, Backend, DeletionState, NewDeletion};

fn proof_keys() -> ProofKeys {
    ProofKeys::new([5; 32], [6; 32])
}

/// A fresh store with `n` archived leaves and key A registered from 1 000 ms.
async fn store_with_leaves(backend: Backend, n: u32) -> (Store, Signer, Option<TempDir>) {
    let (store, dir) = fresh(backend).await;
    for i in 0..n {
        let key = MessageKey {
            source: "whatsapp".into(),
            message_id: format!("wamid.{i}"),
        };
        let leaf = LeafRecord::new(
            [i as u8; 32],
            key.to_string(),
            format!("DocumentReference/{i}"),
            500,
        )
        .unwrap();
        let rec = ArchiveRecord {
            deletion: NewDeletion {
                deletion_id: format!("d{i}"),
                key: key.clone(),
                reason: "archived",
                sealed_command: crate::seal::Sealer::from_key([1; 32]).seal(b"command"),
                not_before_ms: 0,
                state: DeletionState::Pending,
            },
            key,
            rule: "r".into(),
            content_sha256: hex::encode([i as u8; 32]),
            resource: format!("DocumentReference/{i}"),
            resources: vec![],
            leaf_data: leaf.encode(),
        };
        store.record_archive(&rec, 500).await.unwrap();
    }
    let a = Signer::from_seed("log-a", &[0xA; 32]).unwrap();
    store
        .add_signing_key(&KeyInfo::new(&a.verifier(), 1_000), 1_000)
        .await
        .unwrap();
    (store, a, dir)
}

fn target(i: u32) -> ProofTarget {
    ProofTarget::message(&format!("whatsapp:wamid.{i}")).unwrap()
}

async fn i5_revoked_key_fails_verification(backend: Backend) {
    let (store, a, _dir) = store_with_leaves(backend, 2).await;
    let origin = "test.chartbridge.invalid/i5";
    super::sign_checkpoint(&store, &a, origin, 2_000)
        .await
        .unwrap()
        .unwrap();
    let bundle = super::export_bundle(&store, &target(1), (None, &proof_keys()), origin, 2_100)
        .await
        .unwrap();
    let keys = store.signing_keys().await.unwrap();
    verify_bundle(&bundle, None, Some(&keys)).unwrap();

    // Key A is found compromised and revoked back to before it signed.
    let a_id = format!("{:08x}", a.key_id());
    let revoked = store.revoke_signing_key(&a_id, 1_500).await.unwrap();
    assert_eq!(revoked[0].revoked_at_ms, Some(1_500));
    let keys = store.signing_keys().await.unwrap();
    let err = verify_bundle(&bundle, None, Some(&keys)).unwrap_err();
    assert_eq!(err.step(), Step::KeyRevoked, "{err}");
    // Nothing verifiable covers the leaf now, and A may not sign again.
    let err = super::export_bundle(&store, &target(1), (None, &proof_keys()), origin, 2_200)
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::NotCovered(1)), "{err}");
    let err = super::sign_checkpoint(&store, &a, origin, 2_300)
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::SigningKey { .. }), "{err}");

    // A new key re-signs the same tree size; bundles verify again.
    let b = Signer::from_seed("log-b", &[0xB; 32]).unwrap();
    store
        .rotate_signing_key(&KeyInfo::new(&b.verifier(), 3_000), 3_000)
        .await
        .unwrap();
    let resigned =
        super::export_bundle(&store, &target(1), (Some(&b), &proof_keys()), origin, 3_100)
            .await
            .unwrap();
    assert_eq!(resigned.tree_size, 2);
    let keys = store.signing_keys().await.unwrap();
    let report = verify_bundle(&resigned, None, Some(&keys)).unwrap();
    assert_eq!(report.signed_by, vec![format!("log-b+{:08x}", b.key_id())]);
}

async fn i5_rotated_key_still_verifies_older_checkpoints(backend: Backend) {
    let (store, a, _dir) = store_with_leaves(backend, 3).await;
    let origin = "test.chartbridge.invalid/i5";
    super::sign_checkpoint(&store, &a, origin, 2_000)
        .await
        .unwrap()
        .unwrap();
    let bundle = super::export_bundle(&store, &target(0), (None, &proof_keys()), origin, 2_100)
        .await
        .unwrap();
    let b = Signer::from_seed("log-b", &[0xB; 32]).unwrap();
    store
        .rotate_signing_key(&KeyInfo::new(&b.verifier(), 3_000), 3_000)
        .await
        .unwrap();
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(keys[0].valid_until_ms, Some(3_000));
    verify_bundle(&bundle, None, Some(&keys)).unwrap();
    // A rotated-out key signs no more.
    let err = super::sign_checkpoint(&store, &a, origin, 3_500)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("validity"), "{err}");
    // A checkpoint claiming a time after A's validity fails KeyNotValid.
    let late = Checkpoint::new(origin, 3, store.log_root(3).await.unwrap(), 3_600)
        .sign(&[&a])
        .unwrap();
    let mut forged = bundle.clone();
    forged.checkpoint = late;
    forged.tree_size = 3;
    forged.inclusion_path = store
        .log_inclusion(0, 3)
        .await
        .unwrap()
        .iter()
        .map(|h| STANDARD.encode(h))
        .collect();
    let err = verify_bundle(&forged, None, Some(&keys)).unwrap_err();
    assert_eq!(err.step(), Step::KeyNotValid, "{err}");
}

async fn ii2_shrunken_log_is_not_signed(backend: Backend) {
    let (store, a, _dir) = store_with_leaves(backend, 3).await;
    let origin = "test.chartbridge.invalid/ii2";
    super::sign_checkpoint(&store, &a, origin, 2_000)
        .await
        .unwrap()
        .unwrap();
    // As after restoring an old backup: the log lost a leaf it had signed.
    sqlx::query("UPDATE log_head SET size = 2 WHERE id = 1")
        .execute(store.pool())
        .await
        .unwrap();
    let err = super::sign_checkpoint(&store, &a, origin, 2_100)
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Inconsistent(_)), "{err}");
}

use crate::store::tests::both_backends;

both_backends!(
    ii2_shrunken_log_is_not_signed,
    i5_revoked_key_fails_verification,
    i5_rotated_key_still_verifies_older_checkpoints,
);
