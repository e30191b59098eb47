//! Your users' own JWTs (seeds 003 and 004): a token issued by the app's identity provider
//! (Supabase, or any issuer of RS256/ES256/HS256 tokens) names one user, and so one session.
//!
//! [`JwtVerifier::verify`] checks a token against the configured keys — `JWT_SECRET` for the
//! HMAC family, `JWT_PUBLIC_KEY_FILE` and the `JWT_JWKS_URL` set ([`jwks`]) for RSA and EC — then
//! its `exp`/`nbf` (60 s of clock skew), `JWT_ISSUER` and `JWT_AUDIENCE`, and turns the
//! `JWT_SESSION_CLAIM` into a session id with [`SessionId::from_identity`].
//!
//! The algorithm is chosen by the keys, never by the token: an HMAC token is checked with
//! `JWT_SECRET` only, so one signed with the RSA public key's bytes (the classic confusion) does
//! not verify, and `none` is no algorithm at all. Each failure is its own 401 code; none of them
//! says anything about the keys.

mod jwks;

use std::path::PathBuf;
use std::str::FromStr as _;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::api::error::ApiError;
use crate::config::JwtSettings;
use crate::domain::SessionId;

use jwks::{Jwks, KeyFamily};

/// Seconds of clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 60;

/// Why the JWT settings cannot be used (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum JwtSetupError {
    #[error("JWT_PUBLIC_KEY_FILE '{}': {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("JWT_PUBLIC_KEY_FILE '{}' holds a private key; give the public one (openssl pkey -in KEY -pubout)", path.display())]
    PrivateKey { path: PathBuf },
    #[error("JWT_PUBLIC_KEY_FILE '{}' is not an RSA or EC public key in PEM", path.display())]
    NotAPublicKey { path: PathBuf },
    #[error("invalid JWT_SCOPES: unknown scope '{0}'")]
    UnknownScope(String),
}

/// Checks the users' JWTs. Built once at start-up from [`JwtSettings`].
pub struct JwtVerifier {
    secret: Option<DecodingKey>,
    public_key: Option<(KeyFamily, DecodingKey)>,
    jwks: Option<Jwks>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    claim: String,
}

/// The part of a JWT header we look at before trusting anything.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl JwtVerifier {
    /// Reads the public key file, if any, and prepares the JWK set's client.
    pub fn from_settings(settings: &JwtSettings) -> Result<JwtVerifier, JwtSetupError> {
        let secret = settings.secret.as_ref().and_then(|s| DecodingKey::from_secret(s.expose().as_bytes()).ok());
        let public_key = settings.public_key_file.as_deref().map(read_public_key).transpose()?;
        let jwks = settings
            .jwks_url
            .as_ref()
            .map(|url| Jwks::new(url.clone(), settings.jwks_refresh, settings.jwks_min_refresh));
        Ok(JwtVerifier {
            secret,
            public_key,
            jwks,
            issuers: settings.issuers.clone(),
            audiences: settings.audiences.clone(),
            claim: settings.session_claim.clone(),
        })
    }

    /// The session `token` names, once its signature, times, issuer and audience check out.
    pub async fn verify(&self, token: &str) -> Result<SessionId, ApiError> {
        let header = header_of(token)?;
        let alg = Algorithm::from_str(&header.alg).map_err(|_| {
            tracing::debug!(reason = "unknown or forbidden algorithm", "jwt refused");
            ApiError::TokenAlgorithm
        })?;
        let family = KeyFamily::of(alg).ok_or(ApiError::TokenAlgorithm)?;
        if !self.accepts(family) {
            tracing::debug!(reason = "no key of this algorithm's family", ?alg, "jwt refused");
            return Err(ApiError::TokenAlgorithm);
        }
        let validation = self.validation(alg);

        if family == KeyFamily::Hmac {
            let Some(secret) = &self.secret else { return Err(ApiError::TokenAlgorithm) };
            return self.decode(token, secret, &validation);
        }
        if let Some((key_family, key)) = &self.public_key
            && *key_family == family
        {
            match self.decode(token, key, &validation) {
                Err(ApiError::TokenSignature) if self.jwks.is_some() => {}
                verdict => return verdict,
            }
        }
        let Some(jwks) = &self.jwks else { return Err(ApiError::TokenSignature) };
        let keys = jwks.keys_for(alg, header.kid.as_deref()).await?;
        let mut verdict = Err(ApiError::TokenSignature);
        for key in keys.matching(alg, header.kid.as_deref()) {
            verdict = self.decode(token, key, &validation);
            if !matches!(verdict, Err(ApiError::TokenSignature)) {
                break;
            }
        }
        if matches!(verdict, Err(ApiError::TokenSignature)) {
            tracing::debug!(reason = "no key verifies the signature", kid = header.kid.as_deref(), "jwt refused");
        }
        verdict
    }

    fn accepts(&self, family: KeyFamily) -> bool {
        match family {
            KeyFamily::Hmac => self.secret.is_some(),
            KeyFamily::Rsa | KeyFamily::Ec => {
                self.jwks.is_some() || self.public_key.as_ref().is_some_and(|(f, _)| *f == family)
            }
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        if self.issuers.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&self.issuers);
        }
        if self.audiences.is_empty() {
            // Supabase puts `aud: "authenticated"` in every token: not checked unless asked.
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
        }
        validation
    }

    /// Verifies `token` with `key`, then reads its session.
    fn decode(&self, token: &str, key: &DecodingKey, validation: &Validation) -> Result<SessionId, ApiError> {
        let claims =
            jsonwebtoken::decode::<Map<String, Value>>(token, key, validation).map_err(|e| refused(e.kind()))?.claims;
        session_of(&claims, &self.claim)
    }
}

