//! Key distribution: prekey uploads and counts, prekey bundles, and usync (device lists,
//! contacts, LIDs).

use buffa::Message as _;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};
use waproto::whatsapp as wa;

use crate::phone::PreKeyBundleData;
use crate::shared::Shared;
use crate::stanza::{self, be3};
use crate::state::{DeviceKey, Registry, unix_secs};

/// `xmlns="encrypt"`: uploads, rotation, counts, bundles, digest.
pub(crate) async fn encrypt_iq(shared: &Shared, me: Option<DeviceKey>, node: &Node, id: &str, kind: &str) -> Node {
    let Some(me) = me else { return stanza::iq_result(id, vec![]) };
    if node.get_optional_child("digest").is_some() {
        // "No digest here": the client carries on without re-uploading.
        return stanza::iq_error(id, 503, "service-unavailable");
    }
    if kind == "get" && node.get_optional_child("count").is_some() {
        let reg = shared.lock();
        let count = reg.devices.get(&me).map_or(0, |d| d.prekeys.len());
        return stanza::iq_result(id, vec![NodeBuilder::new("count").attr("value", count.to_string()).build()]);
    }
    if kind == "get"
        && let Some(key) = node.get_optional_child("key")
    {
        let wanted: Vec<Jid> = key.get_children_by_tag("user").filter_map(|u| stanza::jid_attr(u, "jid")).collect();
        let mut users = Vec::with_capacity(wanted.len());
        for jid in &wanted {
            users.push(bundle_node(shared, jid).await);
        }
        return stanza::iq_result(id, vec![NodeBuilder::new("list").children(users).build()]);
    }
    if kind == "set" {
        let mut reg = shared.lock();
        if let Some(device) = reg.devices.get_mut(&me) {
            if let Some(list) = node.get_optional_child("list") {
                for key in list.get_children_by_tag("key") {
                    if let Some(pair) = prekey(key) {
                        device.prekeys.push_back(pair);
                    }
                }
            }
            let skey = node
                .get_optional_child("skey")
                .or_else(|| node.get_optional_child("rotate").and_then(|r| r.get_optional_child("skey")));
            if let Some(skey) = skey
                && let (Some((id, value)), Some(sig)) =
                    (prekey(skey), stanza::child_bytes(skey, "signature").and_then(|s| <[u8; 64]>::try_from(s).ok()))
            {
                device.registration.signed_prekey_id = id;
                device.registration.signed_prekey = value;
                device.registration.signed_prekey_signature = sig;
            }
            if let Some(identity) = stanza::child_bytes(node, "identity").and_then(stanza::key32) {
                device.registration.identity = identity;
            }
            if let Some(regid) = stanza::child_bytes(node, "registration").and_then(stanza::be_uint) {
                device.registration.registration_id = regid;
            }
        }
    }
    stanza::iq_result(id, vec![])
}

fn prekey(node: &Node) -> Option<(u32, [u8; 32])> {
    let id = stanza::child_bytes(node, "id").and_then(stanza::be_uint)?;
    let value = stanza::child_bytes(node, "value").and_then(stanza::key32)?;
    Some((id, value))
}

/// The bundle of the device `jid` names, phone-number or LID addressed, answered under the JID
/// it was asked for.
async fn bundle_node(shared: &Shared, jid: &Jid) -> Node {
    if jid.is_pn() && jid.device == 0 {
        shared.ensure_phone(&jid.user);
    }
    let (bundle, identity) = {
        let mut reg = shared.lock();
        let Some(key) = reg.device_key_of(jid).filter(|k| reg.is_registered(&k.phone)) else {
            return user_error(jid);
        };
        if key.device == 0 {
            match reg.phones.get(&key.phone) {
                Some(phone) => (Err(phone.device0.clone()), None),
                None => return user_error(jid),
            }
        } else {
            match reg.devices.get_mut(&key) {
                Some(d) if !d.removed => (Ok(d.bundle()), Some(d.adv_identity.clone())),
                _ => return user_error(jid),
            }
        }
    };
    let bundle = match bundle {
        Ok(bundle) => bundle,
        Err(device0) => device0.lock().await.bundle(),
    };
    let mut children = bundle_children(&bundle);
    if let Some(identity) = identity {
        children.push(NodeBuilder::new("device-identity").bytes(identity).build());
    }
    NodeBuilder::new("user").attr("jid", jid.clone()).children(children).build()
}

fn user_error(jid: &Jid) -> Node {
    NodeBuilder::new("user")
        .attr("jid", jid.clone())
        .children([NodeBuilder::new("error").attr("code", "406").attr("text", "not-acceptable").build()])
        .build()
}

