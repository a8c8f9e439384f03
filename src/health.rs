//! Liveness and readiness of a running worker.
//!
//! Ready means the worker takes new deliveries: the broker session is up,
//! the KIS circuit is closed and the store accepts writes. When one of them
//! fails the worker stops taking deliveries (the queue buffers them) and
//! says why. Operators read it from a small HTTP endpoint on a loopback
//! address (`health.listen`): `GET /healthz` answers 200 while the process
//! runs, `GET /readyz` 200 when ready and 503 otherwise, each with a JSON
//! body naming the failing parts (no content, no identifiers).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::push::Breaker;
use crate::shutdown::Shutdown;

/// `[health]`: the liveness and readiness endpoint.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Address of the `/healthz` and `/readyz` endpoint, e.g.
    /// `127.0.0.1:9464` (keep it on loopback); none by default.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug)]
struct Inner {
    broker_up: AtomicBool,
    store_ok: AtomicBool,
    kis_open: watch::Receiver<bool>,
    changed: Notify,
}

/// Shared readiness state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Health(Arc<Inner>);

/// Why the worker is not ready (empty when ready).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub broker_up: bool,
    pub kis_reachable: bool,
    pub store_writable: bool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.broker_up && self.kis_reachable && self.store_writable
    }

    /// The first failing part, for logs.
    pub fn cause(&self) -> &'static str {
        if !self.store_writable {
            "store"
        } else if !self.kis_reachable {
            "kis"
        } else if !self.broker_up {
            "broker"
        } else {
            ""
        }
    }

    fn json(&self) -> String {
        format!(
            r#"{{"ready":{},"broker":{},"kis":{},"store":{}}}"#,
            self.ready(),
            up(self.broker_up),
            up(self.kis_reachable),
            up(self.store_writable)
        )
    }
}

fn up(b: bool) -> &'static str {
    if b { "\"up\"" } else { "\"down\"" }
}

impl Health {
    /// Readiness that follows `breaker` for the KIS.
    pub fn new(breaker: &Breaker) -> Self {
        Self(Arc::new(Inner {
            broker_up: AtomicBool::new(false),
            store_ok: AtomicBool::new(true),
            kis_open: breaker.watch(),
            changed: Notify::new(),
        }))
    }

    pub fn readiness(&self) -> Readiness {
        Readiness {
            broker_up: self.0.broker_up.load(Ordering::SeqCst),
            kis_reachable: !*self.0.kis_open.borrow(),
            store_writable: self.0.store_ok.load(Ordering::SeqCst),
        }
    }

    /// Whether new deliveries may be taken: the KIS circuit is closed and
    /// the store accepts writes.
    pub fn accepting(&self) -> bool {
        let r = self.readiness();
        r.kis_reachable && r.store_writable
    }

    pub fn set_broker_up(&self, up: bool) {
        self.0.broker_up.store(up, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }

    /// A write failed for lack of space or an IO error (`false`), or a
    /// write succeeded again (`true`).
    pub fn set_store_ok(&self, ok: bool) {
        let was = self.0.store_ok.swap(ok, Ordering::SeqCst);
        if was != ok {
            if !ok {
                crate::telemetry::storage_failure();
            }
            self.0.changed.notify_waiters();
        }
    }

    /// Waits until [`Self::accepting`] may have changed.
    pub async fn changed(&self) {
        let mut kis = self.0.kis_open.clone();
        tokio::select! {
            _ = self.0.changed.notified() => {}
            _ = kis.changed() => {}
            // A missed notification costs at most this long.
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
}

/// While the KIS circuit is open, sends the probe request itself (a
/// capability read), so the circuit closes when the KIS is back even if no
/// delivery is in flight to try (the worker takes none while it is open).
pub async fn probe_kis_while_open(kis: crate::push::Kis, mut shutdown: Shutdown) {
    let mut open = kis.breaker().watch();
    loop {
        while !*open.borrow_and_update() {
            tokio::select! {
                _ = open.changed() => {}
                _ = shutdown.recv() => return,
            }
        }
        tokio::select! {
            // Waits for the cooldown in the breaker, then goes out as the probe.
            _ = kis.read("metadata") => {}
            _ = shutdown.recv() => return,
        }
    }
}

/// Serves `/healthz` and `/readyz` on `listener` until `shutdown` flips.
pub async fn serve(listener: TcpListener, health: Health, mut shutdown: Shutdown) {
    loop {
        let (mut stream, _) = tokio::select! {
            _ = shutdown.recv() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "health endpoint accept failed");
                    continue;
                }
            },
        };
        let health = health.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = match tokio::time::timeout(
                std::time::Duration::from_secs(5),
                stream.read(&mut buf),
            )
            .await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = match path {
                "/healthz" => ("200 OK", r#"{"alive":true}"#.to_owned()),
                "/readyz" => {
                    let r = health.readiness();
                    let status = if r.ready() {
                        "200 OK"
                    } else {
                        "503 Service Unavailable"
                    };
                    (status, r.json())
                }
                _ => ("404 Not Found", r#"{"error":"not found"}"#.to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Binds the health endpoint; `None` when not configured.
pub async fn bind(listen: Option<SocketAddr>) -> std::io::Result<Option<TcpListener>> {
    match listen {
        Some(addr) => TcpListener::bind(addr).await.map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::BreakerSettings;
    use std::time::Duration;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap().to_owned();
        (status, body)
    }

    #[tokio::test]
    async fn readyz_names_the_failing_part() {
        let breaker = Breaker::new(BreakerSettings {
            threshold: 1,
            cooldown: Duration::from_secs(60),
            cooldown_max: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(60),
        });
        let health = Health::new(&breaker);
        let listener = bind(Some("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap()
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (_tx, rx) = watch::channel(false);
        tokio::spawn(serve(listener, health.clone(), rx.into()));

        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503, "broker not connected yet");
        assert!(body.contains(r#""broker":"down""#), "{body}");
        health.set_broker_up(true);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        breaker.failure();
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains(r#""kis":"down""#), "{body}");
        assert!(!health.accepting());
        breaker.success();
        health.set_store_ok(false);
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains(r#""store":"down""#) && body.contains(r#""kis":"up""#));
        health.set_store_ok(true);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        assert_eq!(get(addr, "/other").await.0, 404);
    }
}
