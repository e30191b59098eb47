//! Messages and receipts: fan-out from a linked device to the devices it addressed, virtual
//! phones that decrypt and record what reaches them, and messages a virtual phone sends.
//!
//! Every device has two addresses: its phone-number JID (`15550001:3@s.whatsapp.net`) and its
//! LID (`100000000000001:3@lid`). A client may address a message, its participants, a prekey
//! request or a receipt by either; the fake answers in the namespace it was addressed in and,
//! as WhatsApp does, names the other one beside it (`sender_pn` on a LID-addressed message,
//! `sender_lid` on a phone-number-addressed one). Virtual phones speak as their LID.

use sha2::{Digest, Sha256};
use wacore::download::MediaType;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};
use waproto::whatsapp as wa;

use crate::conn::{Conn, ConnError};
use crate::phone::{self, PhoneError};
use crate::shared::{FakeEvent, Shared};
use crate::stanza;
use crate::state::{
    DeviceKey, DocumentRecord, LocationRecord, MediaRecord, MessageKind, PhoneSent, ReactionRecord, ReceiptRecord,
    ReceivedMessage, Registry, unix_millis, unix_secs,
};

/// Why a virtual phone could not send.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("phone number {0} has no linked device to send to")]
    NoDevices(String),
    #[error("signal: {0}")]
    Phone(#[from] PhoneError),
    #[error("media: {0}")]
    Media(String),
    #[error("no virtual phone sent message {0} to this number")]
    UnknownMessage(String),
}

/// A `<message>` from a linked device.
pub(crate) async fn on_message(conn: &mut Conn, node: &Node) -> Result<(), ConnError> {
    let Some(sender) = conn.device().cloned() else { return Ok(()) };
    let (Some(id), Some(to)) = (stanza::attr(node, "id").map(|s| s.into_owned()), stanza::jid_attr(node, "to")) else {
        return Ok(());
    };
    let msg_type = stanza::attr(node, "type").map(|s| s.into_owned()).unwrap_or_else(|| "text".into());
    let identity = node.get_optional_child("device-identity").and_then(stanza::bytes).map(<[u8]>::to_vec);
    let push_name = stanza::attr(node, "notify").map(|s| s.into_owned()).unwrap_or_default();

    // Either a <participants> list of <to jid><enc/></to>, or a single <enc> for `to` itself.
    let mut targets: Vec<(Jid, &Node)> = Vec::new();
    if let Some(participants) = node.get_optional_child("participants") {
        for to_node in participants.get_children_by_tag("to") {
            if let (Some(jid), Some(enc)) = (stanza::jid_attr(to_node, "jid"), to_node.get_optional_child("enc")) {
                targets.push((jid, enc));
            }
        }
    } else {
        for enc in node.get_children_by_tag("enc") {
            targets.push((to.clone(), enc));
        }
    }

    let mut reached_phone = false;
    for (target, enc) in targets {
        let enc_type = stanza::attr(enc, "type").map(|s| s.into_owned()).unwrap_or_default();
        let Some(ciphertext) = stanza::bytes(enc) else { continue };
        let Some(key) = conn.shared.lock().device_key_of(&target) else {
            tracing::debug!(%target, id, "message part for an address nobody has, dropped");
            continue;
        };
        if key.device == 0 {
            if key.phone == sender.phone {
                // The copy for our own phone (a DeviceSentMessage): nothing to record.
                continue;
            }
            let recorded = phone_receives(&conn.shared, &key.phone, &sender, &id, &enc_type, ciphertext).await;
            reached_phone |= recorded;
        } else {
            let reg = conn.shared.lock();
            let from = reg.jid_like(&sender, &target);
            let mut builder = NodeBuilder::new("message")
                .attr("from", from)
                .attr("id", id.clone())
                .attr("type", msg_type.clone())
                .attr("t", unix_secs().to_string())
                .attr("notify", push_name.clone());
            if key.phone == sender.phone {
                builder = builder.attr("recipient", to.to_non_ad());
            } else {
                builder = with_sender_alt(builder, &reg, &sender.phone, &target);
            }
            drop(reg);
            let mut children = vec![enc.clone()];
            if let Some(identity) = &identity {
                children.push(NodeBuilder::new("device-identity").bytes(identity.clone()).build());
            }
            conn.shared.deliver(&key, builder.children(children).build());
        }
    }

    let ack = NodeBuilder::new("ack")
        .attr("class", "message")
        .attr("id", id.clone())
        .attr("from", to.to_non_ad())
        .attr("t", unix_secs().to_string())
        .build();
    conn.send(&ack).await?;
    if reached_phone {
        let receipt = NodeBuilder::new("receipt")
            .attr("from", to.to_non_ad())
            .attr("id", id)
            .attr("t", unix_secs().to_string())
            .build();
        conn.send(&receipt).await?;
    }
    Ok(())
}

