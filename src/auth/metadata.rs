//! OAuth 2.0 Protected Resource Metadata (RFC 9728) for `mode = "jwt"`: the document clients
//! discover the authorization server from, where it is published, and the scope a challenge
//! names.

use serde::Serialize;

use crate::config::auth::AuthConfig;

/// The well-known path prefix of RFC 9728.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The metadata document.
#[derive(Debug, Clone, Serialize)]
pub struct ProtectedResourceMetadata {
    /// This gateway's canonical URL; tokens must name it as their audience.
    pub resource: String,
    pub authorization_servers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<String>,
    /// Only the `Authorization` header: never a query parameter or a form body.
    pub bearer_methods_supported: Vec<String>,
}

/// What the edge needs to publish the metadata and point clients at it.
#[derive(Debug, Clone)]
pub struct ResourceMetadata {
    pub document: ProtectedResourceMetadata,
    /// Where the document is published for this resource (RFC 9728 §3.1): the well-known
    /// prefix followed by the resource's path.
    pub url: String,
    /// The scopes a challenge asks for (space-separated): the required ones, else the
    /// supported ones; none when neither is configured.
    pub challenge_scope: Option<String>,
}

impl ResourceMetadata {
    /// From a validated `mode = "jwt"` configuration.
    pub fn from_config(config: &AuthConfig) -> Self {
        let resource = config.resource.clone().unwrap_or_default();
        let scopes_supported = if config.scopes_supported.is_empty() {
            config.required_scopes.clone()
        } else {
            config.scopes_supported.clone()
        };
        let challenge = if config.required_scopes.is_empty() {
            &scopes_supported
        } else {
            &config.required_scopes
        };
        let challenge_scope = (!challenge.is_empty()).then(|| challenge.join(" "));
        Self {
            url: metadata_url(&resource),
            document: ProtectedResourceMetadata {
                resource,
                authorization_servers: config.authorization_servers.clone(),
                scopes_supported,
                bearer_methods_supported: vec!["header".into()],
            },
            challenge_scope,
        }
    }
}

/// RFC 9728 §3.1: `https://host/mcp` publishes at
/// `https://host/.well-known/oauth-protected-resource/mcp`.
fn metadata_url(resource: &str) -> String {
    let Ok(url) = url::Url::parse(resource) else {
        return String::new();
    };
    let path = url.path().trim_end_matches('/');
    format!("{}{WELL_KNOWN}{path}", url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_url_inserts_the_well_known_prefix_before_the_path() {
        assert_eq!(
            metadata_url("https://mcp.example.com/mcp"),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("https://mcp.example.com:8443"),
            "https://mcp.example.com:8443/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn challenge_scope_prefers_the_required_scopes() {
        let config = AuthConfig {
            resource: Some("https://mcp.example.com/mcp".into()),
            scopes_supported: vec!["read".into(), "write".into()],
            required_scopes: vec!["read".into()],
            ..AuthConfig::default()
        };
        let metadata = ResourceMetadata::from_config(&config);
        assert_eq!(metadata.challenge_scope.as_deref(), Some("read"));
        assert_eq!(metadata.document.scopes_supported, ["read", "write"]);
        let json = serde_json::to_value(&metadata.document).unwrap();
        assert_eq!(
            json["bearer_methods_supported"],
            serde_json::json!(["header"])
        );
    }
}
