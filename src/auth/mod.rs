//! Who is calling: every request to `/mcp` is authenticated into a [`Principal`] before anything
//! else looks at it. A session is bound to the principal that created it (see
//! [`crate::dispatch::Gateway::lookup`]); the session id alone never authenticates.
//!
//! [`Authenticator`] picks the mode; [`api_keys`] matches hashed API keys, [`jwt`] verifies
//! access tokens with keys from [`keys`] (static) or [`jwks`] (fetched), and [`metadata`]
//! describes this gateway as an OAuth protected resource. Nothing here knows about HTTP
//! responses: `http/authn.rs` turns an [`AuthError`] into a status and a challenge.

pub mod api_keys;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod metadata;

use crate::config::ServerConfig;
use crate::config::auth::AuthMode;

pub use api_keys::hash_key;
pub use metadata::ResourceMetadata;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    id: String,
    team: Option<String>,
}

impl Principal {
    /// The principal of `mode = "none"`: everyone.
    pub fn anonymous() -> Self {
        Self {
            id: "anonymous".into(),
            team: None,
        }
    }

    pub fn new(id: impl Into<String>, team: Option<String>) -> Self {
        Self {
            id: id.into(),
            team,
        }
    }

    /// Stable identifier of the caller (API key owner, JWT subject claim).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The caller's team, which selects its policy; `None` gets the default policy.
    pub fn team(&self) -> Option<&str> {
        self.team.as_deref()
    }
}

/// Why a request is not authenticated. Clients learn only the status (and for
/// [`AuthError::InsufficientScope`] the scope), never which check failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no Authorization header")]
    Missing,
    #[error("the Authorization header is not one `Bearer <credential>`")]
    Malformed,
    #[error("the API key matches no configured key")]
    UnknownApiKey,
    #[error(transparent)]
    Token(#[from] jwt::TokenError),
    #[error("the token lacks a required scope")]
    InsufficientScope,
}

impl AuthError {
    /// The `reason` label of `mcpgate_auth_failures_total` (a fixed set).
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::UnknownApiKey => "unknown_api_key",
            AuthError::Token(error) => error.reason(),
            AuthError::InsufficientScope => "insufficient_scope",
        }
    }

    /// Authenticated but not allowed (403), rather than not authenticated (401).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, AuthError::InsufficientScope)
    }

    /// Whether a bearer credential was presented (and refused), as opposed to none at all.
    pub fn presented_credential(&self) -> bool {
        matches!(self, AuthError::UnknownApiKey | AuthError::Token(_))
    }

    /// What the client is told: the same whichever check failed.
    pub fn public_message(&self) -> &'static str {
        if self.is_forbidden() {
            "Forbidden: the access token lacks a scope this server requires"
        } else {
            "Unauthorized: valid credentials are required"
        }
    }
}

/// Why authentication cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("cannot load the API keys")]
    ApiKeys(#[from] api_keys::ApiKeysError),
    #[error("no API keys found in server.auth.api_keys, api_keys_file or api_keys_dir")]
    NoApiKeys,
    #[error("cannot load the JWT verification key")]
    Key(#[from] keys::KeyError),
}

/// How callers are checked, per mode.
enum Mode {
    None,
    ApiKeys(api_keys::ApiKeys),
    Jwt(Box<jwt::JwtVerifier>, ResourceMetadata),
}

/// Authenticates requests according to `[server.auth]`.
pub struct Authenticator {
    mode: Mode,
}

impl Authenticator {
    /// Loads keys (and fetches a JWKS once) for a validated configuration. Warns when
    /// `mode = "none"` leaves a non-loopback listener open to anyone.
    pub async fn start(server: &ServerConfig) -> Result<Self, AuthSetupError> {
        let config = &server.auth;
        let mode = match config.mode {
            AuthMode::None => {
                warn_if_open(server);
                Mode::None
            }
            AuthMode::ApiKey => {
                let keys = api_keys::ApiKeys::load(config)?;
                if keys.is_empty() {
                    return Err(AuthSetupError::NoApiKeys);
                }
                tracing::info!(keys = keys.len(), "API key authentication");
                Mode::ApiKeys(keys)
            }
            AuthMode::Jwt => {
                let verifier = jwt::JwtVerifier::start(config).await?;
                tracing::info!(
                    issuer = ?config.jwt.issuer,
                    resource = ?config.resource,
                    "JWT authentication"
                );
                Mode::Jwt(Box::new(verifier), ResourceMetadata::from_config(config))
            }
        };
        Ok(Self { mode })
    }

    /// The principal behind a request's `Authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        match &self.mode {
            Mode::None => Ok(Principal::anonymous()),
            Mode::ApiKeys(keys) => keys
                .find(bearer(authorization)?)
                .ok_or(AuthError::UnknownApiKey),
            Mode::Jwt(verifier, _) => verifier.verify(bearer(authorization)?).await,
        }
    }

    /// The Protected Resource Metadata, in `mode = "jwt"`.
    pub fn resource_metadata(&self) -> Option<&ResourceMetadata> {
        match &self.mode {
            Mode::Jwt(_, metadata) => Some(metadata),
            _ => None,
        }
    }
}

/// `mode = "none"` on a listener others can reach is worth a warning at every start.
fn warn_if_open(server: &ServerConfig) {
    if !server.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %server.listen,
            "server.auth.mode = \"none\" on a non-loopback listener: anyone who reaches it \
             can use every upstream"
        );
    }
}

/// The credential of an `Authorization: Bearer <credential>` value (scheme case-insensitive).
fn bearer(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.ok_or(AuthError::Missing)?;
    let (scheme, credential) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    let credential = credential.trim();
    if !scheme.eq_ignore_ascii_case("bearer")
        || credential.is_empty()
        || credential.contains(char::is_whitespace)
    {
        return Err(AuthError::Malformed);
    }
    Ok(credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_credentials_are_parsed_strictly() {
        assert_eq!(bearer(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(Some("bearer  abc ")).unwrap(), "abc");
        for value in ["Basic abc", "Bearer", "Bearer ", "Bearer a b", "abc", ""] {
            assert!(
                matches!(bearer(Some(value)), Err(AuthError::Malformed)),
                "{value:?} must be malformed"
            );
        }
        assert!(matches!(bearer(None), Err(AuthError::Missing)));
    }
}