/// Names the sender's other address beside the one in `from`, as WhatsApp does: `sender_pn`
/// when it speaks as a LID (the namespace of `like`), `sender_lid` when as a phone number.
fn with_sender_alt(builder: NodeBuilder, reg: &Registry, phone: &str, like: &Jid) -> NodeBuilder {
    if like.is_lid() {
        builder.attr("sender_pn", Jid::pn(phone.to_owned()))
    } else if let Some(lid) = reg.lid_user(phone) {
        builder.attr("sender_lid", Jid::lid(lid.to_owned()))
    } else {
        builder
    }
}

/// A virtual phone decrypts what was sent to it and records it. False if it could not.
async fn phone_receives(
    shared: &Shared,
    phone: &str,
    sender: &DeviceKey,
    id: &str,
    enc_type: &str,
    ciphertext: &[u8],
) -> bool {
    shared.ensure_phone(phone);
    let (device0, address, sender_lid) = {
        let mut reg = shared.lock();
        if !reg.is_registered(phone) {
            return false;
        }
        let address = reg.signal_address(sender);
        let sender_lid = reg.lid_jid(sender);
        (reg.phone(phone).device0.clone(), address, sender_lid)
    };
    let message = match device0.lock().await.decrypt(&address, enc_type, ciphertext).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(phone, from = %sender.jid(), error = %e, "virtual phone could not decrypt");
            return false;
        }
    };
    let mut record = describe(shared, &message, id, &sender.jid());
    record.from_lid = sender_lid.map(|lid| lid.to_string());
    {
        let mut reg = shared.lock();
        let stored = reg.phone(phone);
        // A phone shows a message id from one sender once, however often it is resent.
        let seen = stored
            .messages
            .iter_mut()
            .find(|m| m.id == record.id && m.from.split([':', '@']).next() == Some(sender.phone.as_str()));
        if let Some(shown) = seen {
            shown.repeats += 1;
            stored.duplicates += 1;
            tracing::info!(phone, from = %sender.jid(), id, "virtual phone ignored a resent message");
            return true;
        }
        stored.messages.push(record.clone());
    }
    tracing::info!(phone, from = %sender.jid(), id, kind = ?record.kind, "virtual phone received a message");
    shared.emit(FakeEvent::MessageReceived { phone: phone.to_owned(), message: record });
    true
}

