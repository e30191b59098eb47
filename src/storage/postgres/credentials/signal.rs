//! The Signal protocol's state: identities, sessions, pre-keys, signed pre-keys, sender keys.
//! These are the writes a lost message would follow from, so each is committed before it returns.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use whatsapp_rust::wacore::store::error::{Result, StoreError};
use whatsapp_rust::wacore::store::traits::SignalStore;

use super::{PgBackend, big, db, last_wins, small};

#[async_trait]
impl SignalStore for PgBackend {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        self.put_identities_batch(&[(Arc::from(address), key)]).await
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        if identities.is_empty() {
            return Ok(());
        }
        let rows = last_wins(identities.iter().map(|(address, key)| (&**address, &key[..])));
        let (addresses, keys): (Vec<&str>, Vec<&[u8]>) = rows.into_iter().unzip();
        let mut write = self.write().await?;
        sqlx::query(
            "INSERT INTO wa_identities (session_id, address, key) \
             SELECT $1, a, k FROM UNNEST($2::TEXT[], $3::BYTEA[]) AS t(a, k) \
             ON CONFLICT (session_id, address) DO UPDATE SET key = excluded.key",
        )
        .bind(self.session())
        .bind(addresses)
        .bind(keys)
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        let _open = self.open().await?;
        let key: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT key FROM wa_identities WHERE session_id = $1 AND address = $2")
                .bind(self.session())
                .bind(address)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        key.map(|key| {
            let len = key.len();
            key.try_into().map_err(|_| {
                StoreError::Validation(format!("identity key for '{address}' has invalid length {len} (expected 32)"))
            })
        })
        .transpose()
    }

    async fn delete_identity(&self, address: &str) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query("DELETE FROM wa_identities WHERE session_id = $1 AND address = $2")
            .bind(self.session())
            .bind(address)
            .execute(write.conn())
            .await
            .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        let _open = self.open().await?;
        let record: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT record FROM wa_sessions WHERE session_id = $1 AND address = $2")
                .bind(self.session())
                .bind(address)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(record.map(Bytes::from))
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        self.put_sessions_batch(&[(Arc::from(address), Bytes::copy_from_slice(session))]).await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        if sessions.is_empty() {
            return Ok(());
        }
        let rows = last_wins(sessions.iter().map(|(address, record)| (&**address, &record[..])));
        let (addresses, records): (Vec<&str>, Vec<&[u8]>) = rows.into_iter().unzip();
        let mut write = self.write().await?;
        sqlx::query(
            "INSERT INTO wa_sessions (session_id, address, record) \
             SELECT $1, a, r FROM UNNEST($2::TEXT[], $3::BYTEA[]) AS t(a, r) \
             ON CONFLICT (session_id, address) DO UPDATE SET record = excluded.record",
        )
        .bind(self.session())
        .bind(addresses)
        .bind(records)
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn delete_session(&self, address: &str) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query("DELETE FROM wa_sessions WHERE session_id = $1 AND address = $2")
            .bind(self.session())
            .bind(address)
            .execute(write.conn())
            .await
            .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn has_session(&self, address: &str) -> Result<bool> {
        let _open = self.open().await?;
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM wa_sessions WHERE session_id = $1 AND address = $2)")
            .bind(self.session())
            .bind(address)
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        // Addresses are `user@server` (device 0) or `user:device@server`.
        let (at, device) = (format!("{user}@"), format!("{user}:"));
        let _open = self.open().await?;
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM wa_sessions WHERE session_id = $1 \
                            AND (starts_with(address, $2) OR starts_with(address, $3))) \
                 OR EXISTS (SELECT 1 FROM wa_identities WHERE session_id = $1 \
                            AND (starts_with(address, $2) OR starts_with(address, $3)))",
        )
        .bind(self.session())
        .bind(at)
        .bind(device)
        .fetch_one(&self.pool)
        .await
        .map_err(db)
    }

    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> Result<()> {
        self.store_prekeys_batch(&[(id, Bytes::copy_from_slice(record))], uploaded).await
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let rows = last_wins(keys.iter().map(|(id, record)| (big(*id), &record[..])));
        let (ids, records): (Vec<i64>, Vec<&[u8]>) = rows.into_iter().unzip();
        let mut write = self.write().await?;
        sqlx::query(
            "INSERT INTO wa_prekeys (session_id, id, key, uploaded) \
             SELECT $1, i, k, $4 FROM UNNEST($2::BIGINT[], $3::BYTEA[]) AS t(i, k) \
             ON CONFLICT (session_id, id) DO UPDATE SET key = excluded.key, uploaded = excluded.uploaded",
        )
        .bind(self.session())
        .bind(ids)
        .bind(records)
        .bind(uploaded)
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        let _open = self.open().await?;
        let key: Option<Vec<u8>> = sqlx::query_scalar("SELECT key FROM wa_prekeys WHERE session_id = $1 AND id = $2")
            .bind(self.session())
            .bind(big(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(key.map(Bytes::from))
    }

    async fn load_prekeys_batch(&self, ids: &[u32]) -> Result<Vec<(u32, Bytes)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = ids.iter().copied().map(big).collect();
        let _open = self.open().await?;
        let rows: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT id, key FROM wa_prekeys WHERE session_id = $1 AND id = ANY($2) ORDER BY id")
                .bind(self.session())
                .bind(ids)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        rows.into_iter().map(|(id, key)| Ok((small(id)?, Bytes::from(key)))).collect()
    }

    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = ids.iter().copied().map(big).collect();
        let mut write = self.write().await?;
        // UPDATE, never an upsert: a key consumed since the upload stays consumed.
        sqlx::query("UPDATE wa_prekeys SET uploaded = TRUE WHERE session_id = $1 AND id = ANY($2)")
            .bind(self.session())
            .bind(ids)
            .execute(write.conn())
            .await
            .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn remove_prekey(&self, id: u32) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query("DELETE FROM wa_prekeys WHERE session_id = $1 AND id = $2")
            .bind(self.session())
            .bind(big(id))
            .execute(write.conn())
            .await
            .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn get_max_prekey_id(&self) -> Result<u32> {
        let _open = self.open().await?;
        let max: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM wa_prekeys WHERE session_id = $1")
            .bind(self.session())
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        small(max)
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query(
            "INSERT INTO wa_signed_prekeys (session_id, id, record) VALUES ($1, $2, $3) \
             ON CONFLICT (session_id, id) DO UPDATE SET record = excluded.record",
        )
        .bind(self.session())
        .bind(big(id))
        .bind(record)
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        let _open = self.open().await?;
        sqlx::query_scalar("SELECT record FROM wa_signed_prekeys WHERE session_id = $1 AND id = $2")
            .bind(self.session())
            .bind(big(id))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        let _open = self.open().await?;
        let rows: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT id, record FROM wa_signed_prekeys WHERE session_id = $1 ORDER BY id")
                .bind(self.session())
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        rows.into_iter().map(|(id, record)| Ok((small(id)?, record))).collect()
    }

    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query("DELETE FROM wa_signed_prekeys WHERE session_id = $1 AND id = $2")
            .bind(self.session())
            .bind(big(id))
            .execute(write.conn())
            .await
            .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        self.put_sender_keys_batch(&[(Arc::from(address), Bytes::copy_from_slice(record))]).await
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        if sender_keys.is_empty() {
            return Ok(());
        }
        let rows = last_wins(sender_keys.iter().map(|(address, record)| (&**address, &record[..])));
        let (addresses, records): (Vec<&str>, Vec<&[u8]>) = rows.into_iter().unzip();
        let mut write = self.write().await?;
        sqlx::query(
            "INSERT INTO wa_sender_keys (session_id, address, record) \
             SELECT $1, a, r FROM UNNEST($2::TEXT[], $3::BYTEA[]) AS t(a, r) \
             ON CONFLICT (session_id, address) DO UPDATE SET record = excluded.record",
        )
        .bind(self.session())
        .bind(addresses)
        .bind(records)
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        let _open = self.open().await?;
        sqlx::query_scalar("SELECT record FROM wa_sender_keys WHERE session_id = $1 AND address = $2")
            .bind(self.session())
            .bind(address)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query("DELETE FROM wa_sender_keys WHERE session_id = $1 AND address = $2")
            .bind(self.session())
            .bind(address)
            .execute(write.conn())
            .await
            .map_err(db)?;
        write.done().await?;
        Ok(())
    }
}
