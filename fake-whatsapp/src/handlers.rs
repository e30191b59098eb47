//! Dispatch of the stanzas a logged-in (or pairing) client sends, and the small IQ answers.

use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use crate::conn::{Conn, ConnError, Role};
use crate::stanza;
use crate::{keys, login, pair_code, pairing, routing};

pub(crate) async fn dispatch(conn: &mut Conn, node: Node) -> Result<(), ConnError> {
    match node.tag.as_ref() {
        "iq" => iq(conn, &node).await,
        "message" if matches!(conn.role, Role::Device(_)) => routing::on_message(conn, &node).await,
        "receipt" if matches!(conn.role, Role::Device(_)) => routing::on_receipt(conn, &node).await,
        "ack" if matches!(conn.role, Role::Device(_)) => {
            routing::on_ack(conn, &node);
            Ok(())
        }
        "ack" | "presence" | "ib" | "chatstate" | "notification" | "call" | "receipt" | "message" => Ok(()),
        other => {
            tracing::debug!(conn = conn.id, tag = other, "ignoring stanza");
            Ok(())
        }
    }
}

async fn iq(conn: &mut Conn, node: &Node) -> Result<(), ConnError> {
    let Some(id) = stanza::attr(node, "id").map(|s| s.into_owned()) else {
        return Ok(());
    };
    let kind = stanza::attr(node, "type").map(|s| s.into_owned()).unwrap_or_default();
    if kind == "result" || kind == "error" {
        pairing::on_iq_answer(conn, node).await?;
        return Ok(());
    }
    let xmlns = stanza::attr(node, "xmlns").map(|s| s.into_owned()).unwrap_or_default();
    if xmlns == "md"
        && kind == "set"
        && let Some(reg_node) = node.get_optional_child("link_code_companion_reg")
    {
        return pair_code::on_companion_reg(conn, reg_node, &id).await;
    }
    if matches!(conn.role, Role::Pairing) {
        // Before linking the client only pings; anything else gets an empty result.
        return conn.send(&stanza::iq_result(&id, vec![])).await;
    }
    let reply = match xmlns.as_str() {
        "passive" if node.get_optional_child("active").is_some() => {
            return login::on_active(conn, &id).await;
        }
        "encrypt" => keys::encrypt_iq(&conn.shared, conn.device().cloned(), node, &id, &kind).await,
        "usync" => keys::usync(&conn.shared, node, &id),
        "w:m" if node.get_optional_child("media_conn").is_some() => media_conn(conn, &id),
        "w:sync:app:state" => app_state(node, &id),
        "md" if node.get_optional_child("remove-companion-device").is_some() => {
            if let Some(key) = conn.device().cloned() {
                let mut reg = conn.shared.lock();
                if let Some(device) = reg.devices.get_mut(&key) {
                    device.removed = true;
                    tracing::info!(device = %key.jid(), "device unlinked itself");
                }
            }
            stanza::iq_result(&id, vec![])
        }
        "abt" => {
            stanza::iq_result(&id, vec![NodeBuilder::new("props").attr("protocol", "1").attr("hash", "fake").build()])
        }
        "blocklist" => stanza::iq_result(&id, vec![NodeBuilder::new("list").build()]),
        "privacy" if kind == "get" => stanza::iq_result(&id, vec![NodeBuilder::new("privacy").build()]),
        // Keepalive (`w:p`) and everything we do not model: an empty result is always accepted.
        _ => stanza::iq_result(&id, vec![]),
    };
    conn.send(&reply).await
}

fn media_conn(conn: &Conn, id: &str) -> Node {
    stanza::iq_result(
        id,
        vec![
            NodeBuilder::new("media_conn")
                .attr("auth", conn.shared.media_auth.clone())
                .attr("ttl", "3600")
                .attr("auth_ttl", "3600")
                .attr("max_buckets", "12")
                .children([NodeBuilder::new("host").attr("hostname", conn.shared.media_host.clone()).build()])
                .build(),
        ],
    )
}

/// Echo every requested collection at version 0 with nothing in it: "synced". Leaving one out
/// would keep the client from ever reporting `Connected`.
fn app_state(node: &Node, id: &str) -> Node {
    let collections: Vec<Node> = node
        .get_optional_child("sync")
        .map(|sync| {
            sync.get_children_by_tag("collection")
                .filter_map(|c| stanza::attr(c, "name").map(|n| n.into_owned()))
                .map(|name| NodeBuilder::new("collection").attr("name", name).attr("version", "0").build())
                .collect()
        })
        .unwrap_or_default();
    stanza::iq_result(id, vec![NodeBuilder::new("sync").children(collections).build()])
}
