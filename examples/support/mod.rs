//! What the benchmarks share. The intake ones: a gateway whose session is not linked (WhatsApp
//! is a closed port), so every request measures durable intake and nothing is sent. The
//! receiving ones: [`linked`], a session linked to an in-process fake server.
#![allow(dead_code)] // Each example uses part of it.

pub mod linked;

use std::path::Path;

/// The bearer token the benchmarks use.
pub const TOKEN: &str = "bench-token-0123456789abcdef";

/// Settings for a gateway on loopback port 0 keeping its state in `dir`, with queue bounds far
/// above any benchmark and no per-token rate limit (one client sends everything: the limit would
/// measure itself).
pub fn intake_env(dir: &Path) -> Vec<(String, String)> {
    [
        ("HOST", "127.0.0.1".to_string()),
        ("PORT", "0".into()),
        ("API_STATIC_TOKEN", TOKEN.into()),
        ("SESSIONS_DIR", dir.join("sessions").display().to_string()),
        ("SESSIONS_CONFIG", dir.join("sessions.config.json").display().to_string()),
        ("DATA_DIR", dir.join("data").display().to_string()),
        ("WHATSAPP_URL", "ws://127.0.0.1:9/ws/chat".into()),
        ("QUEUE_MAX_PER_SESSION", "1000000".into()),
        ("QUEUE_MAX_TOTAL", "1000000".into()),
        ("QUEUE_MAX_BYTES_PER_SESSION", "1000000000000".into()),
        ("QUEUE_MAX_TOTAL_BYTES", "1000000000000".into()),
        ("LOG_LEVEL", "warn".into()),
        ("RATE_LIMIT_PER_SECOND", "0".into()),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .into()
}
