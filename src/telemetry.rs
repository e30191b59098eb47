//! Logging setup: one `tracing` subscriber for the binary, and a quiet one for tests.
//!
//! `RUST_LOG`, when set, wins over `LOG_LEVEL` so an operator can turn up one module
//! (`RUST_LOG=info,whatsapp_gateway::session=debug`) without editing the service's config.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber with `level` (an `EnvFilter` directive such as `info` or
/// `warn,whatsapp_gateway=debug`) unless `RUST_LOG` is set. An invalid `level` falls back to
/// `info`. Does nothing if a subscriber is already installed. Colours only on a terminal: under
/// PM2, systemd or Docker the log is a file, and escape codes in it break `grep addr=`.
pub fn init(level: &str) {
    use std::io::IsTerminal as _;
    let filter = filter_from(std::env::var("RUST_LOG").ok().as_deref(), level);
    let ansi = std::io::stdout().is_terminal();
    // Ignoring the error keeps init idempotent: a second call leaves the first subscriber.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(true).with_ansi(ansi).try_init();
}

/// For tests: silent unless `TEST_LOG` is set (then `RUST_LOG`, else `debug`), written through
/// the test harness's capture. Safe to call from every test.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_none() {
        return;
    }
    let filter = filter_from(std::env::var("RUST_LOG").ok().as_deref(), "debug");
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// `rust_log` if it is set, non-empty and valid; else `level`; else `info`.
fn filter_from(rust_log: Option<&str>, level: &str) -> EnvFilter {
    rust_log
        .filter(|directives| !directives.trim().is_empty())
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_wins_over_level() {
        assert_eq!(filter_from(Some("warn"), "debug").to_string(), "warn");
        assert_eq!(filter_from(None, "debug").to_string(), "debug");
        assert_eq!(filter_from(Some("  "), "debug").to_string(), "debug");
    }

    #[test]
    fn invalid_values_fall_back() {
        assert_eq!(filter_from(Some("[[["), "error").to_string(), "error");
        assert_eq!(filter_from(None, "=nonsense=").to_string(), "info");
    }
}
