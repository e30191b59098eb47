//! Small helpers to read and build binary-XML stanzas.

use std::borrow::Cow;

use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node, NodeContent};

/// The server's JID, the `from` of everything the server itself says.
pub(crate) const SERVER: &str = "s.whatsapp.net";

pub(crate) fn attr<'a>(node: &'a Node, key: &str) -> Option<Cow<'a, str>> {
    node.attrs.get(key).map(|v| v.as_str())
}

pub(crate) fn jid_attr(node: &Node, key: &str) -> Option<Jid> {
    node.attrs.get(key).and_then(|v| v.to_jid())
}

pub(crate) fn bytes(node: &Node) -> Option<&[u8]> {
    match &node.content {
        Some(NodeContent::Bytes(b)) => Some(b),
        _ => None,
    }
}

pub(crate) fn text(node: &Node) -> Option<String> {
    match &node.content {
        Some(NodeContent::String(s)) => Some(s.to_string()),
        Some(NodeContent::Bytes(b)) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

/// Big-endian unsigned integer of up to 4 bytes (registration ids, key ids).
pub(crate) fn be_uint(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || bytes.len() > 4 {
        return None;
    }
    Some(bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

pub(crate) fn be3(value: u32) -> Vec<u8> {
    value.to_be_bytes()[1..].to_vec()
}

pub(crate) fn child_bytes<'a>(node: &'a Node, tag: &str) -> Option<&'a [u8]> {
    node.get_optional_child(tag).and_then(bytes)
}

pub(crate) fn key32(bytes: &[u8]) -> Option<[u8; 32]> {
    // Some fields carry a 0x05 type prefix in front of the Curve25519 key.
    match bytes.len() {
        32 => bytes.try_into().ok(),
        33 if bytes[0] == 5 => bytes[1..].try_into().ok(),
        _ => None,
    }
}

pub(crate) fn iq_result(id: &str, children: Vec<Node>) -> Node {
    let builder = NodeBuilder::new("iq").attr("from", SERVER).attr("type", "result").attr("id", id.to_owned());
    if children.is_empty() { builder.build() } else { builder.children(children).build() }
}

pub(crate) fn iq_error(id: &str, code: u16, text: &str) -> Node {
    NodeBuilder::new("iq")
        .attr("from", SERVER)
        .attr("type", "error")
        .attr("id", id.to_owned())
        .children([NodeBuilder::new("error").attr("code", code.to_string()).attr("text", text.to_owned()).build()])
        .build()
}

pub(crate) fn stream_error_code(code: &str) -> Node {
    NodeBuilder::new("stream:error").attr("code", code.to_owned()).build()
}

pub(crate) fn stream_error_conflict(kind: &str) -> Node {
    NodeBuilder::new("stream:error")
        .children([NodeBuilder::new("conflict").attr("type", kind.to_owned()).build()])
        .build()
}

pub(crate) fn failure(reason: u16) -> Node {
    NodeBuilder::new("failure").attr("reason", reason.to_string()).build()
}

/// Lower-case hex of `bytes` (hashes in admin records, ids).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
