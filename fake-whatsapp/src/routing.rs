//! Messages and receipts: fan-out from a linked device to the devices it addressed, virtual
//! phones that decrypt and record what reaches them, and messages a virtual phone sends.

use sha2::{Digest, Sha256};
use wacore::download::MediaType;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};
use waproto::whatsapp as wa;

use crate::conn::{Conn, ConnError};
use crate::phone::{self, PhoneError};
use crate::shared::{FakeEvent, Shared};
use crate::stanza;
use crate::state::{DeviceKey, DocumentRecord, MessageKind, ReceiptRecord, ReceivedMessage, unix_millis, unix_secs};

/// Why a virtual phone could not send.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("phone number {0} has no linked device to send to")]
    NoDevices(String),
    #[error("signal: {0}")]
    Phone(#[from] PhoneError),
    #[error("media: {0}")]
    Media(String),
}

/// A `<message>` from a linked device.
pub(crate) async fn on_message(conn: &mut Conn, node: &Node) -> Result<(), ConnError> {
    let Some(sender) = conn.device().cloned() else { return Ok(()) };
    let (Some(id), Some(to)) = (stanza::attr(node, "id").map(|s| s.into_owned()), stanza::jid_attr(node, "to")) else {
        return Ok(());
    };
    let msg_type = stanza::attr(node, "type").map(|s| s.into_owned()).unwrap_or_else(|| "text".into());
    let sender_jid = sender.jid();
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
        if target.device == 0 {
            if target.user == sender.phone {
                // The copy for our own phone (a DeviceSentMessage): nothing to record.
                continue;
            }
            let recorded = phone_receives(&conn.shared, &target, &sender_jid, &id, &enc_type, ciphertext).await;
            reached_phone |= recorded;
        } else {
            let mut builder = NodeBuilder::new("message")
                .attr("from", sender_jid.clone())
                .attr("id", id.clone())
                .attr("type", msg_type.clone())
                .attr("t", unix_secs().to_string())
                .attr("notify", push_name.clone());
            if target.user == sender.phone {
                builder = builder.attr("recipient", to.to_non_ad());
            }
            let mut children = vec![enc.clone()];
            if let Some(identity) = &identity {
                children.push(NodeBuilder::new("device-identity").bytes(identity.clone()).build());
            }
            let out = builder.children(children).build();
            conn.shared.lock().deliver(&DeviceKey::from_jid(&target), out);
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

/// A virtual phone decrypts what was sent to it and records it. False if it could not.
async fn phone_receives(
    shared: &Shared,
    target: &Jid,
    sender: &Jid,
    id: &str,
    enc_type: &str,
    ciphertext: &[u8],
) -> bool {
    shared.ensure_phone(&target.user);
    let device0 = {
        let mut reg = shared.lock();
        if !reg.is_registered(&target.user) {
            return false;
        }
        reg.phone(&target.user).device0.clone()
    };
    let message = match device0.lock().await.decrypt(sender, enc_type, ciphertext).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(phone = %target.user, from = %sender, error = %e, "virtual phone could not decrypt");
            return false;
        }
    };
    let record = describe(shared, &message, id, sender);
    {
        let mut reg = shared.lock();
        let phone = reg.phone(&target.user);
        // A phone shows a message id from one sender once, however often it is resent.
        let sender_user = sender.user.as_str();
        let seen =
            phone.messages.iter().any(|m| m.id == record.id && m.from.split([':', '@']).next() == Some(sender_user));
        if seen {
            phone.duplicates += 1;
            tracing::info!(phone = %target.user, from = %sender, id, "virtual phone ignored a resent message");
            return true;
        }
        phone.messages.push(record.clone());
    }
    tracing::info!(phone = %target.user, from = %sender, id, kind = ?record.kind, "virtual phone received a message");
    shared.emit(FakeEvent::MessageReceived { phone: target.user.to_string(), message: record });
    true
}

fn describe(shared: &Shared, message: &wa::Message, id: &str, sender: &Jid) -> ReceivedMessage {
    let mut record = ReceivedMessage {
        id: id.to_owned(),
        from: sender.to_string(),
        kind: MessageKind::Other,
        text: None,
        document: None,
        received_at: unix_millis(),
    };
    if let Some(text) = message.conversation.clone() {
        record.kind = MessageKind::Text;
        record.text = Some(text);
    } else if let Some(ext) = message.extended_text_message.as_option() {
        record.kind = MessageKind::Text;
        record.text = ext.text.clone();
    } else if let Some(doc) = message.document_message.as_option() {
        record.kind = MessageKind::Document;
        record.text = doc.caption.clone();
        record.document = Some(download_document(shared, doc));
    }
    record
}

fn download_document(shared: &Shared, doc: &wa::message::DocumentMessage) -> DocumentRecord {
    let plain = doc
        .direct_path
        .as_deref()
        .and_then(|path| shared.media.get(path))
        .ok_or_else(|| "blob not found on the media server".to_owned())
        .and_then(|blob| {
            let key = doc.media_key.as_deref().ok_or("no media key")?;
            phone::decrypt_media(
                &blob.bytes,
                key,
                MediaType::Document,
                doc.file_enc_sha256.as_deref(),
                doc.file_sha256.as_deref(),
            )
            .map_err(|e| e.to_string())
        });
    let (sha256, size) = match plain {
        Ok(bytes) => (stanza::hex(&Sha256::digest(&bytes)), bytes.len() as u64),
        Err(e) => {
            tracing::warn!(error = %e, "virtual phone could not download a document");
            (String::new(), 0)
        }
    };
    DocumentRecord { file_name: doc.file_name.clone(), mimetype: doc.mimetype.clone(), sha256, size }
}

