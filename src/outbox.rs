//! Delivers queued bot and agent messages through their channels, with retries.
//!
//! Every outbound message to a channel that pushes to another system (webhook, Telegram,
//! Discord) is an outbox row written in the same transaction as the message, so a crash never
//! loses a reply: the worker picks up whatever is due after a restart. (A channel whose clients
//! read what they missed from the transcript, the web chat, needs no rows: its messages are
//! published once after the commit; see `Channel::replays_from_store`.) Each attempt claims its
//! row with a lease (a conditional update), so several gateway processes sharing one
//! PostgreSQL never send the same attempt twice; a process that dies mid-attempt leaves the row to
//! be retried when the lease runs out (at-least-once, with a stable `delivery_id` to de-duplicate
//! on). Failures back off exponentially with jitter until `max_attempts`, then the row is dead:
//! listed by `GET /api/v1/deliveries?status=dead`, replayable with `POST .../retry`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use frontdesk_channels::{now_ms, DeliveryError};

use crate::registry::Registry;
use rand::Rng;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::batch::recv_batch;
use crate::config::OutboxConfig;
use crate::metrics as m;
use crate::store::{Delivery, Direct, Store};

pub struct Outbox {
    store: Store,
    channels: Arc<Registry>,
    config: OutboxConfig,
    wakeup: Arc<Notify>,
    in_flight: Mutex<HashSet<String>>,
    slots: Arc<Semaphore>,
    /// Direct deliveries, per conversation, in order.
    lanes: Mutex<HashMap<String, Lane>>,
    /// Delivered rows waiting to be marked, many per statement.
    delivered: mpsc::UnboundedSender<String>,
}

/// One conversation's direct deliveries, sent one after another.
#[derive(Default)]
struct Lane {
    queue: VecDeque<Delivery>,
    /// Every delivery this lane took (sent, being sent or waiting), remembered while the lane
    /// is kept, so a later reply that found them pending may follow them directly.
    taken: HashSet<String>,
    running: bool,
    /// A delivery failed: the lane's later ones went to the worker, and new ones follow them.
    failed: bool,
    last_active: Option<Instant>,
}

/// How long an idle lane is remembered. Longer than a reply takes from storing to joining its
/// lane, so a reply that saw the previous one still pending finds it here.
const LANE_MEMORY: Duration = Duration::from_secs(10);

/// Most deliveries marked done in one statement.
const MAX_MARK_BATCH: usize = 512;

/// Delay before attempt `attempt + 1`: base * 2^(attempt-1), capped, then jittered to 50-100 %.
pub fn backoff_ms(config: &OutboxConfig, attempt: i64, rng: &mut impl Rng) -> i64 {
    let exp = attempt.clamp(1, 30) - 1;
    let full = config
        .base_delay_ms
        .saturating_mul(1i64 << exp)
        .min(config.max_delay_ms)
        .max(1);
    rng.random_range(full / 2..=full)
}

impl Outbox {
    pub fn new(
        store: Store,
        channels: Arc<Registry>,
        config: OutboxConfig,
        wakeup: Arc<Notify>,
    ) -> Arc<Self> {
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let (delivered, marks) = mpsc::unbounded_channel();
        tokio::spawn(mark_delivered(store.clone(), marks));
        Arc::new(Self {
            store,
            channels,
            config,
            wakeup,
            in_flight: Mutex::new(HashSet::new()),
            slots,
            lanes: Mutex::new(HashMap::new()),
            delivered,
        })
    }

    /// Makes the worker look for due deliveries now.
    pub fn wake(&self) {
        self.wakeup.notify_one();
    }

    pub fn lease_ms(&self) -> i64 {
        self.config.lease_ms
    }

