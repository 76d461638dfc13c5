//! JWT access tokens: signature (with the key the token's header selects), `iss`, `aud`
//! (this gateway's resource, RFC 8707), `exp` and `nbf` with leeway, then the principal, team
//! and scopes from their claims.

use std::collections::HashSet;

use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::keys::{ALGORITHMS, KeyError, KeySource};
use super::{AuthError, Principal};
use crate::config::auth::AuthConfig;

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed(#[source] JwtError),
    #[error("the token's {0} claim is missing or not a non-empty string")]
    BadClaim(&'static str),
    #[error("the token's signature does not verify")]
    BadSignature(#[source] JwtError),
    #[error("the token's algorithm is not its key's")]
    WrongAlgorithm,
    #[error("the token has expired")]
    Expired(#[source] JwtError),
    #[error("the token is not valid yet")]
    NotYetValid(#[source] JwtError),
    #[error("the token is from another issuer")]
    WrongIssuer(#[source] JwtError),
    #[error("the token is for another audience")]
    WrongAudience(#[source] JwtError),
    #[error("no known key matches the token's header")]
    UnknownKey,
}

impl TokenError {
    /// The `reason` label of `mcpgate_auth_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) | TokenError::BadClaim(_) => "malformed",
            TokenError::BadSignature(_) | TokenError::WrongAlgorithm => "bad_signature",
            TokenError::Expired(_) => "expired",
            TokenError::NotYetValid(_) => "not_yet_valid",
            TokenError::WrongIssuer(_) => "wrong_issuer",
            TokenError::WrongAudience(_) => "wrong_audience",
            TokenError::UnknownKey => "unknown_key",
        }
    }

    fn from_library(error: JwtError) -> Self {
        match error.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired(error),
            ErrorKind::ImmatureSignature => TokenError::NotYetValid(error),
            ErrorKind::InvalidIssuer => TokenError::WrongIssuer(error),
            ErrorKind::InvalidAudience => TokenError::WrongAudience(error),
            ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => {
                TokenError::WrongIssuer(error)
            }
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                TokenError::WrongAudience(error)
            }
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::UnsupportedAlgorithm => TokenError::BadSignature(error),
            _ => TokenError::Malformed(error),
        }
    }
}

/// Verifies tokens as `[server.auth]` says.
pub struct JwtVerifier {
    keys: KeySource,
    /// Issuer, audience and time checks; the algorithm is set per token from its key.
    validation: Validation,
    principal_claim: String,
    team_claim: String,
    required_scopes: Vec<String>,
}

impl JwtVerifier {
    /// Loads the key (fetching a JWKS once) from a validated configuration.
    pub async fn start(config: &AuthConfig) -> Result<Self, KeyError> {
        let jwt = &config.jwt;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[jwt.issuer.as_deref().unwrap_or_default()]);
        validation.set_audience(&[config.audience().unwrap_or_default()]);
        validation.leeway = jwt.leeway.as_secs();
        validation.validate_nbf = true;
        Ok(Self {
            keys: KeySource::from_config(jwt).await?,
            validation,
            principal_claim: jwt.principal_claim.clone(),
            team_claim: jwt.team_claim.clone(),
            required_scopes: config.required_scopes.clone(),
        })
    }

    /// The principal a token authenticates, once every check passed.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = self.verified_claims(token).await?;
        let principal = self.principal(&claims)?;
        let granted = scopes(&claims);
        if self
            .required_scopes
            .iter()
            .all(|s| granted.contains(s.as_str()))
        {
            Ok(principal)
        } else {
            Err(AuthError::InsufficientScope)
        }
    }

    async fn verified_claims(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(TokenError::Malformed)?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(TokenError::WrongAlgorithm);
        }
        let key = self
            .keys
            .find(header.kid.as_deref(), header.alg)
            .await
            .ok_or(TokenError::UnknownKey)?;
        if key.algorithm != header.alg {
            return Err(TokenError::WrongAlgorithm);
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![key.algorithm];
        jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map(|data| data.claims)
            .map_err(TokenError::from_library)
    }

    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, TokenError> {
        let id = match claims.get(&self.principal_claim) {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            _ => return Err(TokenError::BadClaim("principal")),
        };
        let team = match claims.get(&self.team_claim) {
            None | Some(Value::Null) => None,
            Some(Value::String(team)) if !team.is_empty() => Some(team.clone()),
            Some(_) => return Err(TokenError::BadClaim("team")),
        };
        Ok(Principal::new(id, team))
    }
}