/// What the phone shows for a decrypted message; media is downloaded and decrypted.
fn describe(shared: &Shared, message: &wa::Message, id: &str, sender: &Jid) -> ReceivedMessage {
    let mut record = ReceivedMessage {
        id: id.to_owned(),
        from: sender.to_string(),
        from_lid: None,
        kind: MessageKind::Other,
        text: None,
        document: None,
        media: None,
        location: None,
        reaction: None,
        received_at: unix_millis(),
        repeats: 0,
    };
    let message = message
        .document_with_caption_message
        .as_option()
        .and_then(|wrapper| wrapper.message.as_option())
        .unwrap_or(message);
    if let Some(text) = message.conversation.clone() {
        record.kind = MessageKind::Text;
        record.text = Some(text);
    } else if let Some(ext) = message.extended_text_message.as_option() {
        record.kind = MessageKind::Text;
        record.text = ext.text.clone();
    } else if let Some(m) = message.image_message.as_option() {
        let file = MediaFile::of(MediaType::Image, &m.direct_path, &m.media_key, &m.file_enc_sha256, &m.file_sha256);
        record.kind = MessageKind::Image;
        record.text = m.caption.clone();
        record.media = Some(file.record(shared, m.mimetype.clone(), None, m.caption.clone()));
    } else if let Some(m) = message.video_message.as_option() {
        let file = MediaFile::of(MediaType::Video, &m.direct_path, &m.media_key, &m.file_enc_sha256, &m.file_sha256);
        record.kind = MessageKind::Video;
        record.text = m.caption.clone();
        record.media = Some(MediaRecord {
            seconds: m.seconds,
            ..file.record(shared, m.mimetype.clone(), None, m.caption.clone())
        });
    } else if let Some(m) = message.audio_message.as_option() {
        let file = MediaFile::of(MediaType::Audio, &m.direct_path, &m.media_key, &m.file_enc_sha256, &m.file_sha256);
        record.kind = MessageKind::Audio;
        // A voice note is an audio message with `ptt` set, as WhatsApp sends it.
        record.media = Some(MediaRecord {
            ptt: Some(m.ptt.unwrap_or(false)),
            seconds: m.seconds,
            ..file.record(shared, m.mimetype.clone(), None, None)
        });
    } else if let Some(m) = message.document_message.as_option() {
        let file = MediaFile::of(MediaType::Document, &m.direct_path, &m.media_key, &m.file_enc_sha256, &m.file_sha256);
        let media = file.record(shared, m.mimetype.clone(), m.file_name.clone(), m.caption.clone());
        record.kind = MessageKind::Document;
        record.text = m.caption.clone();
        record.document = Some(DocumentRecord {
            file_name: media.file_name.clone(),
            mimetype: media.mimetype.clone(),
            sha256: media.sha256.clone(),
            size: media.size,
        });
        record.media = Some(media);
    } else if let Some(m) = message.sticker_message.as_option() {
        let file = MediaFile::of(MediaType::Sticker, &m.direct_path, &m.media_key, &m.file_enc_sha256, &m.file_sha256);
        record.kind = MessageKind::Sticker;
        record.media = Some(file.record(shared, m.mimetype.clone(), None, None));
    } else if let Some(m) = message.location_message.as_option() {
        record.kind = MessageKind::Location;
        record.location = Some(LocationRecord {
            latitude: m.degrees_latitude.unwrap_or_default(),
            longitude: m.degrees_longitude.unwrap_or_default(),
            name: m.name.clone(),
            address: m.address.clone(),
        });
    } else if let Some(m) = message.reaction_message.as_option() {
        record.kind = MessageKind::Reaction;
        record.reaction = Some(ReactionRecord {
            message_id: m.key.as_option().and_then(|k| k.id.clone()),
            emoji: m.text.clone().unwrap_or_default(),
        });
    }
    record
}

/// Where a media message's file is and how to open it.
struct MediaFile<'a> {
    media_type: MediaType,
    direct_path: Option<&'a str>,
    media_key: Option<&'a [u8]>,
    file_enc_sha256: Option<&'a [u8]>,
    file_sha256: Option<&'a [u8]>,
}

impl<'a> MediaFile<'a> {
    fn of(
        media_type: MediaType,
        direct_path: &'a Option<String>,
        media_key: &'a Option<Vec<u8>>,
        file_enc_sha256: &'a Option<Vec<u8>>,
        file_sha256: &'a Option<Vec<u8>>,
    ) -> Self {
        Self {
            media_type,
            direct_path: direct_path.as_deref(),
            media_key: media_key.as_deref(),
            file_enc_sha256: file_enc_sha256.as_deref(),
            file_sha256: file_sha256.as_deref(),
        }
    }

    /// Downloads the file from the fake's media server and decrypts it as the phone would.
    fn record(
        &self,
        shared: &Shared,
        mimetype: Option<String>,
        file_name: Option<String>,
        caption: Option<String>,
    ) -> MediaRecord {
        let plain = self
            .direct_path
            .and_then(|path| shared.media.get(path))
            .ok_or_else(|| "blob not found on the media server".to_owned())
            .and_then(|blob| {
                let key = self.media_key.ok_or("no media key")?;
                phone::decrypt_media(&blob.bytes, key, self.media_type, self.file_enc_sha256, self.file_sha256)
                    .map_err(|e| e.to_string())
            });
        let (sha256, size) = match plain {
            Ok(bytes) => (stanza::hex(&Sha256::digest(&bytes)), bytes.len() as u64),
            Err(e) => {
                tracing::warn!(error = %e, media_type = ?self.media_type, "virtual phone could not download media");
                (String::new(), 0)
            }
        };
        MediaRecord { sha256, size, mimetype, file_name, caption, ptt: None, seconds: None }
    }
}