fn bundle_children(b: &PreKeyBundleData) -> Vec<Node> {
    let mut out = vec![
        NodeBuilder::new("registration").bytes(b.registration_id.to_be_bytes().to_vec()).build(),
        NodeBuilder::new("type").bytes(vec![5]).build(),
        NodeBuilder::new("identity").bytes(b.identity_key.to_vec()).build(),
        NodeBuilder::new("skey")
            .children([
                NodeBuilder::new("id").bytes(be3(b.signed_prekey_id)).build(),
                NodeBuilder::new("value").bytes(b.signed_prekey.to_vec()).build(),
                NodeBuilder::new("signature").bytes(b.signed_prekey_signature.to_vec()).build(),
            ])
            .build(),
    ];
    if let Some((id, value)) = b.one_time_prekey {
        out.push(
            NodeBuilder::new("key")
                .children([
                    NodeBuilder::new("id").bytes(be3(id)).build(),
                    NodeBuilder::new("value").bytes(value.to_vec()).build(),
                ])
                .build(),
        );
    }
    out
}

/// One `<user>` of a usync query: the phone it names and the JID to answer under.
struct Queried {
    phone: String,
    /// The JID the user was asked by (a LID stays a LID), or the phone-number JID for a
    /// `<contact>` query.
    jid: Jid,
}

fn queried_user(reg: &Registry, user: &Node) -> Option<Queried> {
    if let Some(jid) = stanza::jid_attr(user, "jid") {
        // A LID we never handed out, or garbage, gets no answer.
        let phone = reg.phone_of(&jid)?;
        return Some(Queried { phone, jid: jid.to_non_ad() });
    }
    let contact = user.get_optional_child("contact").and_then(stanza::text)?;
    let phone: String = contact.chars().filter(char::is_ascii_digit).collect();
    if phone.is_empty() {
        return None;
    }
    Some(Queried { jid: Jid::pn(phone.clone()), phone })
}

/// `xmlns="usync"`: answers each requested protocol (`contact`, `lid`, `devices`) for each
/// requested user, whether it was asked by phone number, contact or LID.
pub(crate) fn usync(shared: &Shared, node: &Node, id: &str) -> Node {
    let Some(usync) = node.get_optional_child("usync") else { return stanza::iq_result(id, vec![]) };
    let protocols: Vec<String> = usync
        .get_optional_child("query")
        .and_then(|q| q.children())
        .map(|c| c.iter().map(|n| n.tag.to_string()).collect())
        .unwrap_or_default();
    let users: Vec<&Node> =
        usync.get_optional_child("list").map(|l| l.get_children_by_tag("user").collect()).unwrap_or_default();
    let queried: Vec<Queried> = {
        let reg = shared.lock();
        users.iter().filter_map(|user| queried_user(&reg, user)).collect()
    };
    if protocols.iter().any(|p| p == "devices" || p == "lid") {
        // Every number is on WhatsApp (unless listed otherwise), so it has a LID and a phone.
        for user in &queried {
            shared.ensure_phone(&user.phone);
        }
    }
    let mut reg = shared.lock();
    let mut out = Vec::with_capacity(queried.len());
    for Queried { phone, jid } in queried {
        let registered = reg.is_registered(&phone);
        let mut children = Vec::new();
        for protocol in &protocols {
            match protocol.as_str() {
                "contact" => children
                    .push(NodeBuilder::new("contact").attr("type", if registered { "in" } else { "out" }).build()),
                "lid" if registered => {
                    if let Some(lid) = reg.lid_user(&phone) {
                        children.push(NodeBuilder::new("lid").attr("val", Jid::lid(lid.to_owned())).build());
                    }
                }
                "devices" if registered => children.push(devices_node(&mut reg, &phone)),
                _ => {}
            }
        }
        let mut user = NodeBuilder::new("user").attr("jid", jid.clone());
        if jid.is_lid() && protocols.iter().any(|p| p == "lid") {
            // Asked by LID, WhatsApp names the phone number beside it.
            user = user.attr("pn_jid", Jid::pn(phone));
        }
        out.push(user.children(children).build());
    }
    let sid = stanza::attr(usync, "sid").map(|s| s.into_owned()).unwrap_or_default();
    stanza::iq_result(
        id,
        vec![
            NodeBuilder::new("usync")
                .attr("sid", sid)
                .attr("mode", "query")
                .attr("last", "true")
                .attr("index", "0")
                .children([NodeBuilder::new("list").children(out).build()])
                .build(),
        ],
    )
}