/// The scopes a token grants: `scope` (space-separated, RFC 9068) and `scp` (a list or a
/// space-separated string, as some issuers write it).
fn scopes(claims: &Map<String, Value>) -> HashSet<&str> {
    let mut granted = HashSet::new();
    for claim in ["scope", "scp"] {
        match claims.get(claim) {
            Some(Value::String(text)) => granted.extend(text.split_whitespace()),
            Some(Value::Array(items)) => granted.extend(items.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    granted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "a-development-secret-of-32-bytes!";

    async fn verifier(required_scopes: &[&str]) -> JwtVerifier {
        let mut config = AuthConfig {
            resource: Some("https://mcp.example.com/mcp".into()),
            required_scopes: required_scopes.iter().map(|s| s.to_string()).collect(),
            ..AuthConfig::default()
        };
        config.jwt.issuer = Some("https://issuer.example.com".into());
        config.jwt.hs256_secret = Some(Secret::new(SECRET));
        JwtVerifier::start(&config).await.unwrap()
    }

    fn token(changes: Value) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let mut claims = json!({
            "iss": "https://issuer.example.com",
            "aud": "https://mcp.example.com/mcp",
            "sub": "alice",
            "exp": now + 600,
            "scope": "mcp:read mcp:write",
        });
        for (name, value) in changes.as_object().unwrap() {
            match value {
                Value::Null => claims.as_object_mut().unwrap().remove(name),
                _ => claims
                    .as_object_mut()
                    .unwrap()
                    .insert(name.clone(), value.clone()),
            };
        }
        let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        jsonwebtoken::encode(&Header::default(), &claims, &key).unwrap()
    }

    fn reason(result: Result<Principal, AuthError>) -> &'static str {
        result.err().map_or("accepted", |e| e.reason())
    }

    #[tokio::test]
    async fn every_check_has_its_reason() {
        let verifier = verifier(&["mcp:read"]).await;
        let now = jsonwebtoken::get_current_timestamp();
        let cases = [
            (json!({}), "accepted"),
            (json!({"exp": now - 3600}), "expired"),
            (json!({"exp": now - 30}), "accepted"),
            (json!({"nbf": now + 3600}), "not_yet_valid"),
            (json!({"iss": "https://other.example.com"}), "wrong_issuer"),
            (json!({"iss": null}), "wrong_issuer"),
            (
                json!({"aud": "https://other.example.com/mcp"}),
                "wrong_audience",
            ),
            (
                json!({"aud": ["x", "https://mcp.example.com/mcp"]}),
                "accepted",
            ),
            (json!({"aud": null}), "wrong_audience"),
            (json!({"sub": null}), "malformed"),
            (json!({"team": 7}), "malformed"),
            (json!({"scope": "mcp:write"}), "insufficient_scope"),
            (json!({"scope": null, "scp": ["mcp:read"]}), "accepted"),
        ];
        for (changes, expected) in cases {
            let got = reason(verifier.verify(&token(changes.clone())).await);
            assert_eq!(got, expected, "claims changed by {changes}");
        }
    }

    #[tokio::test]
    async fn principal_and_team_come_from_their_claims() {
        let verifier = verifier(&[]).await;
        let principal = verifier
            .verify(&token(json!({"team": "red"})))
            .await
            .unwrap();
        assert_eq!(principal, Principal::new("alice", Some("red".into())));
    }

    #[tokio::test]
    async fn tampered_and_garbage_tokens_are_refused() {
        let verifier = verifier(&[]).await;
        let good = token(json!({}));
        let (head, signature) = good.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        let tampered = format!("{head}.{flipped}{}", &signature[1..]);
        assert_eq!(reason(verifier.verify(&tampered).await), "bad_signature");
        assert_eq!(reason(verifier.verify("not.a.jwt").await), "malformed");
        let payload = head.split('.').nth(1).unwrap();
        let unsigned = format!("eyJhbGciOiJub25lIn0.{payload}.");
        assert_eq!(reason(verifier.verify(&unsigned).await), "malformed");
    }
}
