//! Recording human actions in the audit trail ([`crate::audit`]): the
//! commands record before they act, so no action goes unrecorded; a worker
//! records its configuration's hash at start when it changed.

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::audit::{Action, Actor, Entry, Row};
use crate::config::Config;
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
