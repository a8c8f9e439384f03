//! The optional MLLP listener: HL7 v2 over TCP, each message framed as
//! `0x0B <message> 0x1C 0x0D`, answered on the same connection with a
//! framed ACK. Same path as the queue: `AdtFeed::handle` applies the
//! message in one transaction before the ACK is written. Messages on one
//! connection are handled in order.
//!
//! Guarded like mini-redis's `server.rs`: a [`Semaphore`] caps the
//! connections served at once (`adt.mllp_max_connections`); a connection
//! idle for `adt.mllp_idle_timeout`, or whose TLS handshake or message
//! takes longer than `adt.mllp_read_timeout`, is closed. With
//! `[adt.mllp_tls]` every connection is TLS with a client certificate
//! chaining to `client_ca_file` whose SHA-256 fingerprint is listed in
//! `allowed_clients`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::config::AdtConfig;
use super::feed::AdtFeed;
use crate::shutdown::Shutdown;
use crate::transport::{self, TlsError};

/// How the listener guards its connections.
#[derive(Clone)]
pub struct Guard {
    tls: Option<(tokio_rustls::TlsAcceptor, Arc<BTreeSet<String>>)>,
    connections: Arc<Semaphore>,
    idle: Duration,
    read: Duration,
}

impl Guard {
    /// From `[adt]`: loads the listener's certificate, key and client CA.
    pub fn from_config(config: &AdtConfig) -> Result<Self, TlsError> {
        const WHAT: &str = "adt.mllp_tls";
        let tls = match &config.mllp_tls {
            Some(t) => {
                let server =
                    transport::server_config(WHAT, &t.cert_file, &t.key_file, &t.client_ca_file)?;
                let allowed = t
                    .allowed_clients
                    .iter()
                    .map(|f| transport::normalise_fingerprint(f))
                    .collect();
                Some((server.into(), Arc::new(allowed)))
            }
            None => None,
        };
        Ok(Self {
            tls,
            connections: Arc::new(Semaphore::new(config.mllp_max_connections)),
            idle: config.mllp_idle_timeout,
            read: config.mllp_read_timeout,
        })
    }
}

const START: u8 = 0x0b;
const END: [u8; 2] = [0x1c, 0x0d];
/// Largest accepted message; a longer one closes the connection.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Frames a message for MLLP.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(START);
    out.extend_from_slice(message);
    out.extend_from_slice(&END);
    out
}

/// Takes one complete framed message off the front of `buf`, discarding
/// bytes before the start byte. `None` until a whole frame is there. A
/// start byte inside an open frame abandons it (the content never holds
/// one, MLLP release 2; a sender that gave up mid-message and sent again):
/// the frame begins at the last start byte before its end block, so an
/// unfinished message is dropped (never acknowledged, so it is resent),
/// not glued to the next one's header.
pub fn take_frame(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let first = buf.iter().position(|&b| b == START)?;
    let end = buf[first..].windows(2).position(|w| w == END)? + first;
    let start = buf[..end].iter().rposition(|&b| b == START)?;
    if start != first {
        tracing::warn!("MLLP: an unfinished frame was abandoned by the next start block");
    }
    let message = buf[start + 1..end].to_vec();
    buf.drain(..end + 2);
    Some(message)
}

/// Accepts connections until `shutdown` flips, at most the guard's cap
/// at once.
pub async fn serve(
    listener: TcpListener,
    feed: Arc<AdtFeed>,
    guard: Guard,
    backoff: (Duration, Duration),
    mut shutdown: Shutdown,
) {
    loop {
        let permit = tokio::select! {
            _ = shutdown.recv() => return,
            permit = guard.connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, _) = tokio::select! {
            _ = shutdown.recv() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "MLLP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (feed, guard, shutdown) = (feed.clone(), guard.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let result = match &guard.tls {
                None => connection(stream, &feed, &guard, backoff, shutdown).await,
                Some((acceptor, allowed)) => {
                    match tokio::time::timeout(guard.read, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) if client_allowed(&tls, allowed) => {
                            connection(tls, &feed, &guard, backoff, shutdown).await
                        }
                        Ok(Ok(_)) => Err(std::io::Error::other(
                            "client certificate not in adt.mllp_tls.allowed_clients",
                        )),
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(std::io::Error::other("TLS handshake timed out")),
                    }
                }
            };
            if let Err(e) = result {
                tracing::info!(error = %e, "MLLP connection closed");
            }
        });
    }
}

fn client_allowed<S>(tls: &tokio_rustls::server::TlsStream<S>, allowed: &BTreeSet<String>) -> bool {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .is_some_and(|leaf| allowed.contains(&transport::fingerprint(leaf)))
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    feed: &AdtFeed,
    guard: &Guard,
    backoff: (Duration, Duration),
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    // When the message now arriving must be complete.
    let mut message_deadline: Option<Instant> = None;
    loop {
        while let Some(message) = take_frame(&mut buf) {
            message_deadline = None;
            // Unanswered at shutdown: the sender resends on another connection.
            let Some(answer) = feed
                .handle_until_done(&message, backoff, &mut shutdown)
                .await
            else {
                return Ok(());
            };
            // Nothing when the sender asked for no acknowledgment
            // (enhanced mode, MSH-15/16).
            if !answer.ack.is_empty() {
                stream.write_all(&frame(answer.ack.as_bytes())).await?;
                stream.flush().await?;
            }
        }
        if buf.len() > MAX_MESSAGE_BYTES {
            return Err(std::io::Error::other("MLLP message too large"));
        }
        let idle = Instant::now() + guard.idle;
        let deadline = message_deadline.map_or(idle, |m| m.min(idle));
        let n = tokio::select! {
            _ = shutdown.recv() => return Ok(()),
            _ = tokio::time::sleep_until(deadline) => {
                return Err(std::io::Error::other("MLLP read timed out"));
            }
            n = stream.read(&mut chunk) => n?,
        };
        if n == 0 {
            return Ok(());
        }
        if buf.is_empty() {
            message_deadline = Some(Instant::now() + guard.read);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_joined() {
        let mut buf = b"noise".to_vec();
        buf.extend(frame(b"MSH|a"));
        buf.extend(frame(b"MSH|b"));
        buf.extend(&frame(b"MSH|c")[..3]);
        assert_eq!(take_frame(&mut buf).unwrap(), b"MSH|a");
        assert_eq!(take_frame(&mut buf).unwrap(), b"MSH|b");
        assert_eq!(take_frame(&mut buf), None);
        buf.extend(&frame(b"MSH|c")[3..]);
        assert_eq!(take_frame(&mut buf).unwrap(), b"MSH|c");
        assert!(buf.is_empty());
        // An unfinished frame, then a whole one: the whole one alone.
        let mut buf = frame(b"MSH|cut PID|1||X")[..10].to_vec();
        buf.extend(frame(b"MSH|d"));
        assert_eq!(take_frame(&mut buf).unwrap(), b"MSH|d");
        assert!(buf.is_empty());
    }
}
