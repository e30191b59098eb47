//! WhatsApp Web's protocol bookkeeping (whatsapp-rust's `ProtocolStore`): who holds our sender
//! key in each group, LID↔phone mappings, base keys for retry collisions, device lists, group
//! metadata, trusted-contact tokens, sent messages kept for retries, and the inbound buffer of
//! the durability hook. One trait, so one file.

use async_trait::async_trait;
use whatsapp_rust::wacore::store::error::{Result, StoreError};
use whatsapp_rust::wacore::store::traits::{
    DeviceInfo, DeviceListRecord, LidPnMappingEntry, PendingInboundKey, PendingInboundRow, ProtocolStore, TcTokenEntry,
};

use super::{PgBackend, big, db, last_wins, now, small};

/// A count of deleted rows as the trait reports it.
fn count(rows: u64) -> u32 {
    u32::try_from(rows).unwrap_or(u32::MAX)
}

type MappingRow = (String, String, i64, String, i64);

fn mapping((lid, phone_number, created_at, learning_source, updated_at): MappingRow) -> LidPnMappingEntry {
    LidPnMappingEntry { lid, phone_number, created_at, updated_at, learning_source }
}

#[async_trait]
impl ProtocolStore for PgBackend {
    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        let _open = self.open().await?;
        sqlx::query_as(
            "SELECT device_jid, has_key FROM wa_sender_key_devices WHERE session_id = $1 AND group_jid = $2 \
             ORDER BY device_jid",
        )
        .bind(self.session())
        .bind(group_jid)
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let (devices, has_key): (Vec<&str>, Vec<bool>) = last_wins(entries.iter().copied()).into_iter().unzip();
        let mut write = self.write().await?;
        sqlx::query(
            "INSERT INTO wa_sender_key_devices (session_id, group_jid, device_jid, has_key, updated_at) \
             SELECT $1, $2, d, h, $5 FROM UNNEST($3::TEXT[], $4::BOOLEAN[]) AS t(d, h) \
             ON CONFLICT (session_id, group_jid, device_jid) \
             DO UPDATE SET has_key = excluded.has_key, updated_at = excluded.updated_at",
        )
        .bind(self.session())
        .bind(group_jid)
        .bind(devices)
        .bind(has_key)
        .bind(now())
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query("DELETE FROM wa_sender_key_devices WHERE session_id = $1 AND group_jid = $2")
            .bind(self.session())
            .bind(group_jid)
            .execute(write.conn())
            .await
            .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        let mut write = self.write().await?;
        sqlx::query("DELETE FROM wa_sender_key_devices WHERE session_id = $1 AND device_jid = ANY($2)")
            .bind(self.session())
            .bind(device_jids)
            .execute(write.conn())
            .await
            .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query("DELETE FROM wa_sender_key_devices WHERE session_id = $1")
            .bind(self.session())
            .execute(write.conn())
            .await
            .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        let _open = self.open().await?;
        let row: Option<MappingRow> = sqlx::query_as(
            "SELECT lid, phone_number, created_at, learning_source, updated_at FROM wa_lid_pn_mapping \
             WHERE session_id = $1 AND lid = $2",
        )
        .bind(self.session())
        .bind(lid)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.map(mapping))
    }

    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        let _open = self.open().await?;
        let row: Option<MappingRow> = sqlx::query_as(
            "SELECT lid, phone_number, created_at, learning_source, updated_at FROM wa_lid_pn_mapping \
             WHERE session_id = $1 AND phone_number = $2 ORDER BY updated_at DESC LIMIT 1",
        )
        .bind(self.session())
        .bind(phone)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.map(mapping))
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        self.put_lid_mappings(std::slice::from_ref(entry)).await
    }

    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let rows = last_wins(entries.iter().map(|e| (e.lid.as_str(), e)));
        let lids: Vec<&str> = rows.iter().map(|(lid, _)| *lid).collect();
        let phones: Vec<&str> = rows.iter().map(|(_, e)| e.phone_number.as_str()).collect();
        let created: Vec<i64> = rows.iter().map(|(_, e)| e.created_at).collect();
        let sources: Vec<&str> = rows.iter().map(|(_, e)| e.learning_source.as_str()).collect();
        let updated: Vec<i64> = rows.iter().map(|(_, e)| e.updated_at).collect();
        let mut write = self.write().await?;
        // A mapping learned again keeps when it was first learned.
        sqlx::query(
            "INSERT INTO wa_lid_pn_mapping (session_id, lid, phone_number, created_at, learning_source, updated_at) \
             SELECT $1, l, p, c, s, u FROM UNNEST($2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[], $6::BIGINT[]) \
                 AS t(l, p, c, s, u) \
             ON CONFLICT (session_id, lid) DO UPDATE SET phone_number = excluded.phone_number, \
                 learning_source = excluded.learning_source, updated_at = excluded.updated_at",
        )
        .bind(self.session())
        .bind(lids)
        .bind(phones)
        .bind(created)
        .bind(sources)
        .bind(updated)
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        let _open = self.open().await?;
        let rows: Vec<MappingRow> = sqlx::query_as(
            "SELECT lid, phone_number, created_at, learning_source, updated_at FROM wa_lid_pn_mapping \
             WHERE session_id = $1 ORDER BY lid",
        )
        .bind(self.session())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.into_iter().map(mapping).collect())
    }

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query(
            "INSERT INTO wa_base_keys (session_id, address, message_id, base_key, created_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (session_id, address, message_id) DO UPDATE SET base_key = excluded.base_key",
        )
        .bind(self.session())
        .bind(address)
        .bind(message_id)
        .bind(base_key)
        .bind(now())
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn has_same_base_key(&self, address: &str, message_id: &str, current_base_key: &[u8]) -> Result<bool> {
        let _open = self.open().await?;
        let stored: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT base_key FROM wa_base_keys WHERE session_id = $1 AND address = $2 AND message_id = $3",
        )
        .bind(self.session())
        .bind(address)
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(stored.as_deref() == Some(current_base_key))
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query("DELETE FROM wa_base_keys WHERE session_id = $1 AND address = $2 AND message_id = $3")
            .bind(self.session())
            .bind(address)
            .bind(message_id)
            .execute(write.conn())
            .await
            .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        self.update_device_lists(vec![record]).await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let rows = last_wins(records.into_iter().map(|r| (r.user.clone(), r)));
        let mut users = Vec::with_capacity(rows.len());
        let mut devices = Vec::with_capacity(rows.len());
        let mut timestamps = Vec::with_capacity(rows.len());
        let mut phashes = Vec::with_capacity(rows.len());
        let mut raw_ids = Vec::with_capacity(rows.len());
        for (user, record) in rows {
            users.push(user);
            // The same JSON the SQLite store writes, so rows copy over as they are.
            devices.push(serde_json::to_string(&record.devices).map_err(|e| StoreError::Serialization(Box::new(e)))?);
            timestamps.push(record.timestamp);
            phashes.push(record.phash);
            raw_ids.push(record.raw_id.map(big));
        }
        let mut write = self.write().await?;
        sqlx::query(
            "INSERT INTO wa_device_registry (session_id, user_id, devices_json, timestamp, phash, raw_id, updated_at) \
             SELECT $1, u, d, t, p, r, $7 \
             FROM UNNEST($2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[], $6::BIGINT[]) AS x(u, d, t, p, r) \
             ON CONFLICT (session_id, user_id) DO UPDATE SET devices_json = excluded.devices_json, \
                 timestamp = excluded.timestamp, phash = excluded.phash, raw_id = excluded.raw_id, \
                 updated_at = excluded.updated_at",
        )
        .bind(self.session())
        .bind(users)
        .bind(devices)
        .bind(timestamps)
        .bind(phashes)
        .bind(raw_ids)
        .bind(now())
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        let _open = self.open().await?;
        let row: Option<(String, String, i64, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT user_id, devices_json, timestamp, phash, raw_id FROM wa_device_registry \
             WHERE session_id = $1 AND user_id = $2",
        )
        .bind(self.session())
        .bind(user)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some((user, devices, timestamp, phash, raw_id)) = row else { return Ok(None) };
        let devices: Vec<DeviceInfo> =
            serde_json::from_str(&devices).map_err(|e| StoreError::Serialization(Box::new(e)))?;
        Ok(Some(DeviceListRecord { user, devices, timestamp, phash, raw_id: raw_id.map(small).transpose()? }))
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query("DELETE FROM wa_device_registry WHERE session_id = $1 AND user_id = $2")
            .bind(self.session())
            .bind(user)
            .execute(write.conn())
            .await
            .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        let _open = self.open().await?;
        sqlx::query_scalar("SELECT info FROM wa_group_metadata WHERE session_id = $1 AND group_jid = $2")
            .bind(self.session())
            .bind(group_jid)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query(
            "INSERT INTO wa_group_metadata (session_id, group_jid, info, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (session_id, group_jid) DO UPDATE SET info = excluded.info, updated_at = excluded.updated_at",
        )
        .bind(self.session())
        .bind(group_jid)
        .bind(blob)
        .bind(now())
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query("DELETE FROM wa_group_metadata WHERE session_id = $1 AND group_jid = $2")
            .bind(self.session())
            .bind(group_jid)
            .execute(write.conn())
            .await
            .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        let _open = self.open().await?;
        let row: Option<(Vec<u8>, i64, Option<i64>)> = sqlx::query_as(
            "SELECT token, token_timestamp, sender_timestamp FROM wa_tc_tokens WHERE session_id = $1 AND jid = $2",
        )
        .bind(self.session())
        .bind(jid)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.map(|(token, token_timestamp, sender_timestamp)| TcTokenEntry {
            token,
            token_timestamp,
            sender_timestamp,
        }))
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query(
            "INSERT INTO wa_tc_tokens (session_id, jid, token, token_timestamp, sender_timestamp, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (session_id, jid) DO UPDATE SET token = excluded.token, \
                 token_timestamp = excluded.token_timestamp, sender_timestamp = excluded.sender_timestamp, \
                 updated_at = excluded.updated_at",
        )
        .bind(self.session())
        .bind(jid)
        .bind(&entry.token)
        .bind(entry.token_timestamp)
        .bind(entry.sender_timestamp)
        .bind(now())
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query("DELETE FROM wa_tc_tokens WHERE session_id = $1 AND jid = $2")
            .bind(self.session())
            .bind(jid)
            .execute(write.conn())
            .await
            .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        let _open = self.open().await?;
        sqlx::query_scalar("SELECT jid FROM wa_tc_tokens WHERE session_id = $1 ORDER BY jid")
            .bind(self.session())
            .fetch_all(&self.pool)
            .await
            .map_err(db)
    }

    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        let mut write = self.write().await?;
        // Only rows with nothing live left: the received token expired or absent, and the sender
        // bucket expired or absent.
        let deleted = sqlx::query(
            "DELETE FROM wa_tc_tokens WHERE session_id = $1 \
             AND (length(token) = 0 OR token_timestamp < $2) \
             AND (sender_timestamp IS NULL OR sender_timestamp < $3)",
        )
        .bind(self.session())
        .bind(token_cutoff)
        .bind(sender_cutoff)
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(count(deleted.rows_affected()))
    }

    async fn store_received_tc_token(&self, jid: &str, token: &[u8], token_timestamp: i64) -> Result<()> {
        let mut write = self.write().await?;
        // Newer wins, in one atomic statement: a stale token never replaces a fresher real one,
        // a placeholder never blocks the first real one, and the sender bucket is left alone.
        sqlx::query(
            "INSERT INTO wa_tc_tokens (session_id, jid, token, token_timestamp, sender_timestamp, updated_at) \
             VALUES ($1, $2, $3, $4, NULL, $5) \
             ON CONFLICT (session_id, jid) DO UPDATE SET token = excluded.token, \
                 token_timestamp = excluded.token_timestamp, updated_at = excluded.updated_at \
             WHERE length(wa_tc_tokens.token) = 0 OR excluded.token_timestamp >= wa_tc_tokens.token_timestamp",
        )
        .bind(self.session())
        .bind(jid)
        .bind(token)
        .bind(token_timestamp)
        .bind(now())
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn touch_tc_token_sender_timestamp(&self, jid: &str, sender_timestamp: i64) -> Result<()> {
        let mut write = self.write().await?;
        // Advance-only, and the token bytes untouched.
        sqlx::query(
            "INSERT INTO wa_tc_tokens (session_id, jid, token, token_timestamp, sender_timestamp, updated_at) \
             VALUES ($1, $2, ''::BYTEA, $3, $3, $4) \
             ON CONFLICT (session_id, jid) DO UPDATE SET \
                 sender_timestamp = GREATEST(COALESCE(wa_tc_tokens.sender_timestamp, $3), $3), \
                 updated_at = excluded.updated_at",
        )
        .bind(self.session())
        .bind(jid)
        .bind(sender_timestamp)
        .bind(now())
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn store_sent_message(&self, chat_jid: &str, message_id: &str, payload: &[u8]) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query(
            "INSERT INTO wa_sent_messages (session_id, chat_jid, message_id, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (session_id, chat_jid, message_id) \
             DO UPDATE SET payload = excluded.payload, created_at = excluded.created_at",
        )
        .bind(self.session())
        .bind(chat_jid)
        .bind(message_id)
        .bind(payload)
        .bind(now())
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn take_sent_message(&self, chat_jid: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        let mut write = self.write().await?;
        // Taken once: two retry receipts at once cannot both get it.
        let taken = sqlx::query_scalar(
            "DELETE FROM wa_sent_messages WHERE session_id = $1 AND chat_jid = $2 AND message_id = $3 \
             RETURNING payload",
        )
        .bind(self.session())
        .bind(chat_jid)
        .bind(message_id)
        .fetch_optional(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(taken)
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> Result<u32> {
        let mut write = self.write().await?;
        let deleted = sqlx::query("DELETE FROM wa_sent_messages WHERE session_id = $1 AND created_at < $2")
            .bind(self.session())
            .bind(cutoff_timestamp)
            .execute(write.conn())
            .await
            .map_err(db)?;
        write.done().await?;
        Ok(count(deleted.rows_affected()))
    }

    async fn store_pending_inbound(&self, chat: &str, sender: &str, id: &str, message: &[u8]) -> Result<()> {
        self.store_pending_inbound_batch(&[PendingInboundRow { chat, sender, id, message }]).await
    }

    async fn get_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<Option<Vec<u8>>> {
        let _open = self.open().await?;
        sqlx::query_scalar(
            "SELECT message FROM wa_pending_inbound WHERE session_id = $1 AND chat = $2 AND sender = $3 AND id = $4",
        )
        .bind(self.session())
        .bind(chat)
        .bind(sender)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        self.delete_pending_inbound_batch(&[PendingInboundKey { chat, sender, id }]).await
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        let mut write = self.write().await?;
        let deleted = sqlx::query("DELETE FROM wa_pending_inbound WHERE session_id = $1 AND inserted_at < $2")
            .bind(self.session())
            .bind(cutoff_timestamp)
            .execute(write.conn())
            .await
            .map_err(db)?;
        write.done().await?;
        Ok(count(deleted.rows_affected()))
    }

    async fn store_pending_inbound_batch(&self, rows: &[PendingInboundRow<'_>]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows = last_wins(rows.iter().map(|r| ((r.chat, r.sender, r.id), r.message)));
        let chats: Vec<&str> = rows.iter().map(|((chat, _, _), _)| *chat).collect();
        let senders: Vec<&str> = rows.iter().map(|((_, sender, _), _)| *sender).collect();
        let ids: Vec<&str> = rows.iter().map(|((_, _, id), _)| *id).collect();
        let messages: Vec<&[u8]> = rows.iter().map(|(_, message)| *message).collect();
        let mut write = self.write().await?;
        // A message buffered again replaces the first, and is as new as the last time.
        sqlx::query(
            "INSERT INTO wa_pending_inbound (session_id, chat, sender, id, message, inserted_at) \
             SELECT $1, c, s, i, m, $6 FROM UNNEST($2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BYTEA[]) AS t(c, s, i, m) \
             ON CONFLICT (session_id, chat, sender, id) \
             DO UPDATE SET message = excluded.message, inserted_at = excluded.inserted_at",
        )
        .bind(self.session())
        .bind(chats)
        .bind(senders)
        .bind(ids)
        .bind(messages)
        .bind(now())
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn delete_pending_inbound_batch(&self, keys: &[PendingInboundKey<'_>]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let chats: Vec<&str> = keys.iter().map(|k| k.chat).collect();
        let senders: Vec<&str> = keys.iter().map(|k| k.sender).collect();
        let ids: Vec<&str> = keys.iter().map(|k| k.id).collect();
        let mut write = self.write().await?;
        sqlx::query(
            "DELETE FROM wa_pending_inbound p USING UNNEST($2::TEXT[], $3::TEXT[], $4::TEXT[]) AS k(c, s, i) \
             WHERE p.session_id = $1 AND p.chat = k.c AND p.sender = k.s AND p.id = k.i",
        )
        .bind(self.session())
        .bind(chats)
        .bind(senders)
        .bind(ids)
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }
}
