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

/// Records one batch of a writer: its size now, and how long it took when dropped. The relay
/// benchmark reads both (`frontdesk_<writer>_batch_size` and `_batch_seconds`) to show how much
/// each writer grouped, how long its batches took and how much of the run it was busy.
pub struct BatchTimer {
    writer: &'static str,
    started: std::time::Instant,
}

impl BatchTimer {
    /// A batch of `len` jobs for `writer` (as in `frontdesk_{writer}_batch_size`) starts now.
    pub fn start(writer: &'static str, len: usize) -> Self {
        metrics::histogram!(format!("frontdesk_{writer}_batch_size")).record(len as f64);
        Self {
            writer,
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for BatchTimer {
    fn drop(&mut self) {
        metrics::histogram!(format!("frontdesk_{}_batch_seconds", self.writer))
            .record(self.started.elapsed().as_secs_f64());
    }
}
