//! `[server.auth]`: who may use the `/mcp` listener and how callers prove it.
//!
//! Three modes: `none` (everyone is the same anonymous principal), `api_key` (hashed keys from
//! the configuration, a file or a mounted Secret directory) and `jwt` (OAuth access tokens from
//! one issuer, checked against this gateway's canonical `resource` URL as their audience).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret, invalid};

/// How the `/mcp` listener authenticates callers.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `none` (local development only), `api_key` or `jwt`.
    pub mode: AuthMode,
    /// api_key: keys listed inline.
    pub api_keys: Vec<ApiKeyEntry>,
    /// api_key: a TOML (or, with a `.json` name, JSON) file holding `api_keys = [...]`.
    pub api_keys_file: Option<PathBuf>,
    /// api_key: a directory (e.g. a mounted Kubernetes Secret) of such files; names starting
    /// with `.` are skipped.
    pub api_keys_dir: Option<PathBuf>,
    /// jwt: the canonical URL of this gateway's MCP endpoint, e.g. `https://mcp.example.com/mcp`.
    /// Tokens must name it as their audience (RFC 8707), and it is the `resource` of the
    /// Protected Resource Metadata (RFC 9728).
    pub resource: Option<String>,
    /// jwt: the authorization servers clients should get tokens from (RFC 9728).
    pub authorization_servers: Vec<String>,
    /// jwt: scopes advertised in the metadata; `required_scopes` when empty.
    pub scopes_supported: Vec<String>,
    /// jwt: scopes every token must carry (in `scope` or `scp`); 403 otherwise.
    pub required_scopes: Vec<String>,
    /// jwt: how tokens are verified.
    pub jwt: JwtConfig,
}

/// Authentication modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Everyone is the same anonymous principal. Warned about on a non-loopback listener.
    #[default]
    None,
    /// `Authorization: Bearer <key>`, with keys stored as hashes.
    ApiKey,
    /// `Authorization: Bearer <JWT access token>`.
    Jwt,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::ApiKey => "api_key",
            AuthMode::Jwt => "jwt",
        }
    }
}

/// One API key: the hash of the key (never the key) and whom it authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// `sha256:<64 hex digits>`: SHA-256 of the key's UTF-8 bytes (`mcpgate hash-key`).
    pub hash: String,
    /// The principal the key authenticates.
    pub principal: String,
    /// The principal's team (selects its policy).
    pub team: Option<String>,
}

/// The shape of `api_keys_file` and of each file in `api_keys_dir`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysDocument {
    #[serde(default)]
    pub api_keys: Vec<ApiKeyEntry>,
}

/// `[server.auth.jwt]`: where the signing keys come from and which claims count.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// The `iss` every token must carry.
    pub issuer: Option<String>,
    /// The `aud` every token must carry; `server.auth.resource` when unset.
    pub audience: Option<String>,
    /// Keys from a JWKS document (RS256, ES256, EdDSA), cached and refreshed.
    pub jwks_url: Option<String>,
    /// How often the JWKS is fetched again regardless of unknown key ids.
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// The least time between two fetches of the JWKS triggered by unknown key ids.
    #[serde(with = "humantime_serde")]
    pub jwks_cooldown: Duration,
    /// One PEM public key (RSA, P-256 or Ed25519).
    pub public_key_file: Option<PathBuf>,
    /// A shared HS256 secret (development; at least 32 bytes).
    pub hs256_secret: Option<Secret>,
    /// Clock skew allowed when checking `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// The claim naming the principal.
    pub principal_claim: String,
    /// The claim naming the principal's team (optional in tokens).
    pub team_claim: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: None,
            jwks_url: None,
            jwks_refresh: Duration::from_secs(300),
            jwks_cooldown: Duration::from_secs(30),
            public_key_file: None,
            hs256_secret: None,
            leeway: Duration::from_secs(60),
            principal_claim: "sub".into(),
            team_claim: "team".into(),
        }
    }
}

/// The shortest HS256 secret accepted (RFC 7518 §3.2: a key of at least the hash's size).
const MIN_HS256_SECRET: usize = 32;