/// The session a verified token's `claim` names: a string, or a whole number (some identity
/// providers number their users).
fn session_of(claims: &Map<String, Value>, claim: &str) -> Result<SessionId, ApiError> {
    let raw = match claims.get(claim) {
        Some(Value::String(text)) => Some(text.clone()),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    };
    raw.as_deref().and_then(SessionId::from_identity).ok_or_else(|| {
        tracing::debug!(reason = "session claim missing or unusable", claim, "jwt refused");
        ApiError::TokenClaimMissing { claim: claim.to_owned() }
    })
}

/// The header of a JWT-shaped token, read without trusting it.
fn header_of(token: &str) -> Result<RawHeader, ApiError> {
    let malformed = || {
        tracing::debug!(reason = "malformed", "jwt refused");
        ApiError::TokenMalformed
    };
    let encoded = token.split('.').next().ok_or_else(malformed)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).map_err(|_| malformed())?;
    serde_json::from_slice(&json).map_err(|_| malformed())
}

/// The error of a refused token, by what jsonwebtoken found.
fn refused(kind: &ErrorKind) -> ApiError {
    let error = match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => ApiError::TokenSignature,
        ErrorKind::ExpiredSignature => ApiError::TokenExpired,
        ErrorKind::ImmatureSignature => ApiError::TokenNotYetValid,
        ErrorKind::InvalidIssuer => ApiError::TokenIssuer,
        ErrorKind::InvalidAudience => ApiError::TokenAudience,
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            ApiError::TokenClaimMissing { claim: claim.clone() }
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            ApiError::TokenAlgorithm
        }
        _ => ApiError::TokenMalformed,
    };
    tracing::debug!(reason = error.code(), "jwt refused");
    error
}

/// True for a token shaped like a JWT: three base64url parts, the last possibly empty (an
/// unsigned token, refused later as `TOKEN_ALGORITHM`).
pub(crate) fn looks_like_jwt(token: &[u8]) -> bool {
    let base64url = |part: &[u8]| part.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    let mut parts = token.split(|b| *b == b'.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(claims), Some(signature), None) => {
            !header.is_empty() && !claims.is_empty() && base64url(header) && base64url(claims) && base64url(signature)
        }
        _ => false,
    }
}

/// The public key of `JWT_PUBLIC_KEY_FILE`: RSA, else EC.
fn read_public_key(path: &std::path::Path) -> Result<(KeyFamily, DecodingKey), JwtSetupError> {
    let pem = std::fs::read(path).map_err(|source| JwtSetupError::Read { path: path.into(), source })?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("PRIVATE KEY-----") {
        return Err(JwtSetupError::PrivateKey { path: path.into() });
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((KeyFamily::Rsa, key));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((KeyFamily::Ec, key));
    }
    Err(JwtSetupError::NotAPublicKey { path: path.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shapes() {
        for jwt in ["eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.", "a.b.c", "eyJ-_.x_Y-.sig-_"] {
            assert!(looks_like_jwt(jwt.as_bytes()), "{jwt}");
        }
        for other in ["s3cret+token/with=chars", "a.b", "a.b.c.d", ".b.c", "a..c", "a.b.c=", "a.b+.c", ""] {
            assert!(!looks_like_jwt(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn the_session_claim_may_be_a_string_or_a_whole_number() {
        let claims = |json: Value| json.as_object().cloned().unwrap();
        let id = session_of(&claims(serde_json::json!({"sub": "3f1c2b9e-7d4a"})), "sub").unwrap();
        assert_eq!(id.as_str(), "3f1c2b9e-7d4a");
        assert_eq!(session_of(&claims(serde_json::json!({"uid": 42})), "uid").unwrap().as_str(), "42");
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"sub": ""}),
            serde_json::json!({"sub": [1]}),
            serde_json::json!({"sub": 1.5}),
        ] {
            assert!(matches!(session_of(&claims(bad), "sub"), Err(ApiError::TokenClaimMissing { .. })));
        }
    }

    #[test]
    fn headers_are_read_without_trust() {
        assert!(matches!(header_of("!!!.x.y"), Err(ApiError::TokenMalformed)));
        // {"typ":"JWT"}: no alg.
        assert!(matches!(header_of("eyJ0eXAiOiJKV1QifQ.x.y"), Err(ApiError::TokenMalformed)));
        let header = header_of("eyJhbGciOiJub25lIiwia2lkIjoiYSJ9.x.").unwrap();
        assert_eq!((header.alg.as_str(), header.kid.as_deref()), ("none", Some("a")));
    }
}