/// A `<receipt>` from a linked device: record it if it was for a virtual phone, relay it if it
/// was for another device, and ack it. `to` may be phone-number or LID addressed.
pub(crate) async fn on_receipt(conn: &mut Conn, node: &Node) -> Result<(), ConnError> {
    let Some(me) = conn.device().cloned() else { return Ok(()) };
    let (Some(id), Some(to)) = (stanza::attr(node, "id").map(|s| s.into_owned()), stanza::jid_attr(node, "to")) else {
        return Ok(());
    };
    let kind = stanza::attr(node, "type").map(|s| s.into_owned());
    {
        let mut reg = conn.shared.lock();
        if let Some(device) = reg.devices.get_mut(&me) {
            if device.key_share_id.as_deref() == Some(id.as_str()) {
                device.needs_key_share = false;
                device.key_share_id = None;
                tracing::debug!(device = %me.jid(), "the device confirmed the app-state key share");
                conn.shared.emit(FakeEvent::KeyShareConfirmed { jid: me.jid().to_string() });
            }
            // Any receipt but a retry request says the device has the messages it names.
            if kind.as_deref() != Some("retry") {
                device.acks.acknowledge(&receipt_ids(node, &id));
            }
        }
        match reg.device_key_of(&to) {
            Some(target) if target.device == 0 => {
                if target.phone != me.phone && reg.phones.contains_key(&target.phone) {
                    reg.phone(&target.phone).receipts.push(ReceiptRecord {
                        id: id.clone(),
                        from: me.jid().to_string(),
                        kind: kind.clone().unwrap_or_else(|| "delivery".into()),
                    });
                }
            }
            Some(target) => {
                let mut relay = NodeBuilder::new("receipt")
                    .attr("from", reg.jid_like(&me, &to))
                    .attr("id", id.clone())
                    .attr("t", unix_secs().to_string());
                if let Some(kind) = &kind {
                    relay = relay.attr("type", kind.clone());
                }
                reg.deliver(&target, relay.build());
            }
            None => tracing::debug!(%to, id, "receipt for an address nobody has"),
        }
    }
    let mut ack = NodeBuilder::new("ack").attr("class", "receipt").attr("id", id).attr("from", to);
    if let Some(kind) = kind {
        ack = ack.attr("type", kind);
    }
    conn.send(&ack.build()).await
}

/// The ids a receipt names: its `id`, and the `<list><item id>` of an aggregate receipt (the
/// client sends one for a batch of messages drained from the offline queue).
fn receipt_ids(node: &Node, id: &str) -> Vec<String> {
    let mut ids = vec![id.to_owned()];
    if let Some(list) = node.get_optional_child("list") {
        ids.extend(
            list.get_children_by_tag("item").filter_map(|item| stanza::attr(item, "id").map(|s| s.into_owned())),
        );
    }
    ids
}

/// An `<ack class="message">` from a linked device: it has the message (the client acks this
/// way what it will not receipt, e.g. a duplicate or an undecryptable message).
pub(crate) fn on_ack(conn: &mut Conn, node: &Node) {
    let Some(me) = conn.device().cloned() else { return };
    if stanza::attr(node, "class").as_deref() != Some("message") {
        return;
    }
    let Some(id) = stanza::attr(node, "id").map(|s| s.into_owned()) else { return };
    if let Some(device) = conn.shared.lock().devices.get_mut(&me) {
        device.acks.acknowledge(&[id]);
    }
}

