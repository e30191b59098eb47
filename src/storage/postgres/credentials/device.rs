//! The device row (our keys, the account the phone signed, the counters the client keeps) and the
//! secrets of the messages we sent.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;
use whatsapp_rust::wacore::client_profile::ClientProfile;
use whatsapp_rust::wacore::libsignal::protocol::{KeyPair, PrivateKey, PublicKey};
use whatsapp_rust::wacore::store::Device;
use whatsapp_rust::wacore::store::device::{DEVICE_PROPS, account_serde};
use whatsapp_rust::wacore::store::error::{Result, StoreError};
use whatsapp_rust::wacore::store::traits::{DeviceStore, MsgSecretEntry, MsgSecretStore};

use super::{PgBackend, big, db, now, small, wire};

/// The id `create` answers: one device per store, as in the SQLite store's default.
const DEVICE_ID: i32 = 1;

/// Private key then public key, 64 bytes, as the SQLite store writes them.
fn keypair_bytes(pair: &KeyPair) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(pair.private_key.serialize());
    bytes.extend_from_slice(pair.public_key.public_key_bytes());
    bytes
}

fn keypair(bytes: &[u8]) -> Result<KeyPair> {
    let (private, public) = match bytes.len() {
        64 => bytes.split_at(32),
        len => return Err(StoreError::Validation(format!("Invalid KeyPair length: {len}"))),
    };
    let private = PrivateKey::deserialize(private).map_err(|e| StoreError::Serialization(Box::new(e)))?;
    let public = PublicKey::from_djb_public_key_bytes(public).map_err(|e| StoreError::Serialization(Box::new(e)))?;
    Ok(KeyPair::new(public, private))
}

fn fixed<const N: usize>(what: &str, bytes: Vec<u8>) -> Result<[u8; N]> {
    bytes.try_into().map_err(|_| StoreError::Validation(format!("Invalid {what} length")))
}

const UPSERT: &str = "INSERT INTO wa_device (session_id, lid, pn, registration_id, noise_key, identity_key, \
     signed_pre_key, signed_pre_key_id, signed_pre_key_signature, adv_secret_key, account, push_name, \
     app_version_primary, app_version_secondary, app_version_tertiary, app_version_last_fetched_ms, \
     edge_routing_info, props_hash, next_pre_key_id, first_unupload_pre_key_id, server_has_prekeys, nct_salt, \
     server_cert_chain, login_counter, lid_migrated, last_signed_pre_key_rotation_ms, read_receipts_disabled) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, \
     $23, $24, $25, $26, $27) \
     ON CONFLICT (session_id) DO UPDATE SET lid = excluded.lid, pn = excluded.pn, \
     registration_id = excluded.registration_id, noise_key = excluded.noise_key, \
     identity_key = excluded.identity_key, signed_pre_key = excluded.signed_pre_key, \
     signed_pre_key_id = excluded.signed_pre_key_id, signed_pre_key_signature = excluded.signed_pre_key_signature, \
     adv_secret_key = excluded.adv_secret_key, account = excluded.account, push_name = excluded.push_name, \
     app_version_primary = excluded.app_version_primary, app_version_secondary = excluded.app_version_secondary, \
     app_version_tertiary = excluded.app_version_tertiary, \
     app_version_last_fetched_ms = excluded.app_version_last_fetched_ms, \
     edge_routing_info = excluded.edge_routing_info, props_hash = excluded.props_hash, \
     next_pre_key_id = excluded.next_pre_key_id, first_unupload_pre_key_id = excluded.first_unupload_pre_key_id, \
     server_has_prekeys = excluded.server_has_prekeys, nct_salt = excluded.nct_salt, \
     server_cert_chain = excluded.server_cert_chain, login_counter = excluded.login_counter, \
     lid_migrated = excluded.lid_migrated, \
     last_signed_pre_key_rotation_ms = excluded.last_signed_pre_key_rotation_ms, \
     read_receipts_disabled = excluded.read_receipts_disabled";

