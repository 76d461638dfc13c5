//! `GET /.well-known/oauth-protected-resource` and its path-suffixed form
//! `/.well-known/oauth-protected-resource/mcp` (RFC 9728 §3): the Protected Resource Metadata
//! that tells OAuth clients which authorization server issues tokens for this gateway. Served
//! without authentication, in `mode = "jwt"` only (404 otherwise).

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, web};

use super::AppState;
use crate::auth::metadata::WELL_KNOWN;

/// How long clients may cache the document.
const MAX_AGE: &str = "public, max-age=300";

/// Registers both paths.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route(WELL_KNOWN, web::get().to(document))
        .route(&format!("{WELL_KNOWN}/mcp"), web::get().to(document));
}

async fn document(state: web::Data<AppState>) -> HttpResponse {
    match state.auth.resource_metadata() {
        Some(metadata) => HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, "application/json"))
            .insert_header((CACHE_CONTROL, MAX_AGE))
            .json(&metadata.document),
        None => HttpResponse::NotFound().finish(),
    }
}
