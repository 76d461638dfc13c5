"""End-to-end: the Python `mcp` SDK client talks to mcpgate, which fronts the fixture over
stdio (prefix ``local``) and over Streamable HTTP (prefix ``remote``)."""

import uuid

import anyio
import mcp_types as types
import pytest
from harness import Stack
from mcp import Client
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from sdk_checks import TIMEOUT, check_progress, check_sampling, texts, watch_updates

pytestmark = pytest.mark.anyio


def client(gateway, **kwargs) -> Client:
    # mode="legacy": the initialize handshake (2025-11-25), which the gateway serves today.
    kwargs.setdefault("mode", "legacy")
    return Client(gateway.url, read_timeout_seconds=15, **kwargs)


def connector(gateway):
    return lambda **kwargs: client(gateway, **kwargs)


async def test_lists_tools_of_both_upstreams(gateway):
    with anyio.fail_after(TIMEOUT):
        async with client(gateway) as c:
            names = {tool.name for tool in (await c.list_tools()).tools}
    for prefix in ("local", "remote"):
        for tool in ("echo", "whoami", "test_tool_with_progress", "test_sampling"):
            assert f"{prefix}__{tool}" in names, sorted(names)
    assert not {"echo", "whoami"} & names, "unprefixed fixture tools leaked into the catalog"


async def test_echo(gateway, upstream):
    text = f"hello {upstream} {uuid.uuid4()}"
    with anyio.fail_after(TIMEOUT):
        async with client(gateway) as c:
            result = await c.call_tool(f"{upstream}__echo", {"text": text})
    assert not result.is_error, result
    assert texts(result) == [text], result


async def test_whoami_reaches_the_right_upstream(gateway, upstream):
    other = {"local": "remote", "remote": "local"}[upstream]
    with anyio.fail_after(TIMEOUT):
        async with client(gateway) as c:
            result = await c.call_tool(f"{upstream}__whoami", {})
    assert not result.is_error, result
    assert texts(result) == [upstream], f"expected the {upstream} fixture, not {other}: {result}"


async def test_progress_notifications_reach_the_client(gateway, upstream):
    await check_progress(connector(gateway), upstream)


async def test_sampling_is_answered_by_the_client(gateway, upstream):
    await check_sampling(connector(gateway), upstream)


@pytest.fixture(scope="module", params=["stdio", "http"])
def single_upstream_gateway(request):
    """A gateway with only one fixture upstream, so a resource URI names one upstream."""
    with Stack(upstreams=(request.param,)) as stack:
        yield stack


async def test_resource_subscription_delivers_updates(single_upstream_gateway):
    await watch_updates(connector(single_upstream_gateway), expected_count=1)


async def test_resource_subscription_with_two_upstreams(gateway):
    """Both upstreams offer test://watched-resource; however the gateway merges or namespaces
    it, every listed watched URI must deliver updates to a subscriber."""
    await watch_updates(connector(gateway))


async def test_auto_negotiation_probe_falls_back_or_succeeds(gateway):
    """The SDK's default mode probes server/discover first; the gateway must answer it promptly."""
    with anyio.fail_after(TIMEOUT):
        async with Client(gateway.url, read_timeout_seconds=15) as c:
            names = {tool.name for tool in (await c.list_tools()).tools}
            version = c.protocol_version
    assert version in HANDSHAKE_PROTOCOL_VERSIONS or version == "2026-07-28", version
    assert "local__echo" in names and "remote__echo" in names, sorted(names)
