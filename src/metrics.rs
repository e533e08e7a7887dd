//! Prometheus metrics: names in one place so dashboards and code agree.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const MESSAGES_IN: &str = "frontdesk_messages_in_total";
pub const MESSAGES_DUPLICATE: &str = "frontdesk_messages_duplicate_total";
pub const MESSAGES_OUT: &str = "frontdesk_messages_out_total";
pub const DELIVERY_FAILURES: &str = "frontdesk_delivery_failures_total";
pub const PIPELINE_SECONDS: &str = "frontdesk_pipeline_seconds";
pub const OUTBOX_BACKLOG: &str = "frontdesk_outbox_backlog";
pub const OUTBOX_DEAD: &str = "frontdesk_outbox_dead";
pub const OPEN_SOCKETS: &str = "frontdesk_open_sockets";
pub const REJECTED: &str = "frontdesk_requests_rejected_total";
pub const HANDOFFS: &str = "frontdesk_handoffs_total";
pub const ASSIGNMENTS: &str = "frontdesk_assignments_total";
pub const QUEUE_WAIT_SECONDS: &str = "frontdesk_queue_wait_seconds";
pub const QUEUED: &str = "frontdesk_conversations_queued";
pub const AGENTS_ONLINE: &str = "frontdesk_agents_online";
pub const SATISFACTION_RATINGS: &str = "frontdesk_satisfaction_ratings_total";

/// Installs the process-wide recorder (once) and returns the handle that renders `/metrics`.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(PIPELINE_SECONDS.into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(QUEUE_WAIT_SECONDS.into()),
            &[
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
            ],
        )?
        .install_recorder()?;
    metrics::describe_counter!(MESSAGES_IN, "Customer messages stored, per channel");
    metrics::describe_counter!(
        MESSAGES_DUPLICATE,
        "Retried customer messages recognized and not stored again"
    );
    metrics::describe_counter!(
        MESSAGES_OUT,
        "Bot and agent messages delivered, per channel"
    );
    metrics::describe_counter!(
        DELIVERY_FAILURES,
        "Failed delivery attempts, per channel and outcome (retry, dead; transcript: a message \
         without an outbox row that could not be published, left to the client's replay)"
    );
    metrics::describe_histogram!(
        PIPELINE_SECONDS,
        "Time of one bot turn, from picking the message up to committing the reply"
    );
    metrics::describe_gauge!(OUTBOX_BACKLOG, "Deliveries waiting in the outbox");
    metrics::describe_gauge!(OUTBOX_DEAD, "Deliveries that gave up (dead letters)");
    metrics::describe_gauge!(OPEN_SOCKETS, "Open web chat sockets");
    metrics::describe_counter!(REJECTED, "Requests refused, per error code");
    metrics::describe_counter!(HANDOFFS, "Conversations handed to a person, per rule");
    metrics::describe_counter!(
        ASSIGNMENTS,
        "Conversations assigned to agents, per way (queue, take, transfer)"
    );
    metrics::describe_histogram!(
        QUEUE_WAIT_SECONDS,
        "Time from entering the queue to an agent taking it"
    );
    metrics::describe_gauge!(QUEUED, "Conversations waiting for a person");
    metrics::describe_gauge!(AGENTS_ONLINE, "Agents online");
    metrics::describe_counter!(
        SATISFACTION_RATINGS,
        "Satisfaction ratings given, per rating (1-5)"
    );
    Ok(HANDLE.get_or_init(|| handle).clone())
}