/// A `<receipt>` from a linked device: record it if it was for a virtual phone, relay it if it
/// was for another device, and ack it.
pub(crate) async fn on_receipt(conn: &mut Conn, node: &Node) -> Result<(), ConnError> {
    let Some(me) = conn.device().cloned() else { return Ok(()) };
    let (Some(id), Some(to)) = (stanza::attr(node, "id").map(|s| s.into_owned()), stanza::jid_attr(node, "to")) else {
        return Ok(());
    };
    let kind = stanza::attr(node, "type").map(|s| s.into_owned());
    {
        let mut reg = conn.shared.lock();
        if to.device == 0 && reg.phones.contains_key(to.user.as_str()) && to.user != me.phone {
            reg.phone(&to.user).receipts.push(ReceiptRecord {
                id: id.clone(),
                from: me.jid().to_string(),
                kind: kind.clone().unwrap_or_else(|| "delivery".into()),
            });
        } else if to.device != 0 {
            let mut relay = NodeBuilder::new("receipt")
                .attr("from", me.jid())
                .attr("id", id.clone())
                .attr("t", unix_secs().to_string());
            if let Some(kind) = &kind {
                relay = relay.attr("type", kind.clone());
            }
            reg.deliver(&DeviceKey::from_jid(&to), relay.build());
        }
    }
    let mut ack = NodeBuilder::new("ack").attr("class", "receipt").attr("id", id).attr("from", to);
    if let Some(kind) = kind {
        ack = ack.attr("type", kind);
    }
    conn.send(&ack.build()).await
}

/// What a virtual phone sends: plain text, or a document it uploads first.
pub enum Outgoing {
    Text(String),
    Document { file_name: String, mimetype: String, bytes: Vec<u8>, caption: Option<String> },
}

/// A virtual phone sends a message to every linked device of `to`. Returns the message id.
pub(crate) async fn phone_send(shared: &Shared, from: &str, to: &str, outgoing: Outgoing) -> Result<String, SendError> {
    let (message, msg_type, mediatype) = match outgoing {
        Outgoing::Text(text) => (wa::Message { conversation: Some(text), ..Default::default() }, "text", None),
        Outgoing::Document { file_name, mimetype, bytes, caption } => {
            let encrypted = phone::encrypt_media(&bytes, MediaType::Document)?;
            let direct_path = shared.media.put("document", encrypted.data_to_upload.clone());
            let doc = wa::message::DocumentMessage {
                url: Some(format!("https://{}{}", shared.media_host, direct_path)),
                mimetype: Some(mimetype),
                title: Some(file_name.clone()),
                file_sha256: Some(encrypted.file_sha256.to_vec()),
                file_length: Some(bytes.len() as u64),
                media_key: Some(encrypted.media_key.to_vec()),
                file_name: Some(file_name),
                file_enc_sha256: Some(encrypted.file_enc_sha256.to_vec()),
                direct_path: Some(direct_path),
                media_key_timestamp: Some(unix_secs() as i64),
                caption,
                ..Default::default()
            };
            (
                wa::Message { document_message: buffa::MessageField::some(doc), ..Default::default() },
                "media",
                Some("document"),
            )
        }
    };
    shared.ensure_phone(from);
    let targets: Vec<DeviceKey> = {
        let reg = shared.lock();
        reg.companions(to).iter().map(|d| d.key.clone()).collect()
    };
    if targets.is_empty() {
        return Err(SendError::NoDevices(to.to_owned()));
    }
    let id = shared.next_message_id();
    for target in &targets {
        phone_to_device(shared, from, target, &message, msg_type, mediatype, &id).await?;
    }
    Ok(id)
}

/// Encrypts `message` from `from`'s phone to one companion device and delivers it.
pub(crate) async fn phone_to_device(
    shared: &Shared,
    from: &str,
    target: &DeviceKey,
    message: &wa::Message,
    msg_type: &str,
    mediatype: Option<&str>,
    id: &str,
) -> Result<(), SendError> {
    shared.ensure_phone(from);
    let device0 = shared.lock().phone(from).device0.clone();
    let target_jid = target.jid();
    let mut device0 = device0.lock().await;
    let bundle =
        if device0.has_session(&target_jid) { None } else { shared.lock().devices.get_mut(target).map(|d| d.bundle()) };
    let (enc_type, ciphertext) = device0.encrypt_for(&target_jid, bundle.as_ref(), message).await?;
    drop(device0);
    let mut enc = NodeBuilder::new("enc").attr("v", "2").attr("type", enc_type.as_str());
    if let Some(mediatype) = mediatype {
        enc = enc.attr("mediatype", mediatype);
    }
    let node = NodeBuilder::new("message")
        .attr("from", Jid::pn(from))
        .attr("id", id.to_owned())
        .attr("type", msg_type.to_owned())
        .attr("t", unix_secs().to_string())
        .attr("notify", format!("Phone {from}"))
        .children([enc.bytes(ciphertext).build()])
        .build();
    shared.lock().deliver(target, node);
    Ok(())
}
