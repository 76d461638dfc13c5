//! An SSE response around a stream of chunks from `delivery/`.

use std::convert::Infallible;

use actix_web::HttpResponse;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use bytes::Bytes;
use futures::{Stream, StreamExt};

/// The `text/event-stream` response carrying `chunks`; proxies are asked not to buffer it.
pub fn response(chunks: impl Stream<Item = Bytes> + 'static) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/event-stream"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(chunks.map(Ok::<_, Infallible>))
}
