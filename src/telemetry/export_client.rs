//! The HTTP client of OTLP export: the gateway's own reqwest (rustls), on a runtime of its own.
//!
//! The SDK's batch thread is no Tokio thread, and the serving runtimes must not carry export
//! work, so each export request runs on a one-thread runtime owned by this client. Its timeout
//! is `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds,
//! 10 s by default), and a collector's answer is read up to [`MAX_ANSWER_BYTES`].

use std::time::Duration;

use async_trait::async_trait;
use http_body_util::{BodyExt, Limited};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};

use super::otlp::TracingError;

/// Longest collector answer read (an OTLP answer is a few bytes, or a short error).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The OTLP default export timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends OTLP requests from the SDK's batch thread.
#[derive(Debug)]
pub struct ExportClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl ExportClient {
    pub fn new() -> Result<Self, TracingError> {
        let timeout = timeout_from(|name| std::env::var(name).ok());
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()?;
        Ok(Self { client, runtime })
    }
}

#[async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let exchange = self.runtime.spawn(async move {
            let response = client.execute(request).await?;
            let (status, headers) = (response.status(), response.headers().clone());
            let body = Limited::new(reqwest::Body::from(response), MAX_ANSWER_BYTES)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, HttpError>((status, headers, body))
        });
        let (status, headers, body) = exchange.await??;
        let mut response = Response::builder().status(status).body(body)?;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// The export timeout the variables `var` returns set.
fn timeout_from(var: impl Fn(&str) -> Option<String>) -> Duration {
    [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .into_iter()
    .find_map(|name| var(name)?.trim().parse().ok())
    .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signal_timeout_wins_over_the_general_one() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.to_string())
            }
        };
        assert_eq!(timeout_from(vars(&[])), DEFAULT_TIMEOUT);
        assert_eq!(
            timeout_from(vars(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")])),
            Duration::from_millis(2500)
        );
        assert_eq!(
            timeout_from(vars(&[
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700"),
            ])),
            Duration::from_millis(700)
        );
        assert_eq!(
            timeout_from(vars(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")])),
            DEFAULT_TIMEOUT
        );
    }
}
