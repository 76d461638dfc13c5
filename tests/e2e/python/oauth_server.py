"""A small OAuth 2.1 authorization server for the OAuth end-to-end test (test_oauth.py).

It serves what an MCP client needs to get a token for mcpgate, and nothing more:

* ``GET /.well-known/oauth-authorization-server`` -- RFC 8414 metadata (PKCE S256 only)
* ``POST /register`` -- RFC 7591 dynamic client registration (public clients, no secret)
* ``GET /authorize`` -- approves at once: redirects to the registered redirect URI with a code
* ``POST /token`` -- the authorization code grant, checking PKCE and the RFC 8707 ``resource``,
  answered with an RS256 JWT whose audience is that resource
* ``GET /jwks`` -- the public key, for mcpgate

Everything lives in memory, the RSA key is made at start, and it listens on 127.0.0.1 only.
Used in-process (``AuthServer().start()``) or standalone (``python oauth_server.py``), which
prints ``issuer <url>`` and serves until interrupted. Only the standard library, ``pyjwt`` and
``cryptography`` (both installed with the ``mcp`` SDK) are used.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

TOKEN_LIFETIME = 300  # seconds
KEY_ID = "test-authorization-server-key"


class AuthServer:
    """The server and what it has issued; ``issuer`` is its base URL once started."""

    def __init__(self, subject: str = "oauth-user", team: str = "oauth-team"):
        self.subject = subject
        self.team = team
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.clients: dict[str, dict] = {}
        self.codes: dict[str, dict] = {}
        self.issued: list[dict] = []  # claims of every token issued
        self.requests: list[str] = []  # "METHOD /path" of every request served
        self.issuer = ""
        self._httpd: ThreadingHTTPServer | None = None

    def start(self) -> "AuthServer":
        server = self

        class Handler(_Handler):
            auth = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        host, port = self._httpd.server_address[:2]
        self.issuer = f"http://{host}:{port}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def metadata(self) -> dict:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "registration_endpoint": f"{self.issuer}/register",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
        }

    def jwks(self) -> dict:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": KEY_ID, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def register(self, request: dict) -> tuple[int, dict]:
        redirect_uris = request.get("redirect_uris") or []
        if not redirect_uris:
            return 400, {"error": "invalid_redirect_uri"}
        client = dict(request)
        client.update(
            client_id=secrets.token_urlsafe(16),
            client_id_issued_at=int(time.time()),
            token_endpoint_auth_method="none",
        )
        self.clients[client["client_id"]] = client
        return 201, client

    def authorize(self, query: dict[str, str]) -> tuple[int, dict, str | None]:
        """Auto-approval: the redirect location, or an error."""
        client = self.clients.get(query.get("client_id", ""))
        redirect_uri = query.get("redirect_uri", "")
        if client is None or redirect_uri not in client["redirect_uris"]:
            return 400, {"error": "invalid_request", "error_description": "unknown client or redirect_uri"}, None
        if query.get("response_type") != "code" or query.get("code_challenge_method") != "S256":
            return 400, {"error": "invalid_request", "error_description": "code + S256 PKCE required"}, None
        code = secrets.token_urlsafe(24)
        self.codes[code] = {
            "client_id": client["client_id"],
            "redirect_uri": redirect_uri,
            "challenge": query.get("code_challenge", ""),
            "resource": query.get("resource"),
            "scope": query.get("scope", ""),
        }
        location = f"{redirect_uri}?{urlencode({'code': code, 'state': query.get('state', '')})}"
        return 302, {}, location

    def token(self, form: dict[str, str]) -> tuple[int, dict]:
        grant = self.codes.pop(form.get("code", ""), None)
        if form.get("grant_type") != "authorization_code" or grant is None:
            return 400, {"error": "invalid_grant"}
        if form.get("client_id") != grant["client_id"] or form.get("redirect_uri") != grant["redirect_uri"]:
            return 400, {"error": "invalid_grant"}
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        if not secrets.compare_digest(challenge, grant["challenge"]):
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        resource = form.get("resource")
        if not resource or resource != grant["resource"]:
            return 400, {"error": "invalid_target", "error_description": "resource (RFC 8707) required"}
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": resource,
            "sub": self.subject,
            "team": self.team,
            "client_id": grant["client_id"],
            "scope": grant["scope"],
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
        }
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": KEY_ID})
        self.issued.append(claims)
        body = {"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_LIFETIME}
        if grant["scope"]:
            body["scope"] = grant["scope"]
        return 200, body


class _Handler(BaseHTTPRequestHandler):
    auth: AuthServer  # set by AuthServer.start

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:
        url = urlparse(self.path)
        self.auth.requests.append(f"GET {url.path}")
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/.well-known/oauth-authorization-server":
            self._json(200, self.auth.metadata())
        elif url.path == "/jwks":
            self._json(200, self.auth.jwks())
        elif url.path == "/authorize":
            status, body, location = self.auth.authorize(query)
            if location is None:
                self._json(status, body)
            else:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
        else:
            self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        url = urlparse(self.path)
        self.auth.requests.append(f"POST {url.path}")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        if url.path == "/register":
            self._json(*self.auth.register(json.loads(raw or "{}")))
        elif url.path == "/token":
            form = {k: v[0] for k, v in parse_qs(raw).items()}
            self._json(*self.auth.token(form))
        else:
            self._json(404, {"error": "not_found"})

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    server = AuthServer().start()
    print(f"issuer {server.issuer}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
