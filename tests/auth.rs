//! Authentication of the `/mcp` endpoint (`[server.auth]`) against the real gateway: API keys,
//! JWT access tokens of every accepted algorithm with keys from a JWKS served by the test (and
//! swapped under the running gateway), the refusals and their `WWW-Authenticate` challenges,
//! the Protected Resource Metadata, and an HTTP upstream that must never see the client's token.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::http::request::Parts;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const RESOURCE: &str = "https://mcp.test/mcp";
const METADATA_URL: &str = "https://mcp.test/.well-known/oauth-protected-resource/mcp";
const ISSUER: &str = "https://issuer.test";
const SCOPE: &str = "mcp:tools";
const HS256_SECRET: &str = "a-development-secret-of-32-bytes!";
/// The one message every 401 body carries, whichever check failed.
const UNAUTHORIZED: &str = "Unauthorized: valid credentials are required";

// ------------------------------------------------------------------ test servers

/// A tiny HTTP/1.1 server on loopback: `handle` answers every request from its method, path,
/// headers and body. Stops when dropped.
struct TestServer {
    url: String,
    task: JoinHandle<()>,
}

type Handler = Arc<dyn Fn(&Parts, &[u8]) -> Response<Full<Bytes>> + Send + Sync>;

impl TestServer {
    async fn start(handle: Handler) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind a test server");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handle = handle.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    let handle = handle.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, Infallible>(handle(&parts, &body))
                    }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        TestServer { url, task }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A JWKS endpoint whose document the test can replace, counting its fetches.
struct Jwks {
    server: TestServer,
    document: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
}

impl Jwks {
    async fn start(keys: &[&TestKey]) -> Jwks {
        let document = Arc::new(Mutex::new(jwk_set(keys)));
        let hits = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (document.clone(), hits.clone());
        let server = TestServer::start(Arc::new(move |_: &Parts, _: &[u8]| {
            counted.fetch_add(1, Ordering::SeqCst);
            json_response(200, &served.lock().unwrap())
        }))
        .await;
        Jwks {
            server,
            document,
            hits,
        }
    }

    fn url(&self) -> String {
        format!("{}/jwks", self.server.url)
    }

    fn publish(&self, keys: &[&TestKey]) {
        *self.document.lock().unwrap() = jwk_set(keys);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

// ------------------------------------------------------------------ keys and tokens

/// A private key of the test issuer, from `tests/fixtures/auth/`.
struct TestKey {
    kid: &'static str,
    algorithm: Algorithm,
    key: EncodingKey,
}

impl TestKey {
    fn load(kid: &'static str, file: &str, algorithm: Algorithm) -> TestKey {
        let path = format!("{}/tests/fixtures/auth/{file}", env!("CARGO_MANIFEST_DIR"));
        let pem = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_ed_pem(&pem),
        }
        .expect("a test key");
        TestKey {
            kid,
            algorithm,
            key,
        }
    }

    fn rsa_a() -> TestKey {
        TestKey::load("rsa-a", "rsa-a.key.pem", Algorithm::RS256)
    }

    fn rsa_b() -> TestKey {
        TestKey::load("rsa-b", "rsa-b.key.pem", Algorithm::RS256)
    }

    fn ec() -> TestKey {
        TestKey::load("ec", "ec.key.pem", Algorithm::ES256)
    }

    fn ed() -> TestKey {
        TestKey::load("ed", "ed25519.key.pem", Algorithm::EdDSA)
    }

    fn hs256() -> TestKey {
        TestKey {
            kid: "hs",
            algorithm: Algorithm::HS256,
            key: EncodingKey::from_secret(HS256_SECRET.as_bytes()).unwrap(),
        }
    }

    /// A token signed with this key, naming `kid` in its header.
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).expect("cannot sign")
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(self.kid, claims)
    }

    fn public_jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.algorithm).expect("a public JWK");
        jwk.common.key_id = Some(self.kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk
    }
}

