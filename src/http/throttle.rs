//! The edge of the limits ([`crate::limits`]): every `/mcp` request counts against its
//! principal's rate right after authentication. A refusal is 429 with a JSON-RPC error (code
//! [`LimitExceeded::CODE`], the request's id where the body names one, a message saying which
//! limit) and, where waiting alone helps, `Retry-After` in whole seconds rounded up. Inside a
//! batch, each request refused by a limit gets such an error entry instead, and the batch its
//! usual 200.

use super::AppState;
use super::error::HttpError;
use crate::auth::Principal;
use crate::limits::{LimitExceeded, whole_seconds};

/// Counts a request of `principal` against its rate; the refusal to send when over it.
pub(super) async fn admit(state: &AppState, principal: &Principal) -> Result<(), HttpError> {
    Ok(state.gateway.admit_request(principal).await?)
}

/// The `Retry-After` value of a limit refusal that has one.
pub(super) fn retry_after(error: &HttpError) -> Option<String> {
    match error {
        HttpError::Limited(limit) => limit
            .retry_after()
            .map(|wait| whole_seconds(wait).to_string()),
        HttpError::Answering { error, .. } => retry_after(error),
        _ => None,
    }
}

/// The refusal of a request a limit refused, answering its id.
pub(super) fn limited(id: &crate::protocol::jsonrpc::RequestId, limit: LimitExceeded) -> HttpError {
    HttpError::Limited(limit).answering(Some(id))
}
