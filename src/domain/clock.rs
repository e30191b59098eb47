//! The wall clock every layer stamps its times with.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now as unix milliseconds (0 if the clock is before 1970): the clock of every stored time.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
