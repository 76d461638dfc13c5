//! The TLS settings of every HTTP upstream: rustls (ring), HTTP/1.1 by ALPN, and the roots an
//! upstream's certificate may chain to: webpki's (Mozilla's list, so that public upstreams
//! work in an image without a CA bundle) and the system's, which is where an operator adds a
//! private CA, or names one with `SSL_CERT_FILE` / `SSL_CERT_DIR` (as for Redis over TLS).
//! Read once per process.

use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;

/// The settings, made on first use.
pub fn client_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, rustls::Error>> = OnceLock::new();
    CONFIG.get_or_init(|| build().map(Arc::new)).clone()
}

fn build() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// webpki's roots and the system's; a system certificate that cannot be read or used is
/// logged and left out.
fn roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        tracing::warn!(%error, "a system CA certificate could not be read");
    }
    let (added, unusable) = roots.add_parsable_certificates(system.certs);
    if unusable > 0 {
        tracing::warn!(unusable, "system CA certificates left out");
    }
    tracing::debug!(system = added, "upstream TLS roots loaded");
    roots
}