impl AuthConfig {
    /// The checks serde cannot make, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.refuse_foreign_settings()?;
        match self.mode {
            AuthMode::None => Ok(()),
            AuthMode::ApiKey => self.validate_api_keys(),
            AuthMode::Jwt => self.validate_jwt(),
        }
    }

    /// The audience tokens must name.
    pub fn audience(&self) -> Option<&str> {
        self.jwt.audience.as_deref().or(self.resource.as_deref())
    }

    /// Settings of another mode are an error rather than silently ignored.
    fn refuse_foreign_settings(&self) -> Result<(), ConfigError> {
        let api_key_settings = [
            ("api_keys", !self.api_keys.is_empty()),
            ("api_keys_file", self.api_keys_file.is_some()),
            ("api_keys_dir", self.api_keys_dir.is_some()),
        ];
        let jwt_settings = [
            ("resource", self.resource.is_some()),
            (
                "authorization_servers",
                !self.authorization_servers.is_empty(),
            ),
            ("scopes_supported", !self.scopes_supported.is_empty()),
            ("required_scopes", !self.required_scopes.is_empty()),
            ("jwt.issuer", self.jwt.issuer.is_some()),
            ("jwt.audience", self.jwt.audience.is_some()),
            ("jwt.jwks_url", self.jwt.jwks_url.is_some()),
            ("jwt.public_key_file", self.jwt.public_key_file.is_some()),
            ("jwt.hs256_secret", self.jwt.hs256_secret.is_some()),
        ];
        for (wanted, settings) in [
            (AuthMode::ApiKey, &api_key_settings[..]),
            (AuthMode::Jwt, &jwt_settings[..]),
        ] {
            if self.mode == wanted {
                continue;
            }
            if let Some((key, _)) = settings.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    format!("server.auth.{key}"),
                    format!(
                        "only used with server.auth.mode = \"{}\" (mode is \"{}\")",
                        wanted.as_str(),
                        self.mode.as_str()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_api_keys(&self) -> Result<(), ConfigError> {
        if self.api_keys.is_empty() && self.api_keys_file.is_none() && self.api_keys_dir.is_none() {
            return Err(invalid(
                "server.auth.api_keys",
                "mode = \"api_key\" needs api_keys, api_keys_file or api_keys_dir",
            ));
        }
        for (index, entry) in self.api_keys.iter().enumerate() {
            entry.validate(&format!("server.auth.api_keys[{index}]"))?;
        }
        Ok(())
    }

    fn validate_jwt(&self) -> Result<(), ConfigError> {
        let Some(resource) = &self.resource else {
            return Err(invalid(
                "server.auth.resource",
                "required with mode = \"jwt\": the canonical URL of this gateway's /mcp endpoint",
            ));
        };
        canonical_url("server.auth.resource", resource)?;
        if self.authorization_servers.is_empty() {
            return Err(invalid(
                "server.auth.authorization_servers",
                "list at least one authorization server",
            ));
        }
        for (index, server) in self.authorization_servers.iter().enumerate() {
            canonical_url(
                &format!("server.auth.authorization_servers[{index}]"),
                server,
            )?;
        }
        for (key, scopes) in [
            ("scopes_supported", &self.scopes_supported),
            ("required_scopes", &self.required_scopes),
        ] {
            for (index, scope) in scopes.iter().enumerate() {
                scope_token(&format!("server.auth.{key}[{index}]"), scope)?;
            }
        }
        self.jwt.validate()
    }
}

impl ApiKeyEntry {
    /// Checks one entry; `key` names it in errors (e.g. `server.auth.api_keys[2]`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let hex = self.hash.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                format!("{key}.hash"),
                "must be sha256:<64 hex digits> (see `mcpgate hash-key`)",
            ));
        }
        if self.principal.trim().is_empty() {
            return Err(invalid(format!("{key}.principal"), "must not be empty"));
        }
        if self.team.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(invalid(format!("{key}.team"), "must not be empty when set"));
        }
        Ok(())
    }
}

