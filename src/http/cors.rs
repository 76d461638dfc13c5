//! CORS, so browser clients on allowed origins can use the endpoint: preflights are answered,
//! and `Mcp-Session-Id` and `WWW-Authenticate` (OAuth discovery) are exposed to scripts.
//! Origins that are not allowed get no CORS headers here and a 403 from [`super::guard`]. A
//! preflight actix-cors refuses (no or a foreign Origin, a method or header we do not allow) is
//! a 400 with a JSON-RPC error body, like every other refusal, rather than actix-cors's untyped
//! text.

use actix_cors::{Cors, CorsError, CorsMiddleware};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use actix_web::{Error, ResponseError};
use futures::future::LocalBoxFuture;

use super::error::HttpError;
use super::guard::{self, LAST_EVENT_HEADER, SESSION_HEADER, VERSION_HEADER};

/// How long browsers may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: usize = 3600;

/// The CORS middleware for the `/mcp` endpoint.
pub fn layer(allowed_origins: Vec<String>) -> Layer {
    let cors = Cors::default()
        .allowed_origin_fn(move |origin, _| {
            origin
                .to_str()
                .is_ok_and(|o| guard::origin_allowed(o, &allowed_origins))
        })
        .allowed_methods(["GET", "POST", "DELETE"])
        .allowed_headers([
            ACCEPT,
            AUTHORIZATION,
            CONTENT_TYPE,
            SESSION_HEADER,
            VERSION_HEADER,
            LAST_EVENT_HEADER,
        ])
        .expose_headers([SESSION_HEADER, WWW_AUTHENTICATE])
        .max_age(PREFLIGHT_MAX_AGE)
        .block_on_origin_mismatch(false);
    Layer(cors)
}

/// [`Cors`] with its refusals answered as JSON-RPC errors.
pub struct Layer(Cors);

impl<S, B> Transform<S, ServiceRequest> for Layer
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<EitherBody<B>>>;
    type Error = Error;
    type InitError = ();
    type Transform = JsonRefusals<CorsMiddleware<S>>;
    type Future = LocalBoxFuture<'static, Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        let cors = self.0.new_transform(service);
        Box::pin(async move { cors.await.map(|cors| JsonRefusals { cors }) })
    }
}

/// Wraps the CORS middleware, rewriting the responses it refused with.
pub struct JsonRefusals<M> {
    cors: M,
}

impl<M, B> Service<ServiceRequest> for JsonRefusals<M>
where
    M: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    M::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Error>>;

    forward_ready!(cors);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let response = self.cors.call(request);
        Box::pin(async move { Ok(as_json_refusal(response.await?)) })
    }
}

/// A response actix-cors made from a [`CorsError`] becomes that refusal as a JSON-RPC error;
/// any other response passes unchanged.
fn as_json_refusal<B>(response: ServiceResponse<B>) -> ServiceResponse<EitherBody<B>> {
    let reason = response
        .response()
        .error()
        .and_then(|error| error.as_error::<CorsError>())
        .map(ToString::to_string);
    let Some(reason) = reason else {
        return response.map_into_left_body();
    };
    let refusal = HttpError::BadRequest(format!("Bad Request: CORS preflight refused: {reason}"));
    response
        .into_response(refusal.error_response())
        .map_into_right_body()
}
