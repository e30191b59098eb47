//! `JWT_JWKS_URL`: the identity provider's public keys, fetched when first needed, kept, and
//! fetched again once `JWT_JWKS_REFRESH_SECS` old or when a token names a `kid` we do not have
//! (the provider rotated its keys). Fetches are at least `JWT_JWKS_MIN_REFRESH_SECS` apart
//! however many tokens name unknown `kid`s, so nobody can make us hammer the provider; one fetch
//! runs at a time and the requests that need it wait for it. A failed fetch keeps the keys we
//! had.
//!
//! Only signing keys of the RSA and EC (P-256, P-384) families are kept: an `oct` key in the set
//! would let the set's publisher make HMAC keys of public data, and is ignored.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::api::error::ApiError;

/// Longest a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWK set read.
const MAX_SET_BYTES: u64 = 256 * 1024;

/// The key families a token's algorithm may belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyFamily {
    Hmac,
    Rsa,
    Ec,
}

impl KeyFamily {
    /// The family of `alg`; `None` for one we do not take (EdDSA).
    pub(super) fn of(alg: Algorithm) -> Option<KeyFamily> {
        match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Some(KeyFamily::Hmac),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => Some(KeyFamily::Rsa),
            Algorithm::ES256 | Algorithm::ES384 => Some(KeyFamily::Ec),
            _ => None,
        }
    }
}

/// One usable key of the set.
struct SetKey {
    kid: Option<String>,
    /// The key's own `alg`, when it names one.
    alg: Option<Algorithm>,
    family: KeyFamily,
    key: DecodingKey,
}

/// The keys as last fetched.
#[derive(Default)]
pub(super) struct KeySet {
    keys: Vec<SetKey>,
    /// When they were fetched; `None` before the first successful fetch.
    fetched: Option<Instant>,
}

impl KeySet {
    /// The keys that may verify a token of `alg` naming `kid` (every key of the family when the
    /// token names none).
    pub(super) fn matching(&self, alg: Algorithm, kid: Option<&str>) -> impl Iterator<Item = &DecodingKey> {
        let family = KeyFamily::of(alg);
        self.keys
            .iter()
            .filter(move |k| Some(k.family) == family && k.alg.is_none_or(|a| a == alg))
            .filter(move |k| kid.is_none() || k.kid.as_deref() == kid)
            .map(|k| &k.key)
    }

    fn has(&self, alg: Algorithm, kid: Option<&str>) -> bool {
        self.matching(alg, kid).next().is_some()
    }
}

/// The JWK set of `JWT_JWKS_URL`.
pub(super) struct Jwks {
    url: String,
    refresh: Duration,
    min_refresh: Duration,
    agent: ureq::Agent,
    current: RwLock<Arc<KeySet>>,
    /// When the last fetch started: held for the whole fetch, so one runs at a time.
    last_try: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    pub(super) fn new(url: String, refresh: Duration, min_refresh: Duration) -> Jwks {
        let config = ureq::config::Config::builder()
            .http_status_as_error(false)
            .timeout_global(Some(FETCH_TIMEOUT))
            .max_redirects(3)
            .build();
        Jwks {
            url,
            refresh,
            min_refresh,
            agent: ureq::Agent::new_with_config(config),
            current: RwLock::default(),
            last_try: tokio::sync::Mutex::new(None),
        }
    }

    fn current(&self) -> Arc<KeySet> {
        self.current.read().map_or_else(|poisoned| poisoned.into_inner().clone(), |set| set.clone())
    }

