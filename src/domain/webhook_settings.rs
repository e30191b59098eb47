//! What the configuration says about webhooks: the endpoints named by the environment
//! (`WEBHOOK_URL`, or a seed's `BACKEND_URL` / `BACKEND_BASE_URL`), the outbox's limits, the
//! [`WebhookFormat`] an endpoint is posted in, and which URLs we post to at all.

use std::time::Duration;

use serde::Serialize;

use super::{EventKind, WebhookSecret};

/// Whether `url` is an http or https URL we post to: a host name or IP (IPv6 in brackets), an
/// optional port, and a path and query of URL characters (the OpenAPI pattern says the same).
pub fn is_http_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else { return false };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, tail))
                if !addr.is_empty()
                    && addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
                    && (tail.is_empty() || tail.starts_with(':')) =>
            {
                (addr, tail.strip_prefix(':'))
            }
            _ => return false,
        },
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let host_ok = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    let port_ok = port.is_none_or(|p| !p.starts_with('0') && p.parse::<u16>().is_ok_and(|n| n > 0));
    let path_ok = path.chars().all(|c| c.is_ascii_alphanumeric() || "._~!$&'()*+,;=:@%/?-".contains(c));
    host_ok && port_ok && path_ok && url.parse::<axum::http::Uri>().is_ok()
}

/// An endpoint from the environment: `WEBHOOK_URL`, `WEBHOOK_SECRET`, `WEBHOOK_EVENTS`; or a
/// seed's callbacks, `BACKEND_URL` or `BACKEND_BASE_URL`.
#[derive(Debug, Clone)]
pub struct EnvEndpoint {
    pub url: String,
    /// Generated (and kept) when absent.
    pub secret: Option<WebhookSecret>,
    /// `None`: every event.
    pub events: Option<Vec<EventKind>>,
    pub format: WebhookFormat,
}

/// Settings from the configuration.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub env_endpoint: Option<EnvEndpoint>,
    /// `BACKEND_URL`: seed 000's callbacks (or seed 002's when only it is on).
    pub backend_url: Option<EnvEndpoint>,
    /// `BACKEND_BASE_URL`: seed 002's callbacks.
    pub backend_base_url: Option<EnvEndpoint>,
    /// `WEBHOOK_MAX_RETRY_SECS` (86,400): how long after the event retries go on.
    pub max_retry_age: Duration,
    /// `WEBHOOK_RETRY_BASE_MS` (1,000): the first retry's ceiling; each doubles it, up to an hour.
    pub retry_base: Duration,
    /// `WEBHOOK_OUTBOX_MAX` (100,000): pending deliveries per endpoint.
    pub outbox_max: u64,
    /// `WEBHOOK_TIMEOUT_MS` (10,000): how long a receiver may take to answer.
    pub timeout: Duration,
    /// `WEBHOOK_ALLOW_PRIVATE` (false): endpoints of tokens other than the admin may post to
    /// private addresses too.
    pub allow_private: bool,
    /// `WEBHOOK_RETENTION_DAYS` (30; `None` for 0 = keep forever): settled deliveries (delivered,
    /// or failed for good) are deleted this long after they settled.
    pub retention: Option<Duration>,
}

/// How an endpoint's events are posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// Our events, to the endpoint's URL.
    #[default]
    Standard,
    /// Seed 000's callbacks, below the endpoint's URL.
    Seed000,
    /// Seed 002's callbacks, below the endpoint's URL.
    Seed002,
}

impl WebhookFormat {
    pub const ALL: [WebhookFormat; 3] = [WebhookFormat::Standard, WebhookFormat::Seed000, WebhookFormat::Seed002];

    /// The name in JSON and SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Standard => "standard",
            WebhookFormat::Seed000 => "seed000",
            WebhookFormat::Seed002 => "seed002",
        }
    }

    pub fn parse(text: &str) -> Option<WebhookFormat> {
        WebhookFormat::ALL.into_iter().find(|f| f.as_str() == text)
    }

    /// Whether any event of `kind` may be posted in this format.
    pub fn posts(self, kind: EventKind) -> bool {
        match self {
            WebhookFormat::Standard => true,
            WebhookFormat::Seed000 | WebhookFormat::Seed002 => matches!(
                kind,
                EventKind::SessionQr
                    | EventKind::SessionConnected
                    | EventKind::SessionStatus
                    | EventKind::MessageReceived
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_http_url;

    #[test]
    fn only_http_urls_we_can_post_to() {
        for ok in
            ["http://127.0.0.1:8080/hooks", "https://api.example.com/w?x=1", "http://[::1]:9000/", "http://backend"]
        {
            assert!(is_http_url(ok), "{ok}");
        }
        for bad in [
            "ftp://x/y",
            "http://",
            "http://jbAQX*",
            "https://a:0/",
            "https://a:99999/",
            "http://a b/",
            "//x",
            "http://a/\u{ac}",
            "http://[f7B4250.7D]*",
        ] {
            assert!(!is_http_url(bad), "{bad}");
        }
    }
}
