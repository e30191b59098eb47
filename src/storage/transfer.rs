//! Rows in transit from the embedded store to Postgres (`whatsapp-gateway migrate`): each
//! backend reads or writes them as they are, so a copy needs no domain type for every table.

/// Quotes an identifier for SQL (both databases spell it the same way).
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One value of a row, as SQLite holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Cell {
    /// The bytes a blob or text holds (0 for the others).
    pub fn len(&self) -> usize {
        match self {
            Cell::Text(text) => text.len(),
            Cell::Blob(bytes) => bytes.len(),
            _ => 0,
        }
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Rows of one table, all with the same named columns.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Rows {
    /// No rows yet, these columns.
    pub fn new(columns: &[&str]) -> Rows {
        Rows { columns: columns.iter().map(|c| (*c).to_owned()).collect(), rows: Vec::new() }
    }

    /// The index of `column`.
    pub fn index(&self, column: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == column)
    }
}

/// The credentials tables of whatsapp-rust's SQLite store and the Postgres table each one is
/// copied to (`wa_` and its name, but for one).
pub const CREDENTIAL_TABLES: [(&str, &str); 18] = [
    ("device", "wa_device"),
    ("identities", "wa_identities"),
    ("sessions", "wa_sessions"),
    ("prekeys", "wa_prekeys"),
    ("signed_prekeys", "wa_signed_prekeys"),
    ("sender_keys", "wa_sender_keys"),
    ("app_state_keys", "wa_app_state_keys"),
    ("app_state_versions", "wa_app_state_versions"),
    ("app_state_mutation_macs", "wa_app_state_mutation_macs"),
    ("sender_key_devices", "wa_sender_key_devices"),
    ("lid_pn_mapping", "wa_lid_pn_mapping"),
    ("base_keys", "wa_base_keys"),
    ("device_registry", "wa_device_registry"),
    ("group_metadata", "wa_group_metadata"),
    ("tc_tokens", "wa_tc_tokens"),
    ("sent_messages", "wa_sent_messages"),
    ("pending_inbound_messages", "wa_pending_inbound"),
    ("msg_secrets", "wa_msg_secrets"),
];

/// Unsigned 32-bit values whatsapp-rust's SQLite store keeps as `u32 as i32` (so above
/// `i32::MAX` they read back negative); the Postgres store keeps them as they are, in a BIGINT.
pub const UNSIGNED_32: [(&str, &str); 9] = [
    ("wa_device", "registration_id"),
    ("wa_device", "signed_pre_key_id"),
    ("wa_device", "app_version_primary"),
    ("wa_device", "app_version_secondary"),
    ("wa_device", "next_pre_key_id"),
    ("wa_device", "first_unupload_pre_key_id"),
    ("wa_prekeys", "id"),
    ("wa_signed_prekeys", "id"),
    ("wa_device_registry", "raw_id"),
];

impl Rows {
    /// Turns the wrapped negative values of `table`'s [`UNSIGNED_32`] columns back into the
    /// unsigned ones they were.
    pub fn unwrap_unsigned_32(&mut self, table: &str) {
        let indexes: Vec<usize> =
            UNSIGNED_32.iter().filter(|(t, _)| *t == table).filter_map(|(_, column)| self.index(column)).collect();
        for row in &mut self.rows {
            for &i in &indexes {
                if let Some(Cell::Int(value)) = row.get_mut(i)
                    && *value < 0
                    && *value >= i64::from(i32::MIN)
                {
                    // The bits of the i32 are the u32 it was.
                    *value = i64::from(*value as i32 as u32);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_unsigned_ids_come_back_unsigned() {
        let mut rows = Rows::new(&["id", "key"]);
        rows.rows.push(vec![Cell::Int(-1), Cell::Int(-1)]);
        rows.rows.push(vec![Cell::Int(7), Cell::Null]);
        rows.unwrap_unsigned_32("wa_prekeys");
        assert_eq!(rows.rows[0], vec![Cell::Int(i64::from(u32::MAX)), Cell::Int(-1)]);
        assert_eq!(rows.rows[1], vec![Cell::Int(7), Cell::Null]);
    }
}