    /// The keys to check a token of `alg` naming `kid` with: the kept ones, fetched again first
    /// if they are old or lack that key (and the floor allows). 503 `TOKEN_KEYS_UNAVAILABLE`
    /// while no fetch has ever succeeded.
    pub(super) async fn keys_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<Arc<KeySet>, ApiError> {
        let wanted = |set: &KeySet| {
            let fresh = set.fetched.is_some_and(|at| at.elapsed() < self.refresh);
            fresh && set.has(alg, kid)
        };
        let set = self.current();
        if wanted(&set) {
            return Ok(set);
        }
        let mut last_try = self.last_try.lock().await;
        // Another request may have fetched while this one waited.
        let set = self.current();
        if wanted(&set) || !may_fetch(*last_try, Instant::now(), self.min_refresh) {
            return usable(set);
        }
        *last_try = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(url = %self.url, keys = keys.len(), "JWT signing keys fetched");
                let set = Arc::new(KeySet { keys, fetched: Some(Instant::now()) });
                match self.current.write() {
                    Ok(mut current) => *current = set.clone(),
                    Err(poisoned) => *poisoned.into_inner() = set.clone(),
                }
                Ok(set)
            }
            Err(error) => {
                tracing::warn!(url = %self.url, %error, "cannot fetch the JWT signing keys; keeping the ones we had");
                usable(set)
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<SetKey>, String> {
        let (agent, url) = (self.agent.clone(), self.url.clone());
        let body = tokio::task::spawn_blocking(move || {
            let mut response = agent.get(&url).call().map_err(|e| e.to_string())?;
            if response.status() != 200 {
                return Err(format!("status {}", response.status().as_u16()));
            }
            response.body_mut().with_config().limit(MAX_SET_BYTES).read_to_vec().map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        parse_set(&body)
    }
}

/// The kept keys, unless none was ever fetched.
fn usable(set: Arc<KeySet>) -> Result<Arc<KeySet>, ApiError> {
    if set.fetched.is_some() { Ok(set) } else { Err(ApiError::TokenKeysUnavailable) }
}

/// True if a fetch may start at `now`, the last one having started at `last` (`None`: never):
/// the floor between two fetches.
pub(crate) fn may_fetch(last: Option<Instant>, now: Instant, floor: Duration) -> bool {
    last.is_none_or(|last| now.saturating_duration_since(last) >= floor)
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// The usable signing keys of a JWK set; keys we cannot use are skipped, not fatal.
fn parse_set(body: &[u8]) -> Result<Vec<SetKey>, String> {
    let set: RawSet = serde_json::from_slice(body).map_err(|_| "not a JWK set".to_owned())?;
    Ok(set.keys.into_iter().filter_map(|raw| serde_json::from_value::<Jwk>(raw).ok()).filter_map(usable_key).collect())
}

fn usable_key(jwk: Jwk) -> Option<SetKey> {
    if matches!(jwk.common.public_key_use, Some(ref use_) if *use_ != PublicKeyUse::Signature) {
        return None;
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
        AlgorithmParameters::EllipticCurve(ec) if matches!(ec.curve, EllipticCurve::P256 | EllipticCurve::P384) => {
            KeyFamily::Ec
        }
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(named) => {
            let alg = Algorithm::try_from(named).ok()?;
            (KeyFamily::of(alg) == Some(family)).then_some(alg)?;
            Some(alg)
        }
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(SetKey { kid: jwk.common.key_id, alg, family, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetches_are_at_least_the_floor_apart() {
        let start = Instant::now();
        let floor = Duration::from_secs(30);
        assert!(may_fetch(None, start, floor), "the first fetch is always allowed");
        assert!(!may_fetch(Some(start), start, floor));
        assert!(!may_fetch(Some(start), start + Duration::from_secs(29), floor));
        assert!(may_fetch(Some(start), start + Duration::from_secs(30), floor));
        assert!(may_fetch(Some(start), start, Duration::ZERO), "0 means no floor");
    }

    #[test]
    fn only_rsa_and_ec_signing_keys_are_kept() {
        let set = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "sym"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "ec1", "alg": "ES256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "lying", "alg": "RS256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "weird"}
        ]});
        let keys = parse_set(set.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, ["ec1"]);
        let set = KeySet { keys, fetched: Some(Instant::now()) };
        assert!(set.has(Algorithm::ES256, Some("ec1")));
        assert!(set.has(Algorithm::ES256, None));
        assert!(!set.has(Algorithm::ES384, Some("ec1")), "the key's own alg is ES256");
        assert!(!set.has(Algorithm::RS256, None));
        assert!(!set.has(Algorithm::ES256, Some("other")));
        assert!(parse_set(b"[]").is_err());
    }
}
