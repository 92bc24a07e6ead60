//! Background writers that store what requests queue, many items per
//! transaction, after the requests that queued them are done.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

/// Waits for the next item, lets more gather for `window`, and moves what
/// has queued (at most `max`) into `batch`. False once the queue is closed
/// and empty.
pub async fn gather<T>(
    queue: &mut UnboundedReceiver<T>,
    batch: &mut Vec<T>,
    window: Duration,
    max: usize,
) -> bool {
    if queue.recv_many(batch, max).await == 0 {
        return false;
    }
    tokio::time::sleep(window).await;
    while batch.len() < max
        && let Ok(item) = queue.try_recv()
    {
        batch.push(item);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn takes_what_arrives_within_the_window() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(1).unwrap();
        let late = tokio::spawn({
            let tx = tx.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                tx.send(2).unwrap();
            }
        });
        let mut batch = Vec::new();
        assert!(gather(&mut rx, &mut batch, Duration::from_millis(500), 10).await);
        late.await.unwrap();
        assert_eq!(batch, [1, 2]);
        drop(tx);
        batch.clear();
        assert!(!gather(&mut rx, &mut batch, Duration::ZERO, 10).await);
    }
}
