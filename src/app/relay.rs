//! The relays that feed the event bus from the layers below it: the sessions' own events
//! (status, QR, connected) and the journal's `message.status` events, which also go to the
//! webhook outbox. They live here, where every handle is wired, so that the bus
//! (`crate::events`) depends on nothing but the domain.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::events::{EventBus, EventKind, GatewayEvent};

/// Publishes the sessions' own events (status, QR, connected) on the bus until shutdown.
pub(crate) async fn forward_session_events(
    bus: EventBus,
    mut events: broadcast::Receiver<crate::session::SessionEvent>,
    sessions: crate::session::SessionManager,
    shutdown: crate::shutdown::Shutdown,
) {
    use crate::session::SessionEventKind as Kind;
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.recv() => event,
        };
        let event = match event {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "event bus fell behind the sessions' events");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let session = event.session.as_str();
        // What another gateway of the fleet saw happen is shown here, but it fed the webhooks.
        let publish = |kind: EventKind, data: serde_json::Value| {
            if event.mirrored { bus.publish_here(kind, session, data) } else { bus.publish(kind, session, data) }
        };
        match event.kind {
            Kind::Status { status, reason } => {
                publish(EventKind::SessionStatus, serde_json::json!({"status": status, "reason": reason}))
            }
            Kind::Qr(qr) => {
                let png = crate::session::qr_data_url(&qr.code).ok();
                publish(
                    EventKind::SessionQr,
                    serde_json::json!({"qr": qr.code, "qrPng": png, "expiresAt": qr.expires_at}),
                );
            }
            Kind::Connected { account, new_link } => publish(
                EventKind::SessionConnected,
                serde_json::json!({
                    "me": account,
                    "phone": account.phone,
                    "jid": account.jid,
                    "lid": account.lid,
                    "pushName": account.push_name,
                    "connectedAt": crate::domain::now_ms(),
                    "newLink": new_link,
                    "metadata": sessions.get(&event.session).and_then(|s| s.metadata),
                }),
            ),
            Kind::LoggedOut => publish(EventKind::SessionLoggedOut, serde_json::json!({})),
        }
    }
}

/// How long the status drain lets commits gather before handing their events over.
const COALESCE: std::time::Duration = std::time::Duration::from_millis(20);

/// Hands the journal's `message.status` events (written in the same transaction as the status
/// they report) to the webhook outbox and to live subscribers, then deletes them from the
/// journal. A crash between the two hands them over again: at least once, same event id (the
/// outbox ignores an event it already has).
pub(crate) async fn drain_status_events(
    journal: crate::journal::Journal,
    webhooks: crate::webhooks::Webhooks,
    bus: EventBus,
    shutdown: crate::shutdown::Shutdown,
) {
    loop {
        let recorded = match journal.status_events(0, 512).await {
            Ok(recorded) => recorded,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read message.status events");
                Vec::new()
            }
        };
        if recorded.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = journal.committed() => {
                    // Let a few commits gather: one hand-over for many events, not one per
                    // commit (at thousands of messages a second this is what keeps it cheap).
                    tokio::time::sleep(COALESCE).await;
                    continue;
                }
                // A fallback should a wake-up be missed after an error.
                () = tokio::time::sleep(std::time::Duration::from_secs(5)) => continue,
            }
        }
        // Exactly these are deleted once handed over: on Postgres, an event with a lower seq may
        // commit after this read (its transaction began first), and is left for the next one.
        let handed: Vec<i64> = recorded.iter().map(|e| e.seq).collect();
        let events: Vec<Arc<GatewayEvent>> = recorded
            .into_iter()
            .map(|e| {
                Arc::new(GatewayEvent {
                    id: e.event_id,
                    event: EventKind::MessageStatus,
                    session_id: e.session_id,
                    timestamp: e.at,
                    data: serde_json::json!({
                        "messageId": e.message_id,
                        "status": e.status,
                        "type": e.kind,
                        "lastError": e.last_error,
                    }),
                })
            })
            .collect();
        if let Err(e) = webhooks.enqueue(events.clone()).await {
            tracing::error!(error = %e, "cannot write message.status events to the webhook outbox");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
            }
        }
        for event in events {
            bus.publish_recorded(event);
        }
        if let Err(e) = journal.delete_status_events(&handed).await {
            tracing::warn!(error = %e, "cannot delete handed-over message.status events");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    }
}
