//! Gathering work that arrives close together into one batch: the group
//! commit of claims and archives (`pipeline::group`) and batched KIS transactions
//! (`push::batch`) both take what is already waiting and what arrives
//! within a linger time, up to a bound.

use std::time::Duration;

use tokio::sync::mpsc;

/// `first`, then up to `max - 1` more items from `rx`: those already
/// waiting, and those that arrive within `linger` of the call (`0`: none
/// waited for). Returns fewer when `rx` runs dry or closes.
pub async fn gather<T>(
    rx: &mut mpsc::Receiver<T>,
    first: T,
    max: usize,
    linger: Duration,
) -> Vec<T> {
    let mut batch = vec![first];
    while batch.len() < max {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    if !linger.is_zero() {
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => batch.push(item),
                _ => break,
            }
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn takes_what_waits_and_what_arrives_within_the_linger_up_to_max() {
        let (tx, mut rx) = mpsc::channel(16);
        for i in 1..=3 {
            tx.send(i).await.unwrap();
        }
        assert_eq!(gather(&mut rx, 0, 2, Duration::ZERO).await, [0, 1]);
        assert_eq!(gather(&mut rx, 0, 8, Duration::ZERO).await, [0, 2, 3]);
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            late.send(4).await.unwrap();
        });
        assert_eq!(
            gather(&mut rx, 0, 8, Duration::from_millis(500)).await,
            [0, 4]
        );
        drop(tx);
        assert_eq!(gather(&mut rx, 9, 8, Duration::from_millis(50)).await, [9]);
    }
}
