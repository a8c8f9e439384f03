//! The worker's singleton parts: checkpoint signing on the leader of
//! [`Role::Checkpoints`] (published to `proofs.checkpoint_dir` too), and
//! the start-time check that the proof log is not behind a published
//! checkpoint.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;

use crate::prove::note::Signer;
use crate::prove::service::{self, publish};
use crate::schedule::leader::{Leadership, Role};
use crate::schedule::{self, jobs::singleton};
use crate::shutdown::Shutdown;
use crate::store::{Store, millis};

/// What checkpoint signing needs.
pub struct Signing {
    pub schedule: cron::Schedule,
    pub signer: Signer,
    pub origin: String,
    pub publish_dir: Option<std::path::PathBuf>,
    pub leader: Leadership,
}

/// Signs a checkpoint at every instant of the schedule when the log grew,
/// on the leader only, and writes the latest one to the publish directory.
pub async fn checkpoint_loop(store: Store, signing: Signing, shutdown: Shutdown) {
    schedule::run(signing.schedule.clone(), Utc::now(), shutdown, |at| {
        let (store, signing) = (&store, &signing);
        let run = async move {
            if let Err(e) =
                service::sign_checkpoint(store, &signing.signer, &signing.origin, millis(at)).await
            {
                tracing::warn!(error = %e, "checkpoint signing failed");
            }
            if let Some(dir) = &signing.publish_dir {
                match publish::publish_latest(store, dir).await {
                    Ok(Some(size)) => tracing::info!(size, "checkpoint published"),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot publish the checkpoint"),
                }
            }
        };
        async move {
            singleton(&signing.leader, store, "checkpoint", at, run).await;
        }
    })
    .await
}

/// Fails when the proof log contradicts the newest checkpoint published
/// in `dir` that no operator accepted: the worker must not append to it.
pub async fn refuse_rolled_back_log(store: &Store, dir: &Path) -> anyhow::Result<()> {
    let Some((published, contradiction)) = publish::check(store, dir).await? else {
        return Ok(());
    };
    anyhow::bail!(
        "the proof log contradicts the checkpoint of size {} published in {} \
         ({contradiction}); was an older database restored? The worker does not \
         append to this log until an operator decides: `chartbridge log accept-rollback \
         --dry-run` lists what would be accepted, `chartbridge log accept-rollback --why TEXT` \
         accepts it (docs/operations.md, \"Restore\")",
        published.size,
        published.file.display()
    )
}

/// Leadership of `role` for the worker `worker`, campaigning every `every`.
pub fn lead(
    store: &Store,
    (role, worker): (Role, &str),
    every: Duration,
    shutdown: &Shutdown,
) -> (Leadership, tokio::task::JoinHandle<()>) {
    let leader = Leadership::new(store, role, worker);
    let task = leader.spawn(every, shutdown.clone());
    (leader, task)
}
