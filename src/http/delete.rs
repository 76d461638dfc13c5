//! DELETE /mcp: ends a session everywhere before answering.

use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};

use super::error::HttpError;
use super::guard;
use super::{AppState, session_error, store_unavailable};

pub async fn handle(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let started = std::time::Instant::now();
    let result = end_session(&request, &state).await;
    super::observe(&state, "delete", started, &result);
    result
}

async fn end_session(request: &HttpRequest, state: &AppState) -> Result<HttpResponse, HttpError> {
    guard::check_origin_and_host(request, &state.settings)?;
    guard::protocol_version(request)?;
    let id = guard::session_id(request)?;
    let session = state.gateway.lookup(&id).await.map_err(session_error)?;
    state
        .gateway
        .delete(&session)
        .await
        .map_err(|e| store_unavailable(&e))?;
    Ok(HttpResponse::NoContent().finish())
}
