//! DELETE /mcp: ends a session everywhere before answering.

use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};

use super::error::HttpError;
use super::{AppState, session_error, store_unavailable};
use super::{authn, guard, throttle};
use crate::dispatch::Caller;

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
    let principal = authn::principal(request, state).await?;
    throttle::admit(state, &principal).await?;
    let id = guard::legacy_session_id(request, "DELETE")?;
    guard::protocol_version(request)?;
    let session = state
        .gateway
        .lookup_in_passing(&id, Caller::Client(&principal))
        .await
        .map_err(session_error)?;
    state
        .gateway
        .delete(&session)
        .await
        .map_err(|e| store_unavailable(&e))?;
    Ok(HttpResponse::NoContent().finish())
}
