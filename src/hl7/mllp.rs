//! The optional MLLP listener: HL7 v2 over TCP, each message framed as
//! `0x0B <message> 0x1C 0x0D`, answered on the same connection with a
//! framed ACK. Same path as the queue: `AdtFeed::handle` applies the
//! message in one transaction before the ACK is written. Messages on one
//! connection are handled in order.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::feed::AdtFeed;
use crate::shutdown::Shutdown;

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
/// bytes before the start byte. `None` until a whole frame is there.
pub fn take_frame(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let start = buf.iter().position(|&b| b == START)?;
    let end = buf[start..].windows(2).position(|w| w == END)? + start;
    let message = buf[start + 1..end].to_vec();
    buf.drain(..end + 2);
    Some(message)
}

/// Accepts connections until `shutdown` flips.
pub async fn serve(
    listener: TcpListener,
    feed: Arc<AdtFeed>,
    backoff: (Duration, Duration),
    mut shutdown: Shutdown,
) {
    loop {
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
        let (feed, shutdown) = (feed.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &feed, backoff, shutdown).await {
                tracing::info!(error = %e, "MLLP connection closed");
            }
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    feed: &AdtFeed,
    backoff: (Duration, Duration),
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        while let Some(message) = take_frame(&mut buf) {
            // Unanswered at shutdown: the sender resends on another connection.
            let Some(answer) = feed
                .handle_until_done(&message, backoff, &mut shutdown)
                .await
            else {
                return Ok(());
            };
            stream.write_all(&frame(answer.ack.as_bytes())).await?;
        }
        if buf.len() > MAX_MESSAGE_BYTES {
            return Err(std::io::Error::other("MLLP message too large"));
        }
        let n = tokio::select! {
            _ = shutdown.recv() => return Ok(()),
            n = stream.read(&mut chunk) => n?,
        };
        if n == 0 {
            return Ok(());
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
    }
}