fn jwk_set(keys: &[&TestKey]) -> Value {
    let set = JwkSet {
        keys: keys.iter().map(|k| k.public_jwk()).collect(),
    };
    serde_json::to_value(set).unwrap()
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Good claims for `subject`, with `changes` applied (a `null` removes the claim).
fn claims(subject: &str, changes: Value) -> Value {
    let mut claims = json!({
        "iss": ISSUER,
        "aud": RESOURCE,
        "sub": subject,
        "team": "red",
        "scope": SCOPE,
        "iat": now(),
        "exp": now() + 600,
    });
    let map = claims.as_object_mut().unwrap();
    for (name, value) in changes.as_object().unwrap() {
        match value {
            Value::Null => map.remove(name),
            _ => map.insert(name.clone(), value.clone()),
        };
    }
    claims
}

// ------------------------------------------------------------------ gateways and clients

/// `[server.auth]` for tokens from [`ISSUER`], with `key_source` lines under `[server.auth.jwt]`.
fn jwt_toml(key_source: &str) -> String {
    format!(
        "[server.auth]\nmode = \"jwt\"\nresource = \"{RESOURCE}\"\n\
         authorization_servers = [\"{ISSUER}\"]\nrequired_scopes = [\"{SCOPE}\"]\n\
         [server.auth.jwt]\nissuer = \"{ISSUER}\"\n{key_source}\n"
    )
}

async fn jwt_gateway(key_source: &str) -> Gateway {
    Gateway::builder().toml(&jwt_toml(key_source)).start().await
}

async fn jwks_gateway(jwks: &Jwks, extra: &str) -> Gateway {
    jwt_gateway(&format!("jwks_url = \"{}\"\n{extra}", jwks.url())).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn initialize_body(id: i64) -> String {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "initialize",
        "params": {
            "protocolVersion": LATEST,
            "capabilities": {},
            "clientInfo": {"name": "auth-tests", "version": "0"}
        }
    })
    .to_string()
}

/// `initialize` with `authorization` (None: no header at all).
async fn try_initialize(gw: &Gateway, authorization: Option<&str>) -> Reply {
    let overrides: Vec<(&str, &str)> = authorization
        .map(|a| ("authorization", a))
        .into_iter()
        .collect();
    gw.post(None, initialize_body(1), &overrides).await
}

/// A session of the caller with `token`, checked by calling `local__echo` with it.
async fn session_of(gw: &Gateway, token: &str) -> Session {
    let auth = bearer(token);
    let reply = try_initialize(gw, Some(&auth)).await;
    assert_eq!(
        reply.status.as_u16(),
        200,
        "initialize with a good credential: {reply:?}"
    );
    let session = Session {
        id: reply.header("mcp-session-id").expect("a session id"),
        version: LATEST.into(),
    };
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let reply = gw
        .post(
            Some(&session),
            note.to_string(),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(reply.status.as_u16(), 202, "{reply:?}");
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "local__echo", "arguments": {"text": "authenticated"}}});
    let reply = gw
        .post(
            Some(&session),
            call.to_string(),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(reply.status.as_u16(), 200, "{reply:?}");
    assert_eq!(
        reply.json()["result"]["content"][0]["text"],
        json!("authenticated")
    );
    session
}

/// Asserts a refusal: status, the same body whichever check failed, and the challenge.
fn assert_refused(reply: &Reply, status: u16, challenge: &str) {
    let message = if status == 401 {
        UNAUTHORIZED
    } else {
        "Forbidden"
    };
    let body = reply.assert_error(status, INVALID_REQUEST, &[message]);
    if status == 401 {
        assert_eq!(body["error"]["message"], json!(UNAUTHORIZED), "{reply:?}");
    }
    assert_eq!(
        reply.header("www-authenticate").as_deref(),
        Some(challenge),
        "{reply:?}"
    );
}

async fn failures(gw: &Gateway, reason: &str) -> f64 {
    gw.metric(&format!(
        "mcpgate_auth_failures_total{{reason=\"{reason}\"}}"
    ))
    .await
}

// ------------------------------------------------------------------ no authentication

#[tokio::test]
async fn no_authentication_on_a_non_loopback_listener_is_warned_about() {
    let warning = "server.auth.mode = \"none\" on a non-loopback listener";
    let open = Gateway::builder()
        .env("MCPGATE_SERVER__LISTEN", "0.0.0.0:0")
        .start()
        .await;
    assert!(open.log().contains(warning), "{}", open.log());
    let local = Gateway::start().await;
    assert!(!local.log().contains(warning), "{}", local.log());
}

// ------------------------------------------------------------------ API keys

