//! Static-token authentication for the REST API and the WebSocket upgrade.
//!
//! The token is kept only as its SHA-256 digest and candidates are compared digest to digest
//! with [`subtle::ConstantTimeEq`], so neither the comparison time nor a memory dump reveals it.
//! Rejection reasons are logged at debug; the token itself is never logged.

use std::fmt;

use hyper::HeaderMap;
use hyper::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ApiToken;
use crate::http::error::ApiError;

/// Prefix of a WebSocket subprotocol that carries the token: `bearer.<token>`.
const PROTOCOL_PREFIX: &str = "bearer.";

/// Checks request credentials against the configured [`ApiToken`]. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    digest: [u8; 32],
}

impl Authenticator {
    /// Remembers the digest of `token` (not the token).
    pub fn new(token: &ApiToken) -> Authenticator {
        Authenticator { digest: sha256(token.expose().as_bytes()) }
    }

    /// REST check: `Authorization: Bearer <token>`.
    ///
    /// No header, or another scheme → [`ApiError::MissingToken`] (401); a different token →
    /// [`ApiError::InvalidToken`] (403), as in the Node service.
    pub fn check_bearer(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match bearer_token(headers) {
            None => {
                tracing::debug!(reason = "no bearer token", "request not authenticated");
                Err(ApiError::MissingToken)
            }
            Some(candidate) if self.matches(candidate) => Ok(()),
            Some(_) => {
                tracing::debug!(reason = "wrong bearer token", "request not authenticated");
                Err(ApiError::InvalidToken)
            }
        }
    }

    /// WebSocket check. Browsers cannot set headers on a WebSocket, so besides
    /// `Authorization: Bearer` the token may come as a `token` query parameter (percent-decoded)
    /// or as a `Sec-WebSocket-Protocol` entry, either `bearer.<token>` or the bare token.
    ///
    /// Returns the offered protocol that carried the token, which the 101 response must echo
    /// (a browser fails the connection if the server selects none of the protocols it offered),
    /// or `None` when the token came from the header or the query.
    pub fn check_ws(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Option<String>, ApiError> {
        let mut offered = false;

        // Protocols first: if the token is among them, that protocol must be echoed even when
        // the header or query also carried it.
        for protocol in offered_protocols(headers) {
            let (candidate, prefixed) = match protocol.split_at_checked(PROTOCOL_PREFIX.len()) {
                Some((head, tail)) if head.eq_ignore_ascii_case(PROTOCOL_PREFIX) => (tail, true),
                _ => (protocol, false),
            };
            // A bare protocol may be an ordinary application protocol, not a token attempt.
            offered |= prefixed;
            if self.matches(candidate.as_bytes()) {
                return Ok(Some(protocol.to_owned()));
            }
        }

        if let Some(candidate) = bearer_token(headers) {
            offered = true;
            if self.matches(candidate) {
                return Ok(None);
            }
        }

        if let Some(raw) = query.and_then(|q| query_param(q, "token")) {
            offered = true;
            if percent_decode(raw).is_some_and(|candidate| self.matches(&candidate)) {
                return Ok(None);
            }
        }

        if offered {
            tracing::debug!(reason = "wrong token", "websocket not authenticated");
            Err(ApiError::InvalidToken)
        } else {
            tracing::debug!(reason = "no token", "websocket not authenticated");
            Err(ApiError::MissingToken)
        }
    }

    fn matches(&self, candidate: &[u8]) -> bool {
        sha256(candidate).ct_eq(&self.digest).into()
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authenticator { .. }")
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive); `None` if the header
/// is absent, uses another scheme or has an empty token.
fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Every comma-separated entry of every `Sec-WebSocket-Protocol` header, trimmed.
fn offered_protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|protocol| !protocol.is_empty())
}

/// The raw (still percent-encoded) value of the first `name=` parameter of a query string.
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').filter_map(|pair| pair.split_once('=')).find(|(key, _)| *key == name).map(|(_, value)| value)
}

