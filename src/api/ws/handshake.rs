//! WebSocket upgrade checks (RFC 6455 §4.2.1) for hyper 1 requests, the 101 answer, and the
//! socket limits we run with.
//!
//! Pure functions over `Request`/`Response` heads: the caller authenticates, calls
//! [`validate_upgrade`], answers with [`UpgradeInfo::switching_protocols`] and only then takes
//! `hyper::upgrade::on(req)` and wraps the stream with [`socket_config`].

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, Request, StatusCode};
use axum::response::Response;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::api::error::error_response;

/// The only WebSocket version there is.
const WS_VERSION: &str = "13";

/// What a valid upgrade request yields: enough to write the 101 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeInfo {
    accept_key: String,
}

/// Why a request is not an acceptable WebSocket upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeRejection {
    /// Not a GET (405).
    #[error("websocket upgrade requires GET")]
    MethodNotGet,
    /// `Connection` lacks the `upgrade` token (426).
    #[error("missing 'Connection: upgrade' header")]
    NoConnectionUpgrade,
    /// `Upgrade` lacks `websocket` (426).
    #[error("missing 'Upgrade: websocket' header")]
    NoUpgradeWebsocket,
    /// `Sec-WebSocket-Version` absent or not 13 (426, advertising 13).
    #[error("unsupported websocket version; only 13 is supported")]
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` absent or not the base64 of 16 bytes (400).
    #[error("missing or malformed 'Sec-WebSocket-Key' header")]
    BadKey,
}

impl HandshakeRejection {
    /// The HTTP status of this rejection.
    pub fn status(&self) -> StatusCode {
        match self {
            HandshakeRejection::MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            HandshakeRejection::NoConnectionUpgrade
            | HandshakeRejection::NoUpgradeWebsocket
            | HandshakeRejection::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            HandshakeRejection::BadKey => StatusCode::BAD_REQUEST,
        }
    }

    /// The stable error code in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            HandshakeRejection::MethodNotGet => "METHOD_NOT_ALLOWED",
            HandshakeRejection::NoConnectionUpgrade | HandshakeRejection::NoUpgradeWebsocket => "UPGRADE_REQUIRED",
            HandshakeRejection::UnsupportedVersion => "UNSUPPORTED_WEBSOCKET_VERSION",
            HandshakeRejection::BadKey => "BAD_WEBSOCKET_KEY",
        }
    }

    /// The error response, in the API's JSON error shape, with the headers RFC 6455 and
    /// RFC 9110 ask for (`Allow`, `Upgrade`, `Sec-WebSocket-Version`).
    pub fn into_response(self) -> Response {
        let mut response = error_response(self.status(), self.code(), &self.to_string());
        let headers = response.headers_mut();
        match self {
            HandshakeRejection::MethodNotGet => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            HandshakeRejection::NoConnectionUpgrade
            | HandshakeRejection::NoUpgradeWebsocket
            | HandshakeRejection::UnsupportedVersion => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static(WS_VERSION));
            }
            HandshakeRejection::BadKey => {
                headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static(WS_VERSION));
            }
        }
        response
    }
}

/// Checks that `req` is a WebSocket opening handshake: GET, `Connection: upgrade` (token list,
/// any case), `Upgrade: websocket`, `Sec-WebSocket-Version: 13` and a `Sec-WebSocket-Key` that
/// is the base64 of 16 bytes.
pub fn validate_upgrade<B>(req: &Request<B>) -> Result<UpgradeInfo, HandshakeRejection> {
    if req.method() != Method::GET {
        return Err(HandshakeRejection::MethodNotGet);
    }
    let headers = req.headers();
    if !header_has_token(headers, &header::CONNECTION, "upgrade") {
        return Err(HandshakeRejection::NoConnectionUpgrade);
    }
    if !header_has_token(headers, &header::UPGRADE, "websocket") {
        return Err(HandshakeRejection::NoUpgradeWebsocket);
    }
    let version_ok =
        headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v.as_bytes().trim_ascii() == WS_VERSION.as_bytes());
    if !version_ok {
        return Err(HandshakeRejection::UnsupportedVersion);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|v| v.as_bytes().trim_ascii())
        .filter(|key| is_valid_key(key))
        .ok_or(HandshakeRejection::BadKey)?;
    Ok(UpgradeInfo { accept_key: derive_accept_key(key) })
}

impl UpgradeInfo {
    /// The `Sec-WebSocket-Accept` value.
    #[cfg(test)]
    pub fn accept_key(&self) -> &str {
        &self.accept_key
    }

    /// `101 Switching Protocols`, echoing `protocol` (from
    /// [`Authenticator::check_ws`](crate::api::auth::Authenticator::check_ws)) if any.
    pub fn switching_protocols(&self, protocol: Option<&str>) -> Response {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        // The accept key is base64, always a valid header value.
        if let Ok(accept) = HeaderValue::from_str(&self.accept_key) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        // The protocol was read from a request header, so it is a valid header value too.
        if let Some(Ok(protocol)) = protocol.map(HeaderValue::from_str) {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        response
    }
}

/// Limits for our server sockets: small buffers (many idle admin sockets, tiny frames), a
/// bounded write buffer so a client that stops reading cannot grow our memory, and
/// `max_message` (`WS_MAX_MESSAGE_BYTES`) for what a client may send.
pub fn socket_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// True if any comma-separated element of any `name` header equals `token` (any case).
fn header_has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// RFC 6455: the key is a base64-encoded 16-byte value, i.e. 22 base64 characters and `==`.
fn is_valid_key(key: &[u8]) -> bool {
    let Some((body, padding)) = key.split_at_checked(22) else {
        return false;
    };
    key.len() == 24 && padding == b"==" && body.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from RFC 6455 §1.3.
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn request(method: Method, headers: &[(&'static str, &'static str)]) -> Request<()> {
        let mut builder = Request::builder().method(method).uri("/ws/session/tienda_lima");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn good_headers() -> Vec<(&'static str, &'static str)> {
        vec![
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", KEY),
        ]
    }

    fn without(name: &str) -> Vec<(&'static str, &'static str)> {
        good_headers().into_iter().filter(|(n, _)| *n != name).collect()
    }

    fn with(name: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
        let mut headers = without(name);
        headers.push((name, value));
        headers
    }

    #[test]
    fn accepts_rfc_example_and_derives_accept() {
        let info = validate_upgrade(&request(Method::GET, &good_headers())).unwrap();
        assert_eq!(info.accept_key(), ACCEPT);
    }

    #[test]
    fn connection_is_a_case_insensitive_token_list() {
        for value in ["keep-alive, Upgrade", "UPGRADE", "upgrade ,close"] {
            let req = request(Method::GET, &with("connection", value));
            assert!(validate_upgrade(&req).is_ok(), "{value}");
        }
        let req = request(Method::GET, &with("connection", "keep-alive, upgraded"));
        assert_eq!(validate_upgrade(&req), Err(HandshakeRejection::NoConnectionUpgrade));
        let req = request(Method::GET, &with("upgrade", "WebSocket"));
        assert!(validate_upgrade(&req).is_ok());
    }

    #[test]
    fn rejections() {
        let cases = [
            (request(Method::POST, &good_headers()), HandshakeRejection::MethodNotGet, 405),
            (request(Method::GET, &without("connection")), HandshakeRejection::NoConnectionUpgrade, 426),
            (request(Method::GET, &without("upgrade")), HandshakeRejection::NoUpgradeWebsocket, 426),
            (request(Method::GET, &with("upgrade", "h2c")), HandshakeRejection::NoUpgradeWebsocket, 426),
            (request(Method::GET, &without("sec-websocket-version")), HandshakeRejection::UnsupportedVersion, 426),
            (request(Method::GET, &with("sec-websocket-version", "8")), HandshakeRejection::UnsupportedVersion, 426),
            (request(Method::GET, &without("sec-websocket-key")), HandshakeRejection::BadKey, 400),
            (request(Method::GET, &with("sec-websocket-key", "short")), HandshakeRejection::BadKey, 400),
            (
                request(Method::GET, &with("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ")),
                HandshakeRejection::BadKey,
                400,
            ),
            (
                request(Method::GET, &with("sec-websocket-key", "dGhlIHNhbXBsZSBub25j!Q==")),
                HandshakeRejection::BadKey,
                400,
            ),
        ];
        for (req, expected, status) in cases {
            let rejection = validate_upgrade(&req).unwrap_err();
            assert_eq!(rejection, expected);
            assert_eq!(rejection.status().as_u16(), status);
        }
    }

    #[test]
    fn rejection_responses_carry_rfc_headers() {
        let response = HandshakeRejection::UnsupportedVersion.into_response();
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_VERSION], "13");
        assert_eq!(response.headers()[header::UPGRADE], "websocket");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let response = HandshakeRejection::MethodNotGet.into_response();
        assert_eq!(response.headers()[header::ALLOW], "GET");
    }

    #[test]
    fn switching_protocols_response() {
        let info = validate_upgrade(&request(Method::GET, &good_headers())).unwrap();
        let response = info.switching_protocols(None);
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_ACCEPT], ACCEPT);
        assert_eq!(response.headers()[header::UPGRADE], "websocket");
        assert_eq!(response.headers()[header::CONNECTION], "upgrade");
        assert!(response.headers().get(header::SEC_WEBSOCKET_PROTOCOL).is_none());

        let response = info.switching_protocols(Some("bearer.abc"));
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_PROTOCOL], "bearer.abc");
    }

    #[test]
    fn socket_config_limits() {
        let config = socket_config(64 * 1024);
        assert_eq!(config.read_buffer_size, 4096);
        assert_eq!(config.write_buffer_size, 4096);
        assert_eq!(config.max_write_buffer_size, 64 * 1024);
        assert!(config.max_write_buffer_size > config.write_buffer_size);
        assert_eq!(config.max_message_size, Some(64 * 1024));
        assert_eq!(config.max_frame_size, Some(64 * 1024));
    }
}