/// What a virtual phone sends. Media is encrypted and uploaded to the fake's media server first,
/// as a phone does, so the receiving client downloads and decrypts it.
pub enum Outgoing {
    Text(String),
    Document {
        file_name: String,
        mimetype: String,
        bytes: Vec<u8>,
        caption: Option<String>,
    },
    Image {
        mimetype: String,
        bytes: Vec<u8>,
        caption: Option<String>,
    },
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
        address: Option<String>,
    },
    /// A reaction to the message `message_id` of the chat; an empty emoji takes it back.
    Reaction {
        message_id: String,
        emoji: String,
    },
}

/// A file encrypted and stored on the media server, with what a media message carries about it.
struct Uploaded {
    url: String,
    direct_path: String,
    media_key: Vec<u8>,
    file_sha256: Vec<u8>,
    file_enc_sha256: Vec<u8>,
    file_length: u64,
}

fn upload(shared: &Shared, bytes: &[u8], media_type: MediaType, path_kind: &str) -> Result<Uploaded, SendError> {
    let encrypted = phone::encrypt_media(bytes, media_type)?;
    let direct_path = shared.media.put(path_kind, encrypted.data_to_upload);
    Ok(Uploaded {
        url: format!("https://{}{}", shared.media_host, direct_path),
        direct_path,
        media_key: encrypted.media_key.to_vec(),
        file_sha256: encrypted.file_sha256.to_vec(),
        file_enc_sha256: encrypted.file_enc_sha256.to_vec(),
        file_length: bytes.len() as u64,
    })
}

fn message_of(shared: &Shared, from: &str, to: &str, outgoing: Outgoing) -> Result<wa::Message, SendError> {
    let message = match outgoing {
        Outgoing::Text(text) => wa::Message { conversation: Some(text), ..Default::default() },
        Outgoing::Document { file_name, mimetype, bytes, caption } => {
            let file = upload(shared, &bytes, MediaType::Document, "document")?;
            let doc = wa::message::DocumentMessage {
                url: Some(file.url),
                mimetype: Some(mimetype),
                title: Some(file_name.clone()),
                file_sha256: Some(file.file_sha256),
                file_length: Some(file.file_length),
                media_key: Some(file.media_key),
                file_name: Some(file_name),
                file_enc_sha256: Some(file.file_enc_sha256),
                direct_path: Some(file.direct_path),
                media_key_timestamp: Some(unix_secs() as i64),
                caption,
                ..Default::default()
            };
            wa::Message { document_message: buffa::MessageField::some(doc), ..Default::default() }
        }
        Outgoing::Image { mimetype, bytes, caption } => {
            let file = upload(shared, &bytes, MediaType::Image, "image")?;
            let image = wa::message::ImageMessage {
                url: Some(file.url),
                mimetype: Some(mimetype),
                caption,
                file_sha256: Some(file.file_sha256),
                file_length: Some(file.file_length),
                media_key: Some(file.media_key),
                file_enc_sha256: Some(file.file_enc_sha256),
                direct_path: Some(file.direct_path),
                media_key_timestamp: Some(unix_secs() as i64),
                ..Default::default()
            };
            wa::Message { image_message: buffa::MessageField::some(image), ..Default::default() }
        }
        Outgoing::Location { latitude, longitude, name, address } => {
            let location = wa::message::LocationMessage {
                degrees_latitude: Some(latitude),
                degrees_longitude: Some(longitude),
                name,
                address,
                ..Default::default()
            };
            wa::Message { location_message: buffa::MessageField::some(location), ..Default::default() }
        }
        Outgoing::Reaction { message_id, emoji } => {
            // The key names the message as the reacting phone sees it: sent by the other side
            // if it reached this phone, else one this phone sent.
            let received =
                shared.lock().phones.get(from).is_some_and(|p| p.messages.iter().any(|m| m.id == message_id));
            let reaction = wa::message::ReactionMessage {
                key: buffa::MessageField::some(wa::MessageKey {
                    remote_jid: Some(Jid::pn(to.to_owned()).to_string()),
                    from_me: Some(!received),
                    id: Some(message_id),
                    participant: None,
                }),
                text: Some(emoji),
                sender_timestamp_ms: Some(unix_millis() as i64),
                ..Default::default()
            };
            wa::Message { reaction_message: buffa::MessageField::some(reaction), ..Default::default() }
        }
    };
    Ok(message)
}