#[tokio::test]
async fn api_keys_admit_their_owners_and_refuse_everyone_else() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    let entries = json!({"api_keys": [{"hash": hash("file-key"), "principal": "bob"}]});
    std::fs::write(&file, entries.to_string()).unwrap();
    // The mode and the file come from environment overrides, the inline key from the file.
    let gw = Gateway::builder()
        .toml(&format!(
            "[server.auth]\n[[server.auth.api_keys]]\nhash = \"{}\"\nprincipal = \"alice\"\nteam = \"red\"\n",
            hash("inline-key")
        ))
        .env("MCPGATE_SERVER__AUTH__MODE", "api_key")
        .env("MCPGATE_SERVER__AUTH__API_KEYS_FILE", file.to_str().unwrap())
        .start()
        .await;
    session_of(&gw, "inline-key").await;
    session_of(&gw, "file-key").await;

    let plain = r#"Bearer realm="mcpgate""#;
    let invalid = r#"Bearer error="invalid_token", realm="mcpgate""#;
    let cases = [
        (None, plain, "missing"),
        (Some("Basic aW5saW5lLWtleQ=="), plain, "malformed"),
        (Some("Bearer"), plain, "malformed"),
        (Some("Bearer inline-key extra"), plain, "malformed"),
        (Some("Bearer inline-keyX"), invalid, "unknown_api_key"),
        (Some("Bearer sha256:0000"), invalid, "unknown_api_key"),
    ];
    for (authorization, challenge, _) in &cases {
        let reply = try_initialize(&gw, *authorization).await;
        assert_refused(&reply, 401, challenge);
    }
    assert_eq!(failures(&gw, "missing").await, 1.0);
    assert_eq!(failures(&gw, "malformed").await, 3.0);
    assert_eq!(failures(&gw, "unknown_api_key").await, 2.0);
    assert!(
        !gw.log().contains("inline-key"),
        "a presented key reached the log:\n{}",
        gw.log()
    );
}

fn hash(key: &str) -> String {
    mcpgate::auth::hash_key(key)
}

#[tokio::test]
async fn hash_key_prints_the_hash_the_gateway_stores() {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcpgate"))
        .arg("hash-key")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cannot run hash-key");
    let mut child = run;
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"inline-key\n")
        .await
        .unwrap();
    drop(stdin);
    let output = tokio::time::timeout(REQUEST_TIMEOUT, child.wait_with_output())
        .await
        .expect("hash-key did not finish")
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        hash("inline-key")
    );
}

// ------------------------------------------------------------------ JWT

#[tokio::test]
async fn tokens_of_every_accepted_algorithm_are_admitted() {
    let (rsa, ec, ed) = (TestKey::rsa_a(), TestKey::ec(), TestKey::ed());
    let jwks = Jwks::start(&[&rsa, &ec, &ed]).await;
    let gw = jwks_gateway(&jwks, "").await;
    for key in [&rsa, &ec, &ed] {
        session_of(&gw, &key.sign(&claims("alice", json!({})))).await;
    }

    let hs = TestKey::hs256();
    let gw = jwt_gateway(&format!("hs256_secret = \"{HS256_SECRET}\"")).await;
    session_of(&gw, &hs.sign(&claims("alice", json!({})))).await;
    // A token for another algorithm than the key's is refused (no algorithm confusion).
    let forged = rsa.sign(&claims("alice", json!({})));
    let invalid = format!(
        r#"Bearer error="invalid_token", resource_metadata="{METADATA_URL}", scope="{SCOPE}""#
    );
    assert_refused(
        &try_initialize(&gw, Some(&bearer(&forged))).await,
        401,
        &invalid,
    );
    assert_eq!(failures(&gw, "bad_signature").await, 1.0);

    let pem = format!(
        "{}/tests/fixtures/auth/ec.pub.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let gw = jwt_gateway(&format!("public_key_file = \"{pem}\"")).await;
    session_of(&gw, &ec.sign(&claims("alice", json!({})))).await;
}