impl JwtConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        match &self.issuer {
            Some(issuer) if !issuer.is_empty() => {}
            _ => {
                return Err(invalid(
                    "server.auth.jwt.issuer",
                    "required with mode = \"jwt\"",
                ));
            }
        }
        if self.audience.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("server.auth.jwt.audience", "must not be empty"));
        }
        let sources = [
            self.jwks_url.is_some(),
            self.public_key_file.is_some(),
            self.hs256_secret.is_some(),
        ];
        if sources.iter().filter(|set| **set).count() != 1 {
            return Err(invalid(
                "server.auth.jwt.jwks_url",
                "set exactly one of jwks_url, public_key_file and hs256_secret",
            ));
        }
        if let Some(url) = &self.jwks_url {
            canonical_url("server.auth.jwt.jwks_url", url)?;
        }
        if self
            .hs256_secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < MIN_HS256_SECRET)
        {
            return Err(invalid(
                "server.auth.jwt.hs256_secret",
                format!("must be at least {MIN_HS256_SECRET} bytes"),
            ));
        }
        for (key, period) in [
            ("jwks_refresh", self.jwks_refresh),
            ("jwks_cooldown", self.jwks_cooldown),
        ] {
            if period.is_zero() {
                return Err(invalid(
                    format!("server.auth.jwt.{key}"),
                    "must be greater than 0",
                ));
            }
        }
        for (key, claim) in [
            ("principal_claim", &self.principal_claim),
            ("team_claim", &self.team_claim),
        ] {
            if claim.is_empty() {
                return Err(invalid(
                    format!("server.auth.jwt.{key}"),
                    "must not be empty",
                ));
            }
        }
        Ok(())
    }
}

/// An absolute URL without fragment: `https`, or `http` to a loopback host (development).
fn canonical_url(key: &str, value: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(value).map_err(|e| invalid(key, e.to_string()))?;
    if url.fragment().is_some() {
        return Err(invalid(key, "must not have a fragment"));
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(invalid(
            key,
            "must be an https URL (http only to a loopback host)",
        )),
    }
}

/// An RFC 6749 scope token: printable ASCII without space, `"` or `\`.
fn scope_token(key: &str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            "a scope is printable ASCII without spaces, quotes or backslashes",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AuthConfig, ConfigError> {
        let config: AuthConfig =
            toml::from_str(text).map_err(|e| invalid("toml", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    const HASH: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    const JWT: &str = "mode = \"jwt\"\nresource = \"https://mcp.example.com/mcp\"\n\
                       authorization_servers = [\"https://auth.example.com\"]\n";

    #[test]
    fn valid_modes_load_with_defaults() {
        let config = parse(&format!(
            "mode = \"api_key\"\n[[api_keys]]\nhash = \"{HASH}\"\nprincipal = \"alice\"\nteam = \"red\""
        ))
        .unwrap();
        assert_eq!(config.api_keys[0].team.as_deref(), Some("red"));
        let config = parse(&format!(
            "{JWT}[jwt]\nissuer = \"https://auth.example.com\"\njwks_url = \"https://auth.example.com/jwks\""
        ))
        .unwrap();
        assert_eq!(config.jwt.leeway, Duration::from_secs(60));
        assert_eq!(config.jwt.principal_claim, "sub");
        assert_eq!(config.audience(), Some("https://mcp.example.com/mcp"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let issuer = "[jwt]\nissuer = \"https://auth.example.com\"\n";
        let cases = [
            ("mode = \"api_key\"".to_owned(), "server.auth.api_keys"),
            (
                "mode = \"api_key\"\n[[api_keys]]\nhash = \"md5:00\"\nprincipal = \"a\"".into(),
                "server.auth.api_keys[0].hash",
            ),
            (
                format!("mode = \"api_key\"\n[[api_keys]]\nhash = \"{HASH}\"\nprincipal = \" \""),
                "server.auth.api_keys[0].principal",
            ),
            ("api_keys_file = \"/x\"".into(), "server.auth.api_keys_file"),
            ("mode = \"jwt\"".into(), "server.auth.resource"),
            (
                "mode = \"jwt\"\nresource = \"http://mcp.example.com/mcp\"".into(),
                "server.auth.resource",
            ),
            (
                "mode = \"jwt\"\nresource = \"https://mcp.example.com/mcp\"".into(),
                "server.auth.authorization_servers",
            ),
            (JWT.into(), "server.auth.jwt.issuer"),
            (format!("{JWT}{issuer}"), "server.auth.jwt.jwks_url"),
            (
                format!("{JWT}{issuer}hs256_secret = \"short\""),
                "server.auth.jwt.hs256_secret",
            ),
            (
                format!("{JWT}required_scopes = [\"a b\"]\n{issuer}hs256_secret = \"{HASH}\""),
                "server.auth.required_scopes[0]",
            ),
            (
                format!("mode = \"api_key\"\napi_keys_dir = \"/x\"\n{issuer}"),
                "server.auth.jwt.issuer",
            ),
        ];
        for (text, key) in cases {
            let error = parse(&text).unwrap_err().to_string();
            assert!(
                error.contains(key),
                "{text:?} gave {error:?}, expected {key}"
            );
        }
    }
}