impl PgBackend {
    /// Writes `device` as the session's device row, whole.
    async fn write_device(&self, device: &Device) -> Result<()> {
        let mut write = self.write().await?;
        let jid = |j: &Option<whatsapp_rust::Jid>| j.as_ref().map(|j| j.to_string()).unwrap_or_default();
        sqlx::query(UPSERT)
            .bind(self.session())
            .bind(jid(&device.lid))
            .bind(jid(&device.pn))
            .bind(big(device.registration_id))
            .bind(keypair_bytes(&device.noise_key))
            .bind(keypair_bytes(&device.identity_key))
            .bind(keypair_bytes(&device.signed_pre_key))
            .bind(big(device.signed_pre_key_id))
            .bind(&device.signed_pre_key_signature[..])
            .bind(&device.adv_secret_key[..])
            .bind(device.account.as_ref().map(|a| account_serde::to_bytes(a)))
            .bind(&device.push_name)
            .bind(big(device.app_version_primary))
            .bind(big(device.app_version_secondary))
            .bind(big(device.app_version_tertiary))
            .bind(device.app_version_last_fetched_ms)
            .bind(device.edge_routing_info.as_deref())
            .bind(device.props_hash.as_deref())
            .bind(big(device.next_pre_key_id))
            .bind(big(device.first_unupload_pre_key_id))
            .bind(device.server_has_prekeys)
            .bind(device.nct_salt.as_deref())
            .bind(device.server_cert_chain.as_ref().map(wire::encode_cert_chain))
            .bind(device.login_counter)
            .bind(device.lid_migrated)
            .bind(device.last_signed_pre_key_rotation_ms)
            .bind(device.read_receipts_disabled)
            .execute(write.conn())
            .await
            .map_err(db)?;
        write.done().await?;
        Ok(())
    }
}

fn get<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
    row: &'r PgRow,
    column: &str,
) -> Result<T> {
    row.try_get(column).map_err(db)
}

fn device(row: &PgRow) -> Result<Device> {
    let jid = |text: String| if text.is_empty() { None } else { text.parse().ok() };
    let account: Option<Vec<u8>> = get(row, "account")?;
    let account = account
        .map(|data| account_serde::from_bytes(&data).map_err(|e| StoreError::Serialization(Box::new(e))))
        .transpose()?;
    let cert_chain: Option<Vec<u8>> = get(row, "server_cert_chain")?;
    Ok(Device {
        pn: jid(get(row, "pn")?),
        lid: jid(get(row, "lid")?),
        registration_id: small(get(row, "registration_id")?)?,
        noise_key: keypair(&get::<Vec<u8>>(row, "noise_key")?)?,
        identity_key: keypair(&get::<Vec<u8>>(row, "identity_key")?)?,
        signed_pre_key: keypair(&get::<Vec<u8>>(row, "signed_pre_key")?)?,
        signed_pre_key_id: small(get(row, "signed_pre_key_id")?)?,
        signed_pre_key_signature: fixed("signed_pre_key_signature", get(row, "signed_pre_key_signature")?)?,
        adv_secret_key: fixed("adv_secret_key", get(row, "adv_secret_key")?)?,
        account: account.map(Arc::new),
        push_name: get(row, "push_name")?,
        app_version_primary: small(get(row, "app_version_primary")?)?,
        app_version_secondary: small(get(row, "app_version_secondary")?)?,
        app_version_tertiary: small(get(row, "app_version_tertiary")?).unwrap_or(0),
        app_version_last_fetched_ms: get(row, "app_version_last_fetched_ms")?,
        device_props: Arc::new(DEVICE_PROPS.clone()),
        client_profile: ClientProfile::web(),
        edge_routing_info: get(row, "edge_routing_info")?,
        props_hash: get(row, "props_hash")?,
        next_pre_key_id: small(get(row, "next_pre_key_id")?)?,
        first_unupload_pre_key_id: small(get(row, "first_unupload_pre_key_id")?)?,
        server_has_prekeys: get(row, "server_has_prekeys")?,
        nct_salt: get(row, "nct_salt")?,
        nct_salt_sync_seen: false,
        // A cache, not identity: a chain that does not decode costs one full handshake.
        server_cert_chain: cert_chain.and_then(|bytes| match wire::decode_cert_chain(&bytes) {
            Ok(chain) => Some(chain),
            Err(e) => {
                tracing::warn!(error = %e, "the cached server certificate chain does not decode; dropping it");
                None
            }
        }),
        login_counter: get(row, "login_counter")?,
        lid_migrated: get(row, "lid_migrated")?,
        last_signed_pre_key_rotation_ms: get(row, "last_signed_pre_key_rotation_ms")?,
        read_receipts_disabled: get(row, "read_receipts_disabled")?,
    })
}

#[async_trait]
impl DeviceStore for PgBackend {
    async fn save(&self, device: &Device) -> Result<()> {
        self.write_device(device).await
    }

    async fn load(&self) -> Result<Option<Device>> {
        let _open = self.open().await?;
        let row = sqlx::query("SELECT * FROM wa_device WHERE session_id = $1")
            .bind(self.session())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(device).transpose()
    }

