//! App-state sync: the keys the phone shares, each collection's hash state, and the MACs of
//! its mutations.

use std::collections::HashMap;

use async_trait::async_trait;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::store::error::Result;
use whatsapp_rust::wacore::store::traits::{AppStateSyncKey, AppSyncStore};

use super::{PgBackend, db, last_wins, wire};

#[async_trait]
impl AppSyncStore for PgBackend {
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        let _open = self.open().await?;
        let data: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT key_data FROM wa_app_state_keys WHERE session_id = $1 AND key_id = $2")
                .bind(self.session())
                .bind(key_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        // An undecodable key is absent, as on SQLite: the client asks the phone for it again.
        Ok(data.and_then(|data| match wire::decode_sync_key(&data) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!(error = %e, "an app-state sync key does not decode; it will be asked for again");
                None
            }
        }))
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query(
            "INSERT INTO wa_app_state_keys (session_id, key_id, key_data) VALUES ($1, $2, $3) \
             ON CONFLICT (session_id, key_id) DO UPDATE SET key_data = excluded.key_data",
        )
        .bind(self.session())
        .bind(key_id)
        .bind(wire::encode_sync_key(&key))
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn get_version(&self, name: &str) -> Result<HashState> {
        let _open = self.open().await?;
        let data: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT state_data FROM wa_app_state_versions WHERE session_id = $1 AND name = $2")
                .bind(self.session())
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        // An undecodable state starts the collection over from version 0, as on SQLite.
        Ok(data.map_or_else(HashState::default, |data| {
            wire::decode_hash_state(&data).unwrap_or_else(|e| {
                tracing::warn!(collection = name, error = %e, "an app-state version does not decode; re-syncing it");
                HashState::default()
            })
        }))
    }

    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query(
            "INSERT INTO wa_app_state_versions (session_id, name, state_data) VALUES ($1, $2, $3) \
             ON CONFLICT (session_id, name) DO UPDATE SET state_data = excluded.state_data",
        )
        .bind(self.session())
        .bind(name)
        .bind(wire::encode_hash_state(&state))
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn put_mutation_macs(&self, name: &str, version: u64, mutations: &[AppStateMutationMAC]) -> Result<()> {
        if mutations.is_empty() {
            return Ok(());
        }
        let rows = last_wins(mutations.iter().map(|m| (&m.index_mac[..], &m.value_mac[..])));
        let (index_macs, value_macs): (Vec<&[u8]>, Vec<&[u8]>) = rows.into_iter().unzip();
        let mut write = self.write().await?;
        sqlx::query(
            "INSERT INTO wa_app_state_mutation_macs (session_id, name, index_mac, version, value_mac) \
             SELECT $1, $2, i, $3, v FROM UNNEST($4::BYTEA[], $5::BYTEA[]) AS t(i, v) \
             ON CONFLICT (session_id, name, index_mac) \
             DO UPDATE SET version = excluded.version, value_mac = excluded.value_mac",
        )
        .bind(self.session())
        .bind(name)
        // SQLite keeps it as a signed 64-bit integer too.
        .bind(version as i64)
        .bind(index_macs)
        .bind(value_macs)
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        let _open = self.open().await?;
        sqlx::query_scalar(
            "SELECT value_mac FROM wa_app_state_mutation_macs WHERE session_id = $1 AND name = $2 AND index_mac = $3",
        )
        .bind(self.session())
        .bind(name)
        .bind(index_mac)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)
    }

    async fn get_mutation_macs(&self, name: &str, index_macs: &[[u8; 32]]) -> Result<HashMap<[u8; 32], Vec<u8>>> {
        if index_macs.is_empty() {
            return Ok(HashMap::new());
        }
        let wanted: Vec<&[u8]> = index_macs.iter().map(|m| &m[..]).collect();
        let _open = self.open().await?;
        let rows: Vec<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT index_mac, value_mac FROM wa_app_state_mutation_macs \
             WHERE session_id = $1 AND name = $2 AND index_mac = ANY($3)",
        )
        .bind(self.session())
        .bind(name)
        .bind(wanted)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.into_iter().filter_map(|(index, value)| Some((<[u8; 32]>::try_from(index).ok()?, value))).collect())
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        if index_macs.is_empty() {
            return Ok(());
        }
        let mut write = self.write().await?;
        sqlx::query(
            "DELETE FROM wa_app_state_mutation_macs WHERE session_id = $1 AND name = $2 AND index_mac = ANY($3)",
        )
        .bind(self.session())
        .bind(name)
        .bind(index_macs)
        .execute(write.conn())
        .await
        .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        let mut write = self.write().await?;
        sqlx::query("DELETE FROM wa_app_state_mutation_macs WHERE session_id = $1 AND name = $2")
            .bind(self.session())
            .bind(name)
            .execute(write.conn())
            .await
            .map_err(db)?;
        write.done().await?;
        Ok(())
    }

    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        let _open = self.open().await?;
        let keys: Vec<(Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT key_id, key_data FROM wa_app_state_keys WHERE session_id = $1 ORDER BY key_id DESC")
                .bind(self.session())
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        // The newest key that can be used: one that does not decode would fail the next patch.
        Ok(keys.into_iter().find(|(_, data)| wire::decode_sync_key(data).is_ok()).map(|(id, _)| id))
    }
}
