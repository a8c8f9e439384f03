//! Recording human actions in the audit trail ([`crate::audit`]): the
//! commands record before they act, so no action goes unrecorded; a worker
//! records its configuration's hash at start when it changed.

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::audit::{Action, Actor, Entry, Row};
use crate::config::Config;
use crate::prove::service;
use crate::seal::Sealer;
use crate::store::Store;

/// The why of a command: `--reason`, and the free-text `--by` note.
pub fn why(reason: Option<&str>, note: Option<&str>) -> Option<String> {
    match (reason, note) {
        (None, None) => None,
        (Some(r), None) => Some(r.to_owned()),
        (None, Some(n)) => Some(format!("note: {n}")),
        (Some(r), Some(n)) => Some(format!("{r}\nnote: {n}")),
    }
}

/// Appends `action` on `target` (opaque ids) by `actor`.
pub async fn record(
    store: &Store,
    sealer: &Sealer,
    actor: &Actor,
    action: Action,
    target: impl Into<String>,
    why: Option<&str>,
) -> anyhow::Result<Row> {
    store
        .append_audit(
            sealer,
            &Entry {
                actor,
                action,
                target: target.into(),
                reason: why,
            },
        )
        .await
        .context("cannot append to the audit trail; nothing was done")
}

/// `config sha256:<hex>` of the effective configuration, secrets masked.
pub fn config_target(config: &Config) -> String {
    let hash = Sha256::digest(config.to_masked_toml().as_bytes());
    format!("config sha256:{}", hex::encode(hash))
}

/// Records the configuration a worker starts with, when it differs from
/// the one the last start recorded. `true` when a row was appended.
pub async fn record_config_change(
    store: &Store,
    sealer: &Sealer,
    config: &Config,
) -> anyhow::Result<bool> {
    let target = config_target(config);
    if store.last_audit_target(Action::ConfigChange).await? == Some(target.clone()) {
        return Ok(false);
    }
    let actor = Actor::os()?;
    record(store, sealer, &actor, Action::ConfigChange, target, None).await?;
    Ok(true)
}

/// `chartbridge proof export` and the console's bundle download: the proof
/// bundle of `target` as [`service::export_bundle`] builds it (signing a
/// new checkpoint with `signer` when none covers the leaf yet), recorded
/// as `proof.export` (`leaf N tree-size M`, with `why`) by `actor` before
/// the bundle is handed out.
///
/// # Errors
/// The [`service::ServiceError`] of the export (downcast it: `NotArchived`
/// when nothing archived has this message or resource), or the audit
/// trail that could not be written (then no bundle is returned).
pub async fn export_bundle(
    (store, sealer): (&Store, &Sealer),
    actor: &Actor,
    target: &service::ProofTarget,
    (signer, origin): (Option<&crate::prove::note::Signer>, &str),
    why: Option<&str>,
) -> anyhow::Result<crate::prove::bundle::ProofBundle> {
    let now_ms = crate::store::millis(chrono::Utc::now());
    let bundle = service::export_bundle(
        store,
        target,
        (signer, &sealer.proof_keys()),
        origin,
        now_ms,
    )
    .await?;
    record(
        store,
        sealer,
        actor,
        Action::ProofExport,
        format!("leaf {} tree-size {}", bundle.leaf_index, bundle.tree_size),
        why,
    )
    .await?;
    Ok(bundle)
}