/// Decodes `%XX` escapes; `None` on a malformed escape. `+` stays `+`: tokens may be base64,
/// where `+` is literal, and a token never contains a space.
fn percent_decode(raw: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = hex_value(bytes.next()?)?;
            let lo = hex_value(bytes.next()?)?;
            out.push((hi << 4) | lo);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    const TOKEN: &str = "s3cret+token/with=chars";

    fn auth() -> Authenticator {
        Authenticator::new(&ApiToken::new(TOKEN))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn bearer_ok() {
        let h = headers(&[("authorization", &format!("Bearer {TOKEN}"))]);
        assert!(auth().check_bearer(&h).is_ok());
        let h = headers(&[("authorization", &format!("bearer   {TOKEN} "))]);
        assert!(auth().check_bearer(&h).is_ok());
    }

    #[test]
    fn bearer_missing_or_other_scheme_is_401() {
        for h in [
            headers(&[]),
            headers(&[("authorization", "Basic dXNlcjpwYXNz")]),
            headers(&[("authorization", "Bearer")]),
            headers(&[("authorization", "Bearer   ")]),
            headers(&[("authorization", &format!("Bearer{TOKEN}"))]),
            headers(&[("authorization", TOKEN)]),
        ] {
            assert!(matches!(auth().check_bearer(&h), Err(ApiError::MissingToken)), "{h:?}");
        }
    }

    #[test]
    fn bearer_wrong_token_is_403() {
        for wrong in ["nope", "s3cret+token/with=char", "S3CRET+TOKEN/WITH=CHARS"] {
            let h = headers(&[("authorization", &format!("Bearer {wrong}"))]);
            assert!(matches!(auth().check_bearer(&h), Err(ApiError::InvalidToken)));
        }
    }

    #[test]
    fn ws_header_and_query() {
        let h = headers(&[("authorization", &format!("Bearer {TOKEN}"))]);
        assert_eq!(auth().check_ws(&h, None).unwrap(), None);

        let encoded = "s3cret%2Btoken%2Fwith%3Dchars";
        let query = format!("foo=1&token={encoded}");
        assert_eq!(auth().check_ws(&headers(&[]), Some(&query)).unwrap(), None);
        // Unencoded reserved characters are literal too ('+' is not a space).
        let query = format!("token={TOKEN}");
        assert_eq!(auth().check_ws(&headers(&[]), Some(&query)).unwrap(), None);
    }

    #[test]
    fn ws_query_errors() {
        let empty = headers(&[]);
        assert!(matches!(auth().check_ws(&empty, None), Err(ApiError::MissingToken)));
        assert!(matches!(auth().check_ws(&empty, Some("a=b")), Err(ApiError::MissingToken)));
        assert!(matches!(auth().check_ws(&empty, Some("token=wrong")), Err(ApiError::InvalidToken)));
        assert!(matches!(auth().check_ws(&empty, Some("token=%zz")), Err(ApiError::InvalidToken)));
        assert!(matches!(auth().check_ws(&empty, Some("token=")), Err(ApiError::InvalidToken)));
        let h = headers(&[("authorization", "Bearer wrong")]);
        assert!(matches!(auth().check_ws(&h, None), Err(ApiError::InvalidToken)));
    }

    #[test]
    fn ws_subprotocol_is_echoed() {
        let hex = "0123456789abcdef0123456789abcdef";
        let a = Authenticator::new(&ApiToken::new(hex));

        let h = headers(&[("sec-websocket-protocol", &format!("json, bearer.{hex}"))]);
        assert_eq!(a.check_ws(&h, None).unwrap().as_deref(), Some(format!("bearer.{hex}").as_str()));

        let h = headers(&[("sec-websocket-protocol", "json"), ("sec-websocket-protocol", hex)]);
        assert_eq!(a.check_ws(&h, None).unwrap().as_deref(), Some(hex));

        // Token also in the query: still echo the protocol that carried it.
        let h = headers(&[("sec-websocket-protocol", &format!("Bearer.{hex}"))]);
        let query = format!("token={hex}");
        assert_eq!(a.check_ws(&h, Some(&query)).unwrap().as_deref(), Some(format!("Bearer.{hex}").as_str()));
    }

    #[test]
    fn ws_subprotocol_errors() {
        let a = auth();
        let h = headers(&[("sec-websocket-protocol", "bearer.wrong")]);
        assert!(matches!(a.check_ws(&h, None), Err(ApiError::InvalidToken)));
        // A plain application protocol is not a token attempt.
        let h = headers(&[("sec-websocket-protocol", "json")]);
        assert!(matches!(a.check_ws(&h, None), Err(ApiError::MissingToken)));
        // ...but a valid token elsewhere still authenticates, with nothing to echo.
        let h = headers(&[("sec-websocket-protocol", "json"), ("authorization", &format!("Bearer {TOKEN}"))]);
        assert_eq!(a.check_ws(&h, None).unwrap(), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2f%2F+").unwrap(), b"a b//+");
        assert!(percent_decode("%").is_none());
        assert!(percent_decode("%4").is_none());
        assert!(percent_decode("%g0").is_none());
    }

    #[test]
    fn debug_does_not_leak() {
        assert_eq!(format!("{:?}", auth()), "Authenticator { .. }");
    }
}
