"""End-to-end: a real MCP client (the Python SDK's OAuth provider) discovers how to authenticate
to mcpgate (`[server.auth] mode = "jwt"`) from its 401 and Protected Resource Metadata, registers
with a test authorization server (oauth_server.py), gets a token through the authorization code
flow with PKCE and the RFC 8707 resource, then initializes and calls a tool.

The test starts its own gateway (in front of the stdio fixture) on a port chosen in advance,
since the gateway's canonical resource URL, which tokens must name, includes it.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import anyio
import httpx2
import mcp_types as types
import pytest
from harness import FIXTURE_BIN, GATEWAY_BIN, HarnessError, Proc, metric, missing_binary
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from oauth_server import AuthServer

pytestmark = pytest.mark.anyio

TIMEOUT = 60  # seconds for the whole client flow
SCOPE = "mcp:tools"
REDIRECT_URI = "http://127.0.0.1:9/callback"  # never contacted: the test reads the redirect itself


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gateway_config(port: int, issuer: str) -> str:
    return f"""
[server]
listen = "127.0.0.1:{port}"

[server.auth]
mode = "jwt"
resource = "http://127.0.0.1:{port}/mcp"
authorization_servers = ["{issuer}"]
required_scopes = ["{SCOPE}"]

[server.auth.jwt]
issuer = "{issuer}"
jwks_url = "{issuer}/jwks"

[admin]
listen = "127.0.0.1:0"

[[upstreams]]
name = "local"
transport = "stdio"
command = "{FIXTURE_BIN}"
args = ["stdio", "--name", "local"]
"""


@pytest.fixture
def auth_server():
    server = AuthServer().start()
    yield server
    server.stop()


@pytest.fixture
def oauth_gateway(auth_server):
    """(mcp url, admin url) of a gateway that trusts `auth_server`."""
    if not GATEWAY_BIN.is_file():
        raise HarnessError(missing_binary(GATEWAY_BIN))
    logdir = Path(tempfile.mkdtemp(prefix="mcpgate-oauth-"))
    config = logdir / "mcpgate.toml"
    config.write_text(gateway_config(free_port(), auth_server.issuer))
    gateway = Proc("mcpgate", [str(GATEWAY_BIN), "serve", "--config", str(config)], logdir)
    try:
        url = gateway.wait_listening()
        admin = gateway.next_line().removeprefix("admin on ").strip()
        yield url, admin
    finally:
        gateway.stop()
        print(f"\n[oauth] gateway log:\n{gateway.tail()}")


class MemoryStorage:
    """The SDK's TokenStorage, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class AutoApprovingBrowser:
    """Plays the user's browser: opens the authorization URL, and hands the code it is
    redirected with back to the SDK."""

    def __init__(self) -> None:
        self.redirect: dict[str, str] = {}

    async def open(self, authorization_url: str) -> None:
        async with httpx2.AsyncClient(follow_redirects=False, timeout=10) as browser:
            response = await browser.get(authorization_url)
        assert response.status_code == 302, f"authorization refused: {response.status_code} {response.text}"
        location = urlparse(response.headers["location"])
        assert location.geturl().startswith(REDIRECT_URI), location
        self.redirect = {k: v[0] for k, v in parse_qs(location.query).items()}

    async def callback(self) -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=self.redirect["code"], state=self.redirect.get("state"))


async def test_sdk_client_discovers_oauth_and_calls_a_tool(auth_server, oauth_gateway):
    url, admin = oauth_gateway
    seen: list[tuple[str, str, int, str]] = []

    async def record(response: httpx2.Response) -> None:
        request = response.request
        seen.append((request.method, str(request.url), response.status_code, response.headers.get("www-authenticate", "")))

    browser = AutoApprovingBrowser()
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="mcpgate oauth e2e",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=MemoryStorage(),
        redirect_handler=browser.open,
        callback_handler=browser.callback,
    )
    text = "hello through OAuth"
    with anyio.fail_after(TIMEOUT):
        async with httpx2.AsyncClient(auth=provider, timeout=15, event_hooks={"response": [record]}) as http:
            async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
                result = await client.call_tool("local__echo", {"text": text})
                whoami = await client.call_tool("local__whoami", {})

    assert not result.is_error, result
    assert [b.text for b in result.content if isinstance(b, types.TextContent)] == [text]
    assert not whoami.is_error, whoami

    # The flow went through discovery: 401 with a challenge naming the metadata, then the metadata.
    resource_metadata = url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
    first = seen[0]
    assert (first[0], first[1], first[2]) == ("POST", url, 401), seen
    assert f'resource_metadata="{resource_metadata}"' in first[3], first
    assert f'scope="{SCOPE}"' in first[3], first
    assert ("GET", resource_metadata, 200) in [(m, u, s) for m, u, s, _ in seen], seen
    assert ["POST /register", "GET /authorize", "POST /token"] == [
        r for r in auth_server.requests if r.split()[0] == "POST" or r.endswith("/authorize")
    ], auth_server.requests

    # The token was issued for this gateway, with the scope the challenge asked for.
    assert len(auth_server.issued) == 1, auth_server.issued
    claims = auth_server.issued[0]
    assert claims["aud"] == url, claims
    assert claims["scope"] == SCOPE, claims

    # Every later request carried the token and was admitted; only the first was refused.
    assert all(status != 401 for method, u, status, _ in seen[1:] if u == url), seen
    assert metric(admin, 'mcpgate_auth_failures_total{reason="missing"}') == 1.0