    async fn exists(&self) -> Result<bool> {
        let _open = self.open().await?;
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM wa_device WHERE session_id = $1)")
            .bind(self.session())
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    async fn create(&self) -> Result<i32> {
        // New keys, nothing else: as the SQLite store, a device that exists already is an error.
        if self.exists().await? {
            return Err(StoreError::Validation("the device exists already".into()));
        }
        self.write_device(&Device::new()).await?;
        Ok(DEVICE_ID)
    }

    async fn resource_report(&self) -> whatsapp_rust::wacore::stats::StorageResourceReport {
        // Its data lives in Postgres, not in this process.
        whatsapp_rust::wacore::stats::StorageResourceReport { memory_bytes: Some(0), ..Default::default() }
    }
}

#[async_trait]
impl MsgSecretStore for PgBackend {
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        if entries.is_empty() {
            return Ok(0);
        }
        let stored = entries.len();
        // One key twice in a batch merges as two writes would: the later secret, the later
        // deadline (0, never, wins), the later known parent time.
        let mut merged: Vec<MsgSecretEntry> = Vec::with_capacity(entries.len());
        let mut at: std::collections::HashMap<_, usize> = std::collections::HashMap::with_capacity(entries.len());
        for entry in entries {
            let key = (entry.chat.clone(), entry.sender.clone(), entry.msg_id.clone());
            match at.get(&key).and_then(|&i| merged.get_mut(i)) as Option<&mut MsgSecretEntry> {
                Some(earlier) => {
                    earlier.secret = entry.secret;
                    earlier.expires_at = whatsapp_rust::wacore::store::traits::merge_msg_secret_expiry(
                        earlier.expires_at,
                        entry.expires_at,
                    );
                    earlier.message_ts = earlier.message_ts.max(entry.message_ts);
                }
                None => {
                    at.insert(key, merged.len());
                    merged.push(entry);
                }
            }
        }
        let chats: Vec<&str> = merged.iter().map(|e| &*e.chat).collect();
        let senders: Vec<&str> = merged.iter().map(|e| &*e.sender).collect();
        let ids: Vec<&str> = merged.iter().map(|e| &*e.msg_id).collect();
        let secrets: Vec<&[u8]> = merged.iter().map(|e| &e.secret[..]).collect();
        let expires: Vec<i64> = merged.iter().map(|e| e.expires_at).collect();
        let parents: Vec<i64> = merged.iter().map(|e| e.message_ts).collect();
        let mut write = self.write().await?;
        sqlx::query(
            "INSERT INTO wa_msg_secrets (session_id, chat, sender, msg_id, secret, created_at, expires_at, message_ts) \
             SELECT $1, c, s, i, x, $8, e, m \
             FROM UNNEST($2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BYTEA[], $6::BIGINT[], $7::BIGINT[]) \
                 AS t(c, s, i, x, e, m) \
             ON CONFLICT (session_id, chat, sender, msg_id) DO UPDATE SET secret = excluded.secret, \
                 created_at = excluded.created_at, \
                 expires_at = CASE WHEN wa_msg_secrets.expires_at = 0 OR excluded.expires_at = 0 THEN 0 \
                                   ELSE GREATEST(wa_msg_secrets.expires_at, excluded.expires_at) END, \
                 message_ts = GREATEST(wa_msg_secrets.message_ts, excluded.message_ts)",
        )
        .bind(self.session())
        .bind(chats)
        .bind(senders)
        .bind(ids)
        .bind(secrets)
        .bind(expires)
        .bind(parents)
        .bind(now())
        .execute(write.conn())
        .await
        .map_err(db)?;
        // Every entry was stored or merged, as SQLite counts them.
        write.done().await?;
        Ok(stored)
    }

    async fn get_msg_secret(&self, chat: &str, sender: &str, msg_id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get_msg_secret_with_ts(chat, sender, msg_id).await?.map(|(secret, _)| secret))
    }

    async fn get_msg_secret_with_ts(&self, chat: &str, sender: &str, msg_id: &str) -> Result<Option<(Vec<u8>, i64)>> {
        let _open = self.open().await?;
        sqlx::query_as(
            "SELECT secret, message_ts FROM wa_msg_secrets \
             WHERE session_id = $1 AND chat = $2 AND sender = $3 AND msg_id = $4",
        )
        .bind(self.session())
        .bind(chat)
        .bind(sender)
        .bind(msg_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> Result<u32> {
        let mut write = self.write().await?;
        // 0 is "never".
        let deleted =
            sqlx::query("DELETE FROM wa_msg_secrets WHERE session_id = $1 AND expires_at <> 0 AND expires_at <= $2")
                .bind(self.session())
                .bind(cutoff_timestamp)
                .execute(write.conn())
                .await
                .map_err(db)?;
        write.done().await?;
        Ok(u32::try_from(deleted.rows_affected()).unwrap_or(u32::MAX))
    }
}
