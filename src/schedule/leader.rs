//! Leadership of the singleton jobs when several workers share one
//! PostgreSQL database: the leader of a [`Role`] is the worker holding a
//! session-level advisory lock (`pg_try_advisory_lock`) on a connection of
//! its own; the lock goes with the session, so a worker that dies or loses
//! its connection hands the lead on within one [`Leadership`] interval.
//! On SQLite the one process is always the leader.
//!
//! Before each run the leader checks that its lock session still answers
//! ([`Leadership::confirm`]), and claims the cron instant in `job_runs`
//! (`Store::claim_job_run`), so an instant never runs twice.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyConnection, Connection};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::shutdown::Shutdown;
use crate::store::{Backend, Store};
use crate::telemetry;

/// What a leader leads: each role has its own lock, so only workers with
/// a signing key compete for checkpoint signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Retention sweep, metadata purge, split sweep, transcript close.
    Jobs,
    /// Checkpoint signing.
    Checkpoints,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jobs => "jobs",
            Self::Checkpoints => "checkpoints",
        }
    }

    /// The advisory lock key: `chartb` in ASCII, then the role.
    pub fn lock_key(self) -> i64 {
        0x6368_6172_7462_0000
            + match self {
                Self::Jobs => 1,
                Self::Checkpoints => 2,
            }
    }
}

/// A new worker's name in `job_runs` and logs: `host:pid.n`, `n` counting
/// the workers this process started (tests run several in one process).
pub fn worker_name() -> String {
    static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}.{n}", std::process::id())
}

struct Inner {
    store: Store,
    role: Role,
    worker: String,
    /// The lock's session while this worker leads.
    session: Mutex<Option<AnyConnection>>,
    leader: watch::Sender<bool>,
}

/// Whether this worker leads a [`Role`]. Cheap to clone.
#[derive(Clone)]
pub struct Leadership {
    inner: Arc<Inner>,
}

impl Leadership {
    /// Not leading yet; [`Leadership::spawn`] campaigns. On SQLite the
    /// worker leads from the start.
    pub fn new(store: &Store, role: Role, worker: &str) -> Self {
        let sqlite = store.backend() == Backend::Sqlite;
        Self {
            inner: Arc::new(Inner {
                store: store.clone(),
                role,
                worker: worker.to_owned(),
                session: Mutex::new(None),
                leader: watch::channel(sqlite).0,
            }),
        }
    }

    pub fn role(&self) -> Role {
        self.inner.role
    }

    pub fn worker(&self) -> &str {
        &self.inner.worker
    }

    /// Whether this worker leads now (as of the last check).
    pub fn is_leader(&self) -> bool {
        *self.inner.leader.borrow()
    }

    /// A receiver that sees every change of [`Leadership::is_leader`].
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.inner.leader.subscribe()
    }

    /// Whether this worker still leads: on PostgreSQL, the lock's session
    /// answers (a lost session has released the lock). On SQLite: yes.
    pub async fn confirm(&self) -> bool {
        if self.inner.store.backend() == Backend::Sqlite {
            return true;
        }
        let mut session = self.inner.session.lock().await;
        let Some(conn) = session.as_mut() else {
            return false;
        };
        if sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok() {
            return true;
        }
        *session = None;
        self.set(false);
        false
    }

    fn set(&self, leader: bool) {
        let changed = self.inner.leader.send_if_modified(|l| {
            let changed = *l != leader;
            *l = leader;
            changed
        });
        if changed {
            telemetry::emit(telemetry::LeadershipChanged {
                role: self.inner.role.as_str(),
                leader,
                worker: &self.inner.worker,
            });
        }
    }

    /// Campaigns for the lock every `every` until shutdown, checking the
    /// held session as often; releases the lock at shutdown. On SQLite it
    /// only reports the lead.
    pub fn spawn(&self, every: Duration, mut shutdown: Shutdown) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            if this.inner.store.backend() == Backend::Sqlite {
                telemetry::emit(telemetry::LeadershipChanged {
                    role: this.inner.role.as_str(),
                    leader: true,
                    worker: &this.inner.worker,
                });
                return;
            }
            telemetry::emit(telemetry::LeadershipCampaign {
                role: this.inner.role.as_str(),
                worker: &this.inner.worker,
            });
            loop {
                this.campaign().await;
                if shutdown.sleep(every).await {
                    break;
                }
            }
            this.resign().await;
        })
    }

    /// One round: keep a held session alive, or try to take the lock.
    async fn campaign(&self) {
        if self.is_leader() {
            self.confirm().await;
            return;
        }
        let mut conn = match self.inner.store.dedicated_connection().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, role = self.inner.role.as_str(), "cannot open the leader lock connection");
                return;
            }
        };
        let won = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(self.inner.role.lock_key())
            .fetch_one(&mut conn)
            .await;
        match won {
            Ok(true) => {
                *self.inner.session.lock().await = Some(conn);
                self.set(true);
            }
            Ok(false) => {
                let _ = conn.close().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, role = self.inner.role.as_str(), "cannot try the leader lock");
                let _ = conn.close().await;
            }
        }
    }

    /// Releases the lock (closing its session), so another worker leads
    /// at its next round.
    async fn resign(&self) {
        if let Some(mut conn) = self.inner.session.lock().await.take() {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(self.inner.role.lock_key())
                .execute(&mut conn)
                .await;
            let _ = conn.close().await;
        }
        self.set(false);
    }
}
