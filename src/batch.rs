//! Taking what waits in a queue: the writers that group work (customer messages, bot turns,
//! agent replies, delivered marks, the console feed) each take the first job, then everything
//! already waiting behind it, up to a bound.

use tokio::sync::mpsc::UnboundedReceiver;

/// Moves jobs already waiting in `queue` into `into`, until it holds `max`.
pub fn take_waiting<T>(queue: &mut UnboundedReceiver<T>, into: &mut Vec<T>, max: usize) {
    while into.len() < max {
        match queue.try_recv() {
            Ok(job) => into.push(job),
            Err(_) => break,
        }
    }
}

/// Waits for a job, then takes those waiting behind it: at most `max` in all. None when the
/// queue is closed.
pub async fn recv_batch<T>(queue: &mut UnboundedReceiver<T>, max: usize) -> Option<Vec<T>> {
    let first = queue.recv().await?;
    let mut jobs = vec![first];
    take_waiting(queue, &mut jobs, max);
    Some(jobs)
}
