//! The issuer's JSON Web Key Set, cached in memory: fetched at start, again every
//! `jwks_refresh`, and again when a token names an unknown key — at most once per
//! `jwks_cooldown`, so tokens with made-up key ids cannot make mcpgate hammer the JWKS server.
//! A failed fetch keeps the keys of the last good one.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::Jwk;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::keys::{self, KeyError, VerifyingKey};

/// Longest wait for the JWKS server.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document read.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Why a JWKS fetch failed (logged; the previous keys stay in use).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS request failed")]
    Request(#[source] reqwest::Error),
    #[error("the JWKS server answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the JWKS document exceeds {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("the JWKS document is not a JSON object with a `keys` array")]
    Json(#[source] serde_json::Error),
}

/// The document's shape; each key is parsed on its own so one odd key does not spoil the set.
#[derive(serde::Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// The cached key set of one JWKS URL.
pub struct JwksCache {
    url: String,
    client: reqwest::Client,
    keys: RwLock<Arc<Vec<Arc<VerifyingKey>>>>,
    /// Held while fetching (one fetch at a time); holds when an unknown key last caused one.
    unknown_fetch: Mutex<Option<Instant>>,
    cooldown: Duration,
}

impl JwksCache {
    pub fn new(url: String, cooldown: Duration) -> Result<Self, KeyError> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(KeyError::Client)?;
        Ok(Self {
            url,
            client,
            keys: RwLock::new(Arc::new(Vec::new())),
            unknown_fetch: Mutex::new(None),
            cooldown,
        })
    }

    /// The key for a token's `kid` and `alg`; an unknown one makes the set be fetched again
    /// unless that happened less than the cooldown ago.
    pub async fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<VerifyingKey>> {
        if let Some(key) = keys::select(&self.current(), kid, alg) {
            return Some(key);
        }
        let mut last = self.unknown_fetch.lock().await;
        if let Some(key) = keys::select(&self.current(), kid, alg) {
            return Some(key);
        }
        if last.is_some_and(|at| at.elapsed() < self.cooldown) {
            return None;
        }
        *last = Some(Instant::now());
        self.fetch_and_store().await;
        keys::select(&self.current(), kid, alg)
    }

    /// Fetches the set now (one fetch at a time).
    pub async fn refresh(&self) {
        let _fetching = self.unknown_fetch.lock().await;
        self.fetch_and_store().await;
    }

    /// Refreshes the set every `period`, for the life of the process.
    pub fn refresh_every(self: Arc<Self>, period: Duration) {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                self.refresh().await;
            }
        });
    }

    fn current(&self) -> Arc<Vec<Arc<VerifyingKey>>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn fetch_and_store(&self) {
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(keys = keys.len(), "JWKS fetched");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
            }
            Err(error) => {
                let error = crate::error_text::describe(&error);
                tracing::warn!(%error, "cannot fetch the JWKS; keeping the keys fetched before");
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<Arc<VerifyingKey>>, JwksError> {
        let mut response = self
            .client
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| JwksError::Request(e.without_url()))?;
        if !response.status().is_success() {
            return Err(JwksError::Status(response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| JwksError::Request(e.without_url()))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(JwksError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let document: Document = serde_json::from_slice(&body).map_err(JwksError::Json)?;
        Ok(document
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| keys::from_jwk(&jwk))
            .map(Arc::new)
            .collect())
    }
}
