//! Prometheus metrics: the series names (spelled once, here) and the process-wide recorder. The
//! gauges computed at scrape time from the sessions and the queue are set by `api::metrics`.
//!
//! Counters and histograms are recorded where things happen (`metrics::counter!` in the queue,
//! the journal writer, the sessions); gauges that describe state (sessions by status, queue depth)
//! are set from the live registries when `/metrics` is scraped, so they can never drift.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests by `method`, `route` (the template, e.g. `/api/messages/{id}`) and `status`.
pub const HTTP_REQUESTS: &str = "gateway_http_requests_total";
/// Request duration by `method` and `route`.
pub const HTTP_DURATION: &str = "gateway_http_request_duration_seconds";
/// Sessions by `status`.
pub const SESSIONS: &str = "gateway_sessions";
/// Open `/ws/session/{id}` sockets.
pub const WS_OPEN: &str = "gateway_ws_session_sockets_open";
/// Messages waiting to be sent, by `session`.
pub const QUEUE_DEPTH: &str = "gateway_queue_depth_messages";
/// Bytes waiting to be sent, by `session`.
pub const QUEUE_BYTES: &str = "gateway_queue_depth_bytes";
/// Send attempts by `outcome` (`sent`, `retry`, `failed`) and `session`.
pub const SENDS: &str = "gateway_sends_total";
/// From accepted (202) to acknowledged by WhatsApp's server.
pub const ACCEPTED_TO_SENT: &str = "gateway_message_accepted_to_sent_seconds";
/// From acknowledged by the server to delivered to the recipient's phone.
pub const SENT_TO_DELIVERED: &str = "gateway_message_sent_to_delivered_seconds";
/// Connections of a linked session that came back after a drop, by `session`.
pub const RECONNECTS: &str = "gateway_session_reconnects_total";
/// Duration of one journal transaction (the fsync included).
pub const JOURNAL_COMMIT_SECONDS: &str = "gateway_journal_commit_duration_seconds";
/// Commands group-committed in one journal transaction.
pub const JOURNAL_BATCH_SIZE: &str = "gateway_journal_commit_batch_size";
/// Received messages stored (new ones; redeliveries are not counted).
pub const INBOUND_STORED: &str = "gateway_inbound_messages_total";
/// Received messages lost because the inbox could not keep up.
pub const INBOUND_DROPPED: &str = "gateway_inbound_dropped_total";
/// Received messages the inbox could not store: left unacknowledged, so that WhatsApp delivers
/// them again on the next login.
pub const INBOUND_NOT_KEPT: &str = "gateway_inbound_not_kept_total";
/// Webhook deliveries by outcome (`delivered`, `retry`, `dead`, `gone`, `outbox_full`).
pub const WEBHOOK_DELIVERIES: &str = "gateway_webhook_deliveries_total";
/// Time to post one webhook delivery.
pub const WEBHOOK_SECONDS: &str = "gateway_webhook_delivery_seconds";
/// Pending webhook deliveries per endpoint.
pub const WEBHOOK_OUTBOX: &str = "gateway_webhook_outbox_depth";
/// Receive → stored → pushed, per received message.
pub const INBOUND_LATENCY: &str = "gateway_inbound_store_seconds";
/// Connections refused at once, by `reason`: `per_ip` (over `HTTP_MAX_CONNECTIONS_PER_IP`).
pub const CONNECTIONS_REFUSED: &str = "gateway_connections_refused_total";
/// WebSockets closed by the gateway because their pongs stopped.
pub const WS_PING_TIMEOUTS: &str = "gateway_ws_ping_timeouts_total";
/// Claims of a number's lease (on Postgres), by `outcome`: `claimed`, `held_elsewhere`,
/// `over_share` (this gateway runs its share already), `error`.
pub const LEASE_CLAIMS: &str = "gateway_lease_claims_total";
/// Renewals of held leases, by `outcome`: `renewed`, `error`, `lost` (taken over), `expired`
/// (no renewal in time: the client was stopped).
pub const LEASE_RENEWALS: &str = "gateway_lease_renewals_total";
/// How long a lease renewal took.
pub const LEASE_RENEWAL_SECONDS: &str = "gateway_lease_renewal_seconds";
/// Numbers this gateway stopped running, by `reason`: `rebalance` (handed over to a gateway with
/// room), `shutdown` (released on a clean stop), `lost` (the lease was taken over or not renewed
/// in time).
pub const LEASE_HANDOFFS: &str = "gateway_lease_handoffs_total";
/// Writes refused because the lease they were made under is no longer this gateway's.
pub const FENCING_REFUSALS: &str = "gateway_fencing_refusals_total";
/// The numbers whose lease this gateway holds.
pub const FLEET_SESSIONS_OWNED: &str = "gateway_fleet_sessions_owned";
/// The live gateways of the fleet, this one included, as this gateway last counted them.
pub const FLEET_GATEWAYS: &str = "gateway_fleet_gateways";
/// This gateway's own message events that did not go to the fleet's other gateways, by
/// `reason`: `backlog` (the fan-out fell behind), `too_large` (one event over 256 KiB of JSON),
/// `error` (the database refused the `NOTIFY`).
pub const FLEET_EVENTS_UNSENT: &str = "gateway_fleet_events_unsent_total";
/// Batches of other gateways' events this gateway never received whole (its listener was
/// reconnecting, or fell behind): their events are missing from its `/ws/events`.
pub const FLEET_EVENT_BATCHES_MISSED: &str = "gateway_fleet_event_batches_missed_total";
/// Always 1, labelled with this gateway's `gateway` id (with `DATABASE_URL`): joins the other
/// series to the gateway that reported them.
pub const GATEWAY_INFO: &str = "gateway_info";

