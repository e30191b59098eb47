//! A registered device logs in: `<success>` or `<failure reason="401">`, then the `active` IQ
//! that releases its offline queue (with every message an earlier connection never acknowledged)
//! and the `<ib><offline>` marker the client waits for.

use rand::RngExt as _;
use wacore_binary::builder::NodeBuilder;
use waproto::whatsapp as wa;

use crate::conn::{Conn, ConnError, Role};
use crate::routing;
use crate::shared::FakeEvent;
use crate::stanza::{self, SERVER};
use crate::state::{DeviceKey, Outbound, unix_secs};

pub(crate) async fn login(conn: &mut Conn, noise_key: [u8; 32], payload: &wa::ClientPayload) -> Result<(), ConnError> {
    let (Some(username), Some(device)) = (payload.username, payload.device) else {
        return Err(ConnError::Protocol("login payload without username/device".into()));
    };
    let key = DeviceKey { phone: username.to_string(), device: u16::try_from(device).unwrap_or(u16::MAX) };
    let mut replaced = false;
    let outcome = {
        let mut reg = conn.shared.lock();
        let previous = match reg.devices.get_mut(&key) {
            Some(d) if !d.removed && d.noise_key == noise_key => {
                let previous = d.conn.replace(conn.id);
                Ok((d.lid.clone(), previous))
            }
            _ => Err(()),
        };
        if let Ok((_, previous)) = &previous {
            if let Some(entry) = reg.conns.get_mut(&conn.id) {
                entry.device = Some(key.clone());
            }
            // A second login with the same credentials replaces the first, as on WhatsApp.
            if let Some(old) = previous
                && *old != conn.id
            {
                reg.send_to_conn(*old, Outbound::NodeThenClose(stanza::stream_error_conflict("replaced")));
                replaced = true;
            }
        }
        previous.map(|(lid, _)| lid)
    };
    if replaced {
        tracing::info!(device = %key.jid(), "a second login replaced the first (conflict type=replaced)");
        conn.shared.count_replaced();
        conn.shared.emit(FakeEvent::Replaced { jid: key.jid().to_string() });
    }
    match outcome {
        Ok(lid) => {
            conn.role = Role::Device(key.clone());
            tracing::info!(device = %key.jid(), "device logged in");
            conn.shared.emit(FakeEvent::DeviceLoggedIn { jid: key.jid().to_string() });
            let now = unix_secs().to_string();
            let success = NodeBuilder::new("success")
                .attr("t", now.clone())
                .attr("lid", lid)
                .attr("props", "1")
                .attr("abprops", "1")
                .attr("location", "fake")
                .attr("creation", now)
                .build();
            conn.send(&success).await
        }
        Err(()) => {
            tracing::info!(device = %key.jid(), "login refused: unknown or removed device");
            conn.send(&stanza::failure(401)).await?;
            conn.closing = true;
            Ok(())
        }
    }
}

/// `<iq xmlns="passive"><active/>`: answer, flush what queued while the device was away, send
/// the offline marker, and on a first login let the phone share its app-state keys.
pub(crate) async fn on_active(conn: &mut Conn, id: &str) -> Result<(), ConnError> {
    conn.send(&stanza::iq_result(id, vec![])).await?;
    let Some(key) = conn.device().cloned() else { return Ok(()) };
    let (queued, share) = {
        let mut reg = conn.shared.lock();
        match reg.devices.get_mut(&key) {
            Some(d) => (d.take_login_backlog(), d.needs_key_share),
            None => return Ok(()),
        }
    };
    let count = queued.len();
    for (mut node, again) in queued {
        node.attrs.insert("offline", "1");
        conn.send(&node).await?;
        if again && let Some(id) = stanza::attr(&node, "id") {
            conn.shared.announce_redelivery(&key, id.into_owned());
        }
    }
    let marker = NodeBuilder::new("ib")
        .attr("from", SERVER)
        .children([NodeBuilder::new("offline").attr("count", count.to_string()).build()])
        .build();
    conn.send(&marker).await?;
    if share {
        share_app_state_keys(conn, &key).await;
    }
    Ok(())
}

/// The primary phone sends the new companion its app-state sync key, so the client does not wait
/// ten seconds for it before its first `Connected`. It goes again on every login until the
/// companion's `peer_msg` receipt for it arrives (`routing::on_receipt`): right after pairing the
/// client may still drop the first connection it logs in on, and the share with it.
async fn share_app_state_keys(conn: &mut Conn, key: &DeviceKey) {
    let key_id: [u8; 6] = rand::rng().random();
    let key_data: [u8; 32] = rand::rng().random();
    let message = wa::Message {
        protocol_message: buffa::MessageField::some(wa::message::ProtocolMessage {
            r#type: Some(wa::message::protocol_message::Type::AppStateSyncKeyShare),
            app_state_sync_key_share: buffa::MessageField::some(wa::message::AppStateSyncKeyShare {
                keys: vec![wa::message::AppStateSyncKey {
                    key_id: buffa::MessageField::some(wa::message::AppStateSyncKeyId { key_id: Some(key_id.to_vec()) }),
                    key_data: buffa::MessageField::some(wa::message::AppStateSyncKeyData {
                        key_data: Some(key_data.to_vec()),
                        fingerprint: buffa::MessageField::some(wa::message::AppStateSyncKeyFingerprint {
                            raw_id: Some(1),
                            current_index: Some(0),
                            device_indexes: vec![0],
                        }),
                        timestamp: Some(unix_secs() as i64 * 1000),
                    }),
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = conn.shared.next_message_id();
    if let Some(device) = conn.shared.lock().devices.get_mut(key) {
        device.key_share_id = Some(id.clone());
    }
    if let Err(e) = routing::phone_to_device(&conn.shared, &key.phone, key, &message, &id).await {
        tracing::warn!(device = %key.jid(), error = %e, "app-state key share failed");
    }
}
