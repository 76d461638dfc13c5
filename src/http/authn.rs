//! The edge of authentication: every `/mcp` request is authenticated, from its `Authorization`
//! header, before its body is read or its session looked up. A refusal is counted by reason,
//! logged without the credential, and answered with 401 (or 403 for a missing scope) and a
//! `WWW-Authenticate` challenge (RFC 6750 §3) that, in `mode = "jwt"`, points at the Protected
//! Resource Metadata (RFC 9728 §5.1). Only the `Authorization` header carries credentials.

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;

use super::AppState;
use super::error::HttpError;
use crate::auth::{AuthError, Principal, ResourceMetadata};

/// The principal behind `request`, or the refusal to send.
pub async fn principal(request: &HttpRequest, state: &AppState) -> Result<Principal, HttpError> {
    let mut values = request.headers().get_all(AUTHORIZATION);
    let authorization = match (values.next(), values.next()) {
        (None, _) => None,
        // Unreadable or repeated: something, but not one credential.
        (Some(value), None) => Some(value.to_str().unwrap_or_default()),
        (Some(_), Some(_)) => Some(""),
    };
    state
        .auth
        .authenticate(authorization)
        .await
        .map_err(|refusal| refuse(refusal, state))
}

fn refuse(refusal: AuthError, state: &AppState) -> HttpError {
    let reason = refusal.reason();
    state.gateway.metrics().auth_failure(reason);
    tracing::debug!(reason, error = %crate::error_text::describe(&refusal), "request not authenticated");
    let challenge = challenge(&refusal, state.auth.resource_metadata());
    HttpError::Unauthenticated { refusal, challenge }
}

/// The `WWW-Authenticate` value for a refusal.
fn challenge(refusal: &AuthError, metadata: Option<&ResourceMetadata>) -> String {
    let mut params = Vec::new();
    if refusal.is_forbidden() {
        params.push(r#"error="insufficient_scope""#.to_owned());
    } else if refusal.presented_credential() {
        params.push(r#"error="invalid_token""#.to_owned());
    }
    match metadata {
        Some(metadata) => {
            params.push(format!(r#"resource_metadata="{}""#, metadata.url));
            if let Some(scope) = &metadata.challenge_scope {
                params.push(format!(r#"scope="{scope}""#));
            }
        }
        None => params.push(r#"realm="mcpgate""#.to_owned()),
    }
    format!("Bearer {}", params.join(", "))
}
