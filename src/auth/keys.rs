//! Token verification keys: a static key (a PEM public key or an HS256 secret) or a JWKS
//! ([`super::jwks`]), and the rule that picks the key for a token.
//!
//! Each key verifies exactly one algorithm: RS256 for RSA, ES256 for P-256, EdDSA for Ed25519,
//! HS256 for the shared secret. A token whose header names another algorithm than its key's is
//! refused, so no key can be used with an algorithm it was not meant for.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::jwks::JwksCache;
use crate::config::auth::JwtConfig;

/// Algorithms mcpgate verifies.
pub const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
    Algorithm::HS256,
];

/// Why the configured key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds a private key; configure the public key only")]
    PrivateKey { path: PathBuf },
    #[error("{path} is not a PEM public key of type RSA, P-256 or Ed25519")]
    Pem {
        path: PathBuf,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    #[error("the HS256 secret cannot be used")]
    Secret(#[source] jsonwebtoken::errors::Error),
    #[error("cannot build the JWKS client")]
    Client(#[source] reqwest::Error),
}

/// A key that verifies tokens of one algorithm.
pub struct VerifyingKey {
    /// The JWK's `kid`; static keys have none.
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// Where a token's key comes from.
pub enum KeySource {
    /// One configured key, whatever the token's `kid`.
    Static(Arc<VerifyingKey>),
    /// The issuer's published keys.
    Jwks(Arc<JwksCache>),
}

impl KeySource {
    /// The source `[server.auth.jwt]` configures (validation made sure there is exactly one).
    pub async fn from_config(config: &JwtConfig) -> Result<Self, KeyError> {
        if let Some(url) = &config.jwks_url {
            let cache = Arc::new(JwksCache::new(url.clone(), config.jwks_cooldown)?);
            cache.refresh().await;
            cache.clone().refresh_every(config.jwks_refresh);
            return Ok(KeySource::Jwks(cache));
        }
        if let Some(path) = &config.public_key_file {
            return Ok(KeySource::Static(Arc::new(pem_key(path)?)));
        }
        let secret = config
            .hs256_secret
            .as_ref()
            .map(|s| s.expose())
            .unwrap_or_default();
        let key = DecodingKey::from_secret(secret.as_bytes()).map_err(KeyError::Secret)?;
        Ok(KeySource::Static(Arc::new(VerifyingKey {
            kid: None,
            algorithm: Algorithm::HS256,
            key,
        })))
    }

    /// The key for a token with header `kid` and `alg`, if one is known (a JWKS is fetched
    /// again for an unknown key, within its rate limit).
    pub async fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<VerifyingKey>> {
        match self {
            KeySource::Static(key) => Some(key.clone()),
            KeySource::Jwks(cache) => cache.find(kid, alg).await,
        }
    }
}

/// The key named `kid` or, for a token without `kid`, the only key of algorithm `alg`.
pub fn select(
    keys: &[Arc<VerifyingKey>],
    kid: Option<&str>,
    alg: Algorithm,
) -> Option<Arc<VerifyingKey>> {
    if let Some(kid) = kid {
        return keys.iter().find(|k| k.kid.as_deref() == Some(kid)).cloned();
    }
    let mut candidates = keys.iter().filter(|k| k.algorithm == alg);
    match (candidates.next(), candidates.next()) {
        (Some(only), None) => Some(only.clone()),
        _ => None,
    }
}

/// A PEM public key: RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA).
fn pem_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let pem = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    if String::from_utf8_lossy(&pem).contains("PRIVATE KEY") {
        return Err(KeyError::PrivateKey {
            path: path.to_owned(),
        });
    }
    let (algorithm, key) = DecodingKey::from_rsa_pem(&pem)
        .map(|key| (Algorithm::RS256, key))
        .or_else(|_| DecodingKey::from_ec_pem(&pem).map(|key| (Algorithm::ES256, key)))
        .or_else(|_| DecodingKey::from_ed_pem(&pem).map(|key| (Algorithm::EdDSA, key)))
        .map_err(|source| KeyError::Pem {
            path: path.to_owned(),
            source,
        })?;
    Ok(VerifyingKey {
        kid: None,
        algorithm,
        key,
    })
}

/// The verifying key a JWK describes, if it is a signing key mcpgate accepts: RSA, P-256 or
/// Ed25519 (symmetric keys never come from a JWKS), whose `alg`, when given, agrees.
pub fn from_jwk(jwk: &Jwk) -> Option<VerifyingKey> {
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let declared = jwk.common.key_algorithm.map(|declared| match declared {
        KeyAlgorithm::RS256 => Some(Algorithm::RS256),
        KeyAlgorithm::ES256 => Some(Algorithm::ES256),
        KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
        _ => None,
    });
    if declared.is_some_and(|d| d != Some(algorithm)) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyingKey {
        kid: jwk.common.key_id.clone(),
        algorithm,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(value: serde_json::Value) -> Jwk {
        serde_json::from_value(value).unwrap()
    }

    const RSA_N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    #[test]
    fn jwks_keys_map_to_one_algorithm_each() {
        let rsa = from_jwk(&jwk(serde_json::json!({
            "kty": "RSA", "kid": "r", "use": "sig", "n": RSA_N, "e": "AQAB"
        })))
        .expect("an RSA signing key");
        assert_eq!(
            (rsa.kid.as_deref(), rsa.algorithm),
            (Some("r"), Algorithm::RS256)
        );
        let ed = from_jwk(&jwk(serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        })))
        .expect("an Ed25519 key");
        assert_eq!(ed.algorithm, Algorithm::EdDSA);
    }

    #[test]
    fn encryption_symmetric_and_mislabelled_keys_are_skipped() {
        let cases = [
            serde_json::json!({"kty": "RSA", "use": "enc", "n": RSA_N, "e": "AQAB"}),
            serde_json::json!({"kty": "RSA", "alg": "RS512", "n": RSA_N, "e": "AQAB"}),
            serde_json::json!({"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}),
        ];
        for case in cases {
            assert!(
                from_jwk(&jwk(case.clone())).is_none(),
                "{case} must be skipped"
            );
        }
    }

    #[test]
    fn selection_by_kid_or_by_the_only_key_of_the_algorithm() {
        let key = |kid: &str, algorithm| {
            Arc::new(VerifyingKey {
                kid: Some(kid.into()),
                algorithm,
                key: DecodingKey::from_secret(b"unused").unwrap(),
            })
        };
        let keys = vec![
            key("a", Algorithm::RS256),
            key("b", Algorithm::RS256),
            key("c", Algorithm::ES256),
        ];
        let kid = |found: Option<Arc<VerifyingKey>>| found.and_then(|k| k.kid.clone());
        assert_eq!(
            kid(select(&keys, Some("b"), Algorithm::RS256)),
            Some("b".into())
        );
        assert_eq!(kid(select(&keys, Some("z"), Algorithm::RS256)), None);
        assert_eq!(kid(select(&keys, None, Algorithm::ES256)), Some("c".into()));
        assert_eq!(
            kid(select(&keys, None, Algorithm::RS256)),
            None,
            "ambiguous"
        );
    }
}
