//! A session as the registry keeps it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::SessionId;

/// One entry of `sessions.config.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionEntry {
    #[serde(rename = "sessionId")]
    pub session_id: SessionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Any JSON object the creator attached; echoed in the session and its events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// Fields we do not know, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
