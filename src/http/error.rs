//! Transport-level refusals: each is an HTTP status plus a JSON-RPC error body that says
//! exactly what was wrong. A store failure is 503 with `Retry-After`, never 404.

use actix_web::http::StatusCode;
use actix_web::http::header::{ALLOW, CONTENT_TYPE, HeaderName, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, ResponseError};
use rmcp::model::ErrorCode;

use crate::dispatch::error_response;
use crate::protocol::jsonrpc::RequestId;

/// JSON-RPC code for "no such session" (as the reference SDKs use it).
const SESSION_NOT_FOUND: ErrorCode = ErrorCode(-32001);
/// Seconds a client should wait after a 503.
const RETRY_AFTER_SECONDS: &str = "2";

/// Why a request was refused before dispatch.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    BadRequest(String),
    #[error("Parse error: {0}")]
    Parse(String),
    #[error("{message}")]
    Rejected {
        id: Option<RequestId>,
        code: ErrorCode,
        message: String,
    },
    #[error("{0}")]
    Forbidden(String),
    #[error("Session not found")]
    SessionNotFound,
    /// Authentication failed (401) or the token lacks a scope (403). The answer says no
    /// more than that and the `WWW-Authenticate` `challenge`.
    #[error("{}", .refusal.public_message())]
    Unauthenticated {
        #[source]
        refusal: crate::auth::AuthError,
        challenge: String,
    },
    /// The path serves other methods, listed in `allow`.
    #[error("{message}")]
    MethodNotAllowed {
        message: &'static str,
        allow: &'static str,
    },
    /// GET or DELETE without `Mcp-Session-Id`: only legacy sessions have streams to open and
    /// sessions to end; a 2026-07-28 client POSTs everything.
    #[error(
        "Method Not Allowed: {0} /mcp serves legacy sessions only (send Mcp-Session-Id); protocol 2026-07-28 uses POST alone"
    )]
    NoLegacySession(&'static str),
    #[error("{0}")]
    NotAcceptable(&'static str),
    #[error("request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// The body did not arrive whole within the body read timeout.
    #[error("Request Timeout: the request body did not arrive within {} ms", .0.as_millis())]
    RequestTimeout(std::time::Duration),
    #[error("{0}")]
    UnsupportedMediaType(&'static str),
    #[error("{0}")]
    Unavailable(String),
    /// A modern (2026-07-28) request that the era's rules refuse: 404 for a method the era
    /// does not have, 400 otherwise, with the era's own error code and data.
    #[error("{error}")]
    Modern {
        id: Option<RequestId>,
        #[source]
        error: crate::protocol::ModernError,
    },
    /// A limit refused the request (429; see `throttle.rs`).
    #[error(transparent)]
    Limited(#[from] crate::limits::LimitExceeded),
    /// Any other refusal, answering the one request whose id the body held.
    #[error("{error}")]
    Answering {
        id: RequestId,
        #[source]
        error: Box<HttpError>,
    },
}

impl HttpError {
    /// The same refusal, answering request `id` when the refusal names no request yet.
    pub fn answering(self, id: Option<&RequestId>) -> Self {
        match id {
            Some(id) if self.id().is_none() => HttpError::Answering {
                id: id.clone(),
                error: Box::new(self),
            },
            _ => self,
        }
    }

    fn code(&self) -> ErrorCode {
        match self {
            HttpError::Answering { error, .. } => error.code(),
            HttpError::Parse(_) => ErrorCode::PARSE_ERROR,
            HttpError::Rejected { code, .. } => *code,
            HttpError::Modern { error, .. } => error.code(),
            HttpError::SessionNotFound => SESSION_NOT_FOUND,
            HttpError::Unavailable(_) => ErrorCode::INTERNAL_ERROR,
            HttpError::Limited(_) => crate::limits::LimitExceeded::CODE,
            _ => ErrorCode::INVALID_REQUEST,
        }
    }

    /// The header that tells the client what to do next, for the refusals that have one.
    fn advice_header(&self) -> Option<(HeaderName, &'static str)> {
        match self {
            HttpError::Unavailable(_) => Some((RETRY_AFTER, RETRY_AFTER_SECONDS)),
            HttpError::MethodNotAllowed { allow, .. } => Some((ALLOW, allow)),
            HttpError::NoLegacySession(_) => Some((ALLOW, "POST")),
            HttpError::Answering { error, .. } => error.advice_header(),
            _ => None,
        }
    }

    /// The JSON-RPC error's `data`, for the refusals that define one.
    fn data(&self) -> Option<serde_json::Value> {
        match self {
            HttpError::Modern { error, .. } => error.data(),
            HttpError::Answering { error, .. } => error.data(),
            _ => None,
        }
    }

    fn id(&self) -> Option<&RequestId> {
        match self {
            HttpError::Rejected { id, .. } | HttpError::Modern { id, .. } => id.as_ref(),
            HttpError::Answering { id, .. } => Some(id),
            _ => None,
        }
    }
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        match self {
            HttpError::BadRequest(_) | HttpError::Parse(_) | HttpError::Rejected { .. } => {
                StatusCode::BAD_REQUEST
            }
            HttpError::Modern {
                error: crate::protocol::ModernError::MethodNotFound(_),
                ..
            } => StatusCode::NOT_FOUND,
            HttpError::Modern { .. } => StatusCode::BAD_REQUEST,
            HttpError::Forbidden(_) => StatusCode::FORBIDDEN,
            HttpError::SessionNotFound => StatusCode::NOT_FOUND,
            HttpError::Unauthenticated { refusal, .. } if refusal.is_forbidden() => {
                StatusCode::FORBIDDEN
            }
            HttpError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            HttpError::MethodNotAllowed { .. } | HttpError::NoLegacySession(_) => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            HttpError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            HttpError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            HttpError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            HttpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Limited(_) => StatusCode::TOO_MANY_REQUESTS,
            HttpError::Answering { error, .. } => error.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = error_response(self.id(), self.code(), self.to_string());
        if let Some(data) = self.data() {
            body["error"]["data"] = data;
        }
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((CONTENT_TYPE, "application/json"));
        if let HttpError::Unauthenticated { challenge, .. } = self {
            response.insert_header((WWW_AUTHENTICATE, challenge.as_str()));
        }
        if let Some(header) = self.advice_header() {
            response.insert_header(header);
        }
        if let Some(seconds) = super::throttle::retry_after(self) {
            response.insert_header((RETRY_AFTER, seconds));
        }
        response.body(body.to_string())
    }
}