    /// Whether messages to this channel need no outbox row
    /// ([`frontdesk_channels::Channel::replays_from_store`]). An unknown channel needs one.
    pub fn replays_from_store(&self, channel: &str) -> bool {
        self.channels
            .get(channel)
            .is_some_and(|ch| ch.replays_from_store())
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lane>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends deliveries that were stored reserved for this process, each conversation's in
    /// order. One that must wait for deliveries this process does not hold (a retry in backoff,
    /// another gateway's) is released to the worker, which keeps the order. A message without
    /// an outbox row is published at once, here: its channel's clients read anything they miss
    /// from the transcript, so there is nothing to retry and no order to wait for.
    pub async fn deliver_now(self: &Arc<Self>, deliveries: Vec<Direct>) {
        let mut release = Vec::new();
        let mut start = Vec::new();
        let (queued, published): (Vec<Direct>, Vec<Direct>) =
            deliveries.into_iter().partition(|d| d.delivery.outbox_row);
        for Direct { delivery, .. } in published {
            self.publish(&delivery).await;
        }
        {
            let mut lanes = self.lanes();
            for Direct {
                delivery,
                waits_for,
            } in queued
            {
                let lane = lanes.entry(delivery.conversation_id.clone()).or_default();
                lane.last_active = Some(Instant::now());
                if lane.failed && !lane.running && waits_for.is_empty() {
                    // Nothing was pending when this was stored: what the failure left to the
                    // worker is done, and the lane may send again.
                    lane.failed = false;
                }
                if lane.failed || !waits_for.iter().all(|id| lane.taken.contains(id)) {
                    release.push(delivery.id);
                    continue;
                }
                lane.taken.insert(delivery.id.clone());
                if !lane.running {
                    lane.running = true;
                    start.push(delivery.conversation_id.clone());
                }
                lane.queue.push_back(delivery);
            }
        }
        for conversation in start {
            let me = self.clone();
            tokio::spawn(async move { me.run_lane(conversation).await });
        }
        self.release(release).await;
    }

    /// Publishes a message that has no outbox row. A failure loses nothing (the message is in
    /// the transcript, where the customer's client reads it on reconnect); it is logged.
    async fn publish(&self, delivery: &Delivery) {
        if let Err(e) = self.send_through_channel(delivery).await {
            metrics::counter!(m::DELIVERY_FAILURES, "channel" => delivery.channel.clone(), "outcome" => "transcript")
                .increment(1);
            tracing::warn!(conversation = %delivery.conversation_id, seq = delivery.seq, error = %e, "could not publish a message; the customer's client reads it from the transcript");
        }
    }

    /// Hands one message to its channel, counted as sent when the channel takes it.
    async fn send_through_channel(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let result = match self.channels.get(&delivery.channel) {
            Some(ch) => ch.deliver(&delivery.outbound()).await,
            None => Err(DeliveryError::Permanent(format!(
                "channel '{}' is not configured on this gateway",
                delivery.channel
            ))),
        };
        if result.is_ok() {
            metrics::counter!(m::MESSAGES_OUT, "channel" => delivery.channel.clone()).increment(1);
        }
        result
    }

    /// Hands reserved deliveries to the worker, due now.
    async fn release(&self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        if let Err(e) = self.store.release_deliveries(&ids, now_ms()).await {
            // Their reservation runs out and the worker takes them then.
            tracing::error!(error = %e, deliveries = ids.len(), "outbox: cannot release deliveries to the worker");
        }
        self.wakeup.notify_one();
    }

    /// Sends one conversation's direct deliveries until its lane is empty or one fails.
    async fn run_lane(self: Arc<Self>, conversation: String) {
        loop {
            let next = {
                let mut lanes = self.lanes();
                let Some(lane) = lanes.get_mut(&conversation) else {
                    return;
                };
                lane.last_active = Some(Instant::now());
                match lane.queue.pop_front() {
                    Some(d) => d,
                    None => {
                        lane.running = false;
                        return;
                    }
                }
            };
            let Ok(permit) = self.slots.clone().acquire_owned().await else {
                return;
            };
            let delivered = self.attempt_once(&next).await;
            drop(permit);
            if !delivered {
                let rest: Vec<String> = {
                    let mut lanes = self.lanes();
                    match lanes.get_mut(&conversation) {
                        Some(lane) => {
                            lane.failed = true;
                            lane.running = false;
                            lane.queue.drain(..).map(|d| d.id).collect()
                        }
                        None => Vec::new(),
                    }
                };
                self.release(rest).await;
                return;
            }
        }
    }

    /// Forgets lanes idle for longer than [`LANE_MEMORY`].
    fn forget_idle_lanes(&self) {
        self.lanes().retain(|_, lane| {
            lane.running || lane.last_active.is_some_and(|t| t.elapsed() < LANE_MEMORY)
        });
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs until `shutdown`: delivers what is due, then sleeps until woken or `poll_ms` passes.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let poll = Duration::from_millis(self.config.poll_ms.max(10));
        let mut gauges_at = tokio::time::Instant::now();
        loop {
            let started = self.pass().await;
            if gauges_at.elapsed() > Duration::from_secs(2) {
                gauges_at = tokio::time::Instant::now();
                self.forget_idle_lanes();
                if let Ok(c) = self.store.outbox_counts().await {
                    metrics::gauge!(m::OUTBOX_BACKLOG).set(c.pending as f64);
                    metrics::gauge!(m::OUTBOX_DEAD).set(c.dead as f64);
                }
            }
            if started > 0 {
                // More may be due right away (the next message of a conversation just delivered).
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.wakeup.notified() => {},
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {},
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wakeup.notified() => {},
                _ = tokio::time::sleep(poll) => {},
            }
        }
    }

    /// One look at the due deliveries; returns how many attempts it started.
    async fn pass(self: &Arc<Self>) -> usize {
        let limit = (self.config.concurrency * 4) as i64;
        let due = match self.store.due_deliveries(now_ms(), limit).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "outbox: cannot read due deliveries");
                return 0;
            }
        };
        let mut started = 0;
        for delivery in due {
            if !self.in_flight().insert(delivery.id.clone()) {
                continue;
            }
            let Ok(permit) = self.slots.clone().acquire_owned().await else {
                return started;
            };
            let lease_until = now_ms() + self.config.lease_ms;
            match self.store.claim_delivery(&delivery, lease_until).await {
                Ok(true) => {
                    started += 1;
                    let me = self.clone();
                    tokio::spawn(async move {
                        me.attempt(delivery).await;
                        drop(permit);
                    });
                }
                Ok(false) => {
                    self.in_flight().remove(&delivery.id);
                }
                Err(e) => {
                    self.in_flight().remove(&delivery.id);
                    tracing::error!(delivery = %delivery.id, error = %e, "outbox: cannot claim a delivery");
                }
            }
        }
        started
    }

    async fn attempt(self: Arc<Self>, delivery: Delivery) {
        // The claim counted this attempt.
        let delivery = Delivery {
            attempts: delivery.attempts + 1,
            ..delivery
        };
        self.attempt_once(&delivery).await;
        self.in_flight().remove(&delivery.id);
        self.wakeup.notify_one();
    }

    /// Sends a claimed delivery (`attempts` counts this attempt) and records the outcome: done,
    /// retried later, or dead. True when it was delivered.
    async fn attempt_once(&self, delivery: &Delivery) -> bool {
        let attempt = delivery.attempts;
        let result = self.send_through_channel(delivery).await;
        let channel = delivery.channel.clone();
        let recorded = match result {
            Ok(()) => {
                // Marked with others in one statement; until then the lease keeps it reserved.
                let _ = self.delivered.send(delivery.id.clone());
                return true;
            }
            Err(e @ (DeliveryError::Retryable(_) | DeliveryError::RateLimited { .. }))
                if attempt < self.config.max_attempts =>
            {
                let mut delay = backoff_ms(&self.config, attempt, &mut rand::rng());
                // The platform said when it accepts messages again: never earlier than that. The
                // conversation's later messages wait too (only the oldest pending one is due).
                if let DeliveryError::RateLimited { retry_after, .. } = &e {
                    delay = delay.max(i64::try_from(retry_after.as_millis()).unwrap_or(i64::MAX));
                }
                let err = e.to_string();
                metrics::counter!(m::DELIVERY_FAILURES, "channel" => channel, "outcome" => "retry")
                    .increment(1);
                tracing::warn!(delivery = %delivery.id, attempt, retry_in_ms = delay, error = %err, "delivery failed; will retry");
                self.store
                    .mark_failed(&delivery.id, &err, Some(now_ms() + delay))
                    .await
            }
            Err(e) => {
                metrics::counter!(m::DELIVERY_FAILURES, "channel" => channel, "outcome" => "dead")
                    .increment(1);
                let err = format!("{e} (after {attempt} attempt(s))");
                tracing::error!(delivery = %delivery.id, attempt, error = %err, "delivery dead-lettered");
                self.store.mark_failed(&delivery.id, &err, None).await
            }
        };
        if let Err(e) = recorded {
            // The lease runs out and the attempt is made again: at-least-once.
            tracing::error!(delivery = %delivery.id, error = %e, "outbox: cannot record an attempt");
        }
        false
    }
}

/// Marks delivered rows done, as many per statement as are waiting. A failure leaves them
/// reserved until their lease runs out; then they are sent again (at-least-once, and the
/// delivery id lets the receiver drop the repeat).
async fn mark_delivered(store: Store, mut marks: mpsc::UnboundedReceiver<String>) {
    while let Some(ids) = recv_batch(&mut marks, MAX_MARK_BATCH).await {
        let _timer = crate::batch::BatchTimer::start("delivered_mark", ids.len());
        if let Err(e) = store.mark_delivered_many(&ids).await {
            tracing::error!(error = %e, deliveries = ids.len(), "outbox: cannot mark deliveries done; they will be sent again when their lease runs out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_with_jitter_and_stays_under_the_cap() {
        let cfg = OutboxConfig {
            base_delay_ms: 100,
            max_delay_ms: 1000,
            ..OutboxConfig::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (attempt, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (20, 1000),
        ] {
            for _ in 0..50 {
                let d = backoff_ms(&cfg, attempt, &mut rng);
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}: {d} not in {}..={full}",
                    full / 2
                );
            }
        }
    }
}