/// `[0, companions…]` with the signed key-index list companions require.
fn devices_node(reg: &mut Registry, phone: &str) -> Node {
    reg.phone(phone);
    let companions: Vec<(u16, u32)> = reg.companions(phone).iter().map(|d| (d.key.device, d.key_index)).collect();
    let mut list = vec![NodeBuilder::new("device").attr("id", "0").build()];
    for (device, key_index) in &companions {
        list.push(
            NodeBuilder::new("device").attr("id", device.to_string()).attr("key-index", key_index.to_string()).build(),
        );
    }
    let mut children =
        vec![NodeBuilder::new("device-list").attr("hash", format!("2:{}", companions.len())).children(list).build()];
    if !companions.is_empty() {
        let valid: Vec<u32> = companions.iter().map(|(_, k)| *k).collect();
        let current = valid.iter().copied().max().unwrap_or(0);
        let signed = wa::ADVSignedKeyIndexList {
            details: Some(
                wa::ADVKeyIndexList {
                    raw_id: Some(1),
                    timestamp: Some(unix_secs()),
                    current_index: Some(current),
                    valid_indexes: valid,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            ..Default::default()
        }
        .encode_to_vec();
        children.push(NodeBuilder::new("key-index-list").attr("ts", unix_secs().to_string()).bytes(signed).build());
    }
    NodeBuilder::new("devices").children(children).build()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! The client's own usync parsers are the oracle for what the fake answers.

    use super::*;
    use crate::media::MediaStore;
    use crate::noise::ServerIdentity;
    use crate::shared::SharedParts;
    use tokio_util::sync::CancellationToken;
    use wacore::iq::spec::IqSpec;
    use wacore::iq::usync::{DeviceListSpec, LidQuerySpec};

    fn shared() -> Shared {
        Shared::new(SharedParts {
            identity: ServerIdentity::generate().expect("identity"),
            unregistered: vec!["15550099".into()],
            media: MediaStore::new(),
            media_host: "127.0.0.1:1".into(),
            media_auth: "auth".into(),
            cancel: CancellationToken::new(),
        })
    }

    fn query(protocols: &[&'static str], users: &[Jid]) -> Node {
        let usync = NodeBuilder::new("usync")
            .attr("sid", "s1")
            .attr("mode", "query")
            .attr("context", "background")
            .children([
                NodeBuilder::new("query").children(protocols.iter().map(|p| NodeBuilder::new(p).build())).build(),
                NodeBuilder::new("list")
                    .children(users.iter().map(|u| NodeBuilder::new("user").attr("jid", u.clone()).build()))
                    .build(),
            ])
            .build();
        NodeBuilder::new("iq").attr("xmlns", "usync").attr("type", "get").children([usync]).build()
    }

    #[test]
    fn the_lid_protocol_maps_every_registered_number_to_its_lid() {
        let shared = shared();
        let users = [Jid::pn("15550002"), Jid::pn("15550099")];
        let answer = usync(&shared, &query(&["lid"], &users), "1");
        let parsed = LidQuerySpec::new(users.to_vec(), "s1").parse_response(&answer.as_node_ref()).expect("parses");
        let lid = shared.lock().lid_user("15550002").expect("a LID").to_owned();
        assert_eq!(parsed.lid_mappings.len(), 1, "the unregistered number has none");
        assert_eq!(parsed.lid_mappings[0].phone_number.as_str(), "15550002");
        assert_eq!(parsed.lid_mappings[0].lid.as_str(), lid);

        // Asked by LID, the answer names the phone number beside it.
        let by_lid = [Jid::lid(lid.clone())];
        let answer = usync(&shared, &query(&["lid"], &by_lid), "2");
        let parsed = LidQuerySpec::new(by_lid.to_vec(), "s1").parse_response(&answer.as_node_ref()).expect("parses");
        assert_eq!(parsed.lid_mappings[0].phone_number.as_str(), "15550002");
    }

    #[test]
    fn device_lists_answer_a_lid_as_a_lid() {
        let shared = shared();
        shared.ensure_phone("15550002");
        let lid = Jid::lid(shared.lock().lid_user("15550002").expect("a LID").to_owned());
        let answer = usync(&shared, &query(&["devices"], std::slice::from_ref(&lid)), "3");
        let spec = DeviceListSpec::new(vec![lid.clone()], "s1").require_complete_response();
        let parsed = spec.parse_response(&answer.as_node_ref()).expect("a complete answer");
        assert_eq!(parsed.device_lists[0].user, lid);
        assert_eq!(parsed.device_lists[0].devices.len(), 1, "device 0 only");
        // A LID nobody was given gets no answer at all.
        let stranger = Jid::lid("999999");
        let answer = usync(&shared, &query(&["devices"], std::slice::from_ref(&stranger)), "4");
        assert!(DeviceListSpec::new(vec![stranger], "s1").parse_response(&answer.as_node_ref()).is_ok());
    }
}