const SECONDS_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The process-wide recorder, installed on first use. The `metrics` facade has one global
/// recorder, so every gateway in a process (tests run several) shares it.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(JOURNAL_BATCH_SIZE.into()), BATCH_BUCKETS));
            match builder {
                Ok(builder) => {
                    let recorder = builder.build_recorder();
                    let handle = recorder.handle();
                    if metrics::set_global_recorder(recorder).is_err() {
                        tracing::warn!("another metrics recorder is installed; /metrics will be empty");
                    }
                    describe();
                    handle
                }
                // Only an empty bucket list fails, and ours are constants.
                Err(e) => {
                    tracing::error!(error = %e, "metrics buckets rejected");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests by method, route template and status");
    metrics::describe_histogram!(HTTP_DURATION, metrics::Unit::Seconds, "HTTP request duration");
    metrics::describe_gauge!(SESSIONS, "Sessions by status");
    metrics::describe_gauge!(WS_OPEN, "Open /ws/session sockets");
    metrics::describe_counter!(CONNECTIONS_REFUSED, "Connections refused at once, by reason");
    metrics::describe_counter!(WS_PING_TIMEOUTS, "WebSockets closed because their pongs stopped");
    metrics::describe_gauge!(QUEUE_DEPTH, "Messages waiting to be sent, per session");
    metrics::describe_gauge!(QUEUE_BYTES, metrics::Unit::Bytes, "Bytes waiting to be sent, per session");
    metrics::describe_counter!(SENDS, "Send attempts by outcome (sent, retry, failed) and session");
    metrics::describe_histogram!(ACCEPTED_TO_SENT, metrics::Unit::Seconds, "Accepted to acknowledged by WhatsApp");
    metrics::describe_histogram!(SENT_TO_DELIVERED, metrics::Unit::Seconds, "Acknowledged to delivered");
    metrics::describe_counter!(RECONNECTS, "Reconnections of linked sessions");
    metrics::describe_histogram!(JOURNAL_COMMIT_SECONDS, metrics::Unit::Seconds, "Journal transaction duration");
    metrics::describe_histogram!(JOURNAL_BATCH_SIZE, "Commands per journal transaction");
    metrics::describe_counter!(LEASE_CLAIMS, "Claims of numbers' leases by outcome (Postgres fleets)");
    metrics::describe_counter!(LEASE_RENEWALS, "Lease renewals by outcome (renewed, error, lost, expired)");
    metrics::describe_histogram!(LEASE_RENEWAL_SECONDS, metrics::Unit::Seconds, "Lease renewal duration");
    metrics::describe_counter!(LEASE_HANDOFFS, "Numbers this gateway stopped running, by reason");
    metrics::describe_counter!(FENCING_REFUSALS, "Writes refused because their lease is no longer held");
    metrics::describe_gauge!(FLEET_SESSIONS_OWNED, "Numbers whose lease this gateway holds");
    metrics::describe_gauge!(FLEET_GATEWAYS, "Live gateways of the fleet, as counted here");
    metrics::describe_gauge!(GATEWAY_INFO, "This gateway's id in the fleet, as a label");
    metrics::describe_counter!(FLEET_EVENTS_UNSENT, "Own message events not sent to the fleet, by reason");
    metrics::describe_counter!(FLEET_EVENT_BATCHES_MISSED, "Batches of other gateways' events never received whole");
    // Present from the start, so a dashboard sees 0 rather than nothing.
    metrics::counter!(RECONNECTS).absolute(0);
    metrics::gauge!(WS_OPEN).set(0.0);
}