/// A virtual phone sends a message to every linked device of `to`. Returns the message id.
pub(crate) async fn phone_send(shared: &Shared, from: &str, to: &str, outgoing: Outgoing) -> Result<String, SendError> {
    shared.ensure_phone(from);
    let targets: Vec<DeviceKey> = {
        let reg = shared.lock();
        reg.companions(to).iter().map(|d| d.key.clone()).collect()
    };
    if targets.is_empty() {
        return Err(SendError::NoDevices(to.to_owned()));
    }
    let message = message_of(shared, from, to, outgoing)?;
    let id = shared.next_message_id();
    shared
        .lock()
        .phone_sent
        .insert(id.clone(), PhoneSent { from: from.to_owned(), to: to.to_owned(), message: message.clone() });
    for target in &targets {
        phone_to_device(shared, from, target, &message, &id).await?;
    }
    Ok(id)
}

/// WhatsApp delivers the message `id` that a virtual phone sent to `to` again, to each linked
/// device of `to`: now if connected, else at its next login. It is encrypted anew under the
/// same id, as when the sender resends it, so the client decrypts and reports it again and only
/// the client's own bookkeeping can tell it is a repeat. Returns the number of devices.
pub(crate) async fn redeliver(shared: &Shared, to: &str, id: &str) -> Result<usize, SendError> {
    let sent = shared.lock().phone_sent.get(id).filter(|s| s.to == to).cloned();
    let Some(sent) = sent else { return Err(SendError::UnknownMessage(id.to_owned())) };
    let targets: Vec<DeviceKey> = shared.lock().companions(to).iter().map(|d| d.key.clone()).collect();
    if targets.is_empty() {
        return Err(SendError::NoDevices(to.to_owned()));
    }
    for target in &targets {
        phone_to_device(shared, &sent.from, target, &sent.message, id).await?;
    }
    tracing::info!(to, id, devices = targets.len(), "message redelivered");
    Ok(targets.len())
}

/// Encrypts `message` from `from`'s phone to one companion device and delivers it. The stanza's
/// `type` and the `<enc mediatype>` follow from the message, as the client derives them.
///
/// A phone speaks to other accounts as its LID, with its phone number in `sender_pn`; to its
/// own companions (the app-state key share) as its phone number, in a `category="peer"` message.
pub(crate) async fn phone_to_device(
    shared: &Shared,
    from: &str,
    target: &DeviceKey,
    message: &wa::Message,
    id: &str,
) -> Result<(), SendError> {
    shared.ensure_phone(from);
    let (device0, address, sender) = {
        let mut reg = shared.lock();
        let address = reg.signal_address(target);
        let sender = match reg.lid_user(from) {
            Some(lid) if from != target.phone => Jid::lid(lid.to_owned()),
            _ => Jid::pn(from.to_owned()),
        };
        (reg.phone(from).device0.clone(), address, sender)
    };
    let mut device0 = device0.lock().await;
    let bundle =
        if device0.has_session(&address) { None } else { shared.lock().devices.get_mut(target).map(|d| d.bundle()) };
    let (enc_type, ciphertext) = device0.encrypt_for(&address, bundle.as_ref(), message).await?;
    drop(device0);
    let mut enc = NodeBuilder::new("enc").attr("v", "2").attr("type", enc_type.as_str());
    if let Some(mediatype) = wacore::send::media_type_from_message(message) {
        enc = enc.attr("mediatype", mediatype);
    }
    let mut builder = NodeBuilder::new("message")
        .attr("from", sender.clone())
        .attr("id", id.to_owned())
        .attr("type", wacore::send::stanza_type_from_message(message))
        .attr("t", unix_secs().to_string())
        .attr("notify", format!("Phone {from}"));
    if sender.is_lid() {
        builder = builder.attr("sender_pn", Jid::pn(from.to_owned()));
    } else {
        // From the primary to its own companion: a peer message, which the client receipts
        // with type="peer_msg".
        builder = builder.attr("category", "peer");
    }
    let node = builder.children([enc.bytes(ciphertext).build()]).build();
    shared.deliver(target, node);
    Ok(())
}