#[tokio::test]
async fn every_failed_check_is_refused_alike_and_counted() {
    let (rsa, other) = (TestKey::rsa_a(), TestKey::rsa_b());
    let jwks = Jwks::start(&[&rsa]).await;
    let gw = jwks_gateway(&jwks, "leeway = \"5s\"").await;
    let good = |changes| rsa.sign(&claims("alice", changes));
    let cases = [
        (good(json!({"exp": now() - 60})), "expired"),
        (good(json!({"nbf": now() + 60})), "not_yet_valid"),
        (
            good(json!({"iss": "https://other-issuer.test"})),
            "wrong_issuer",
        ),
        (
            good(json!({"aud": "https://other.test/mcp"})),
            "wrong_audience",
        ),
        (good(json!({"aud": null})), "wrong_audience"),
        (good(json!({"sub": null})), "malformed"),
        (
            other.sign_as("rsa-a", &claims("alice", json!({}))),
            "bad_signature",
        ),
        (other.sign(&claims("alice", json!({}))), "unknown_key"),
        ("not-a-jwt".to_owned(), "malformed"),
    ];
    let invalid = format!(
        r#"Bearer error="invalid_token", resource_metadata="{METADATA_URL}", scope="{SCOPE}""#
    );
    for (token, reason) in &cases {
        let reply = try_initialize(&gw, Some(&bearer(token))).await;
        assert_refused(&reply, 401, &invalid);
        assert!(failures(&gw, reason).await >= 1.0, "{reason} not counted");
    }
    assert_eq!(failures(&gw, "wrong_audience").await, 2.0);
    assert_eq!(failures(&gw, "malformed").await, 2.0);

    // Within the leeway a token is still good; without the required scope it is forbidden.
    session_of(&gw, &good(json!({"exp": now() - 2}))).await;
    let reply = try_initialize(&gw, Some(&bearer(&good(json!({"scope": "other"}))))).await;
    let forbidden = format!(
        r#"Bearer error="insufficient_scope", resource_metadata="{METADATA_URL}", scope="{SCOPE}""#
    );
    assert_refused(&reply, 403, &forbidden);
    assert_eq!(failures(&gw, "insufficient_scope").await, 1.0);

    // No token: a challenge without error that points at the metadata.
    let plain = format!(r#"Bearer resource_metadata="{METADATA_URL}", scope="{SCOPE}""#);
    assert_refused(&try_initialize(&gw, None).await, 401, &plain);
    let token = good(json!({}));
    assert!(
        !gw.log().contains(&token[token.len() - 20..]),
        "a token reached the log"
    );
}

#[tokio::test]
async fn protected_resource_metadata_is_served_at_both_paths() {
    let jwks = Jwks::start(&[&TestKey::rsa_a()]).await;
    let gw = jwks_gateway(&jwks, "").await;
    let base = gw.mcp_url.trim_end_matches("/mcp").to_owned();
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let response = gw
            .http
            .get(format!("{base}{path}"))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .expect("GET metadata");
        let reply = Reply::read(response).await;
        assert_eq!(reply.status.as_u16(), 200, "{path}: {reply:?}");
        assert!(reply.content_type().starts_with("application/json"));
        assert_eq!(
            reply.json(),
            json!({
                "resource": RESOURCE,
                "authorization_servers": [ISSUER],
                "scopes_supported": [SCOPE],
                "bearer_methods_supported": ["header"],
            }),
            "{path}"
        );
    }

    // Without OAuth there is no metadata.
    let gw = Gateway::start().await;
    let base = gw.mcp_url.trim_end_matches("/mcp").to_owned();
    let response = gw
        .http
        .get(format!("{base}/.well-known/oauth-protected-resource"))
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test]
async fn a_rotated_jwks_key_is_picked_up_and_unknown_keys_cannot_hammer_the_jwks() {
    let (a, b) = (TestKey::rsa_a(), TestKey::rsa_b());
    let jwks = Jwks::start(&[&a]).await;
    let gw = jwks_gateway(&jwks, "jwks_cooldown = \"1h\"").await;
    assert_eq!(jwks.hits(), 1, "fetched once at start");
    session_of(&gw, &a.sign(&claims("alice", json!({})))).await;
    assert_eq!(jwks.hits(), 1, "a known key needs no fetch");

    jwks.publish(&[&a, &b]);
    session_of(&gw, &b.sign(&claims("alice", json!({})))).await;
    assert_eq!(
        jwks.hits(),
        2,
        "the unknown key made the gateway fetch the JWKS again"
    );

    let attempts = (0..20).map(|i| {
        let token = b.sign_as(&format!("made-up-{i}"), &claims("mallory", json!({})));
        let gw = &gw;
        async move {
            try_initialize(gw, Some(&bearer(&token)))
                .await
                .status
                .as_u16()
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(
        jwks.hits(),
        2,
        "unknown key ids within the cooldown fetch nothing"
    );
    assert_eq!(failures(&gw, "unknown_key").await, 20.0);
}

#[tokio::test]
async fn a_key_removed_from_the_jwks_stops_working_at_the_next_refresh() {
    let (a, b) = (TestKey::rsa_a(), TestKey::rsa_b());
    let jwks = Jwks::start(&[&a]).await;
    let gw = jwks_gateway(&jwks, "jwks_refresh = \"1s\"\njwks_cooldown = \"1h\"").await;
    let token = a.sign(&claims("alice", json!({})));
    session_of(&gw, &token).await;
    jwks.publish(&[&b]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = try_initialize(&gw, Some(&bearer(&token)))
            .await
            .status
            .as_u16();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the removed key still works after 10 s ({} JWKS fetches)",
            jwks.hits()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    session_of(&gw, &b.sign(&claims("alice", json!({})))).await;
}

// ------------------------------------------------------------------ no token passthrough

/// The headers of every request an upstream received, in order.
type SeenHeaders = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// A minimal Streamable HTTP upstream (JSON answers only) that records every request's headers.
async fn recording_upstream(seen: SeenHeaders) -> TestServer {
    TestServer::start(Arc::new(move |parts: &Parts, body: &[u8]| {
        let headers = parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        seen.lock().unwrap().push(headers);
        if parts.method != hyper::Method::POST {
            return Response::builder()
                .status(405)
                .body(Full::default())
                .unwrap();
        }
        let message: Value = serde_json::from_slice(body).unwrap_or_default();
        let (Some(id), Some(method)) = (message.get("id"), message["method"].as_str()) else {
            return Response::builder()
                .status(202)
                .body(Full::default())
                .unwrap();
        };
        let result = match method {
            "initialize" => json!({
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "recorder", "version": "0"}
            }),
            "tools/list" => json!({"tools": [{"name": "seen", "inputSchema": {"type": "object"}}]}),
            "tools/call" => json!({"content": [{"type": "text", "text": "recorded"}]}),
            _ => json!({}),
        };
        let mut response =
            json_response(200, &json!({"jsonrpc": "2.0", "id": id, "result": result}));
        response
            .headers_mut()
            .insert("mcp-session-id", "recorder-session".parse().unwrap());
        response
    }))
    .await
}

#[tokio::test]
async fn the_clients_token_never_reaches_an_upstream() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let upstream = recording_upstream(seen.clone()).await;
    let rsa = TestKey::rsa_a();
    let jwks = Jwks::start(&[&rsa]).await;
    let upstream_toml = format!(
        "[[upstreams]]\nname = \"recorder\"\ntransport = \"http\"\nurl = \"{}/mcp\"\n\
         headers = {{ Authorization = \"Bearer upstream-credential\" }}\n",
        upstream.url
    );
    let gw = Gateway::builder()
        .toml(&format!(
            "{upstream_toml}\n{}",
            jwt_toml(&format!("jwks_url = \"{}\"", jwks.url()))
        ))
        .start()
        .await;
    let token = rsa.sign(&claims("alice", json!({})));
    let session = session_of(&gw, &token).await;
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "recorder__seen", "arguments": {}}});
    let reply = gw
        .post(
            Some(&session),
            call.to_string(),
            &[("authorization", &bearer(&token))],
        )
        .await;
    assert_eq!(
        reply.json()["result"]["content"][0]["text"],
        json!("recorded"),
        "{reply:?}"
    );
    let reply = gw
        .delete(Some(&session), &[("authorization", &bearer(&token))])
        .await;
    assert_eq!(reply.status.as_u16(), 204, "{reply:?}");

    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 3, "the upstream saw too little: {seen:?}");
    for headers in seen.iter() {
        for (name, value) in headers {
            assert!(
                !value.contains(&token) && !value.contains(&token[..40]),
                "the client's token reached the upstream in {name}: {headers:?}"
            );
        }
        let authorization: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n == "authorization")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(authorization, ["Bearer upstream-credential"], "{headers:?}");
    }
}
