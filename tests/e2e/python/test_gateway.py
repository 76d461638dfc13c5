"""End-to-end: the Python `mcp` SDK client talks to mcpgate, which fronts the fixture over
stdio (prefix ``local``) and over Streamable HTTP (prefix ``remote``)."""

import uuid

import anyio
import mcp_types as types
import pytest
from harness import Stack
from mcp import Client
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

pytestmark = pytest.mark.anyio

TIMEOUT = 30  # seconds for any one test's client work
WATCHED = "watched-resource"  # test://watched-resource in the conformance suite's surface


def client(gateway, **kwargs) -> Client:
    # mode="legacy": the initialize handshake (2025-11-25), which the gateway serves today.
    kwargs.setdefault("mode", "legacy")
    return Client(gateway.url, read_timeout_seconds=15, **kwargs)


def texts(result: types.CallToolResult) -> list[str]:
    return [block.text for block in result.content if isinstance(block, types.TextContent)]


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
    updates: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total))

    with anyio.fail_after(TIMEOUT):
        async with client(gateway) as c:
            result = await c.call_tool(f"{upstream}__test_tool_with_progress", {}, progress_callback=on_progress)
    assert not result.is_error, result
    progress = [p for p, _ in updates]
    assert len(progress) >= 3, updates
    assert progress == sorted(progress), f"progress went backwards: {updates}"
    assert progress[-1] == 100 and updates[-1][1] == 100, updates


async def test_sampling_is_answered_by_the_client(gateway, upstream):
    prompt = f"prompt for {upstream} {uuid.uuid4()}"
    answer = f"sampled answer {uuid.uuid4()}"
    seen: list[str] = []

    async def sample(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        for message in params.messages:
            blocks = message.content if isinstance(message.content, list) else [message.content]
            seen.extend(b.text for b in blocks if isinstance(b, types.TextContent))
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(text=answer), model="e2e-model", stop_reason="endTurn"
        )

    with anyio.fail_after(TIMEOUT):
        async with client(gateway, sampling_callback=sample) as c:
            result = await c.call_tool(f"{upstream}__test_sampling", {"prompt": prompt})
    assert not result.is_error, result
    assert prompt in seen, f"sampling request did not carry the prompt: {seen}"
    assert any(answer in t for t in texts(result)), result


async def watch_updates(stack, expected_count=None) -> tuple[list[str], set[str]]:
    """Subscribes to every watched resource the gateway lists and waits until each has
    reported an update. The fixture changes test://watched-resource every 2 seconds and
    notifies its subscribers, so no trigger is needed. Returns (subscribed, updated URIs)."""
    send, receive = anyio.create_memory_object_stream[str](100)

    async def on_message(message) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            await send.send(message.params.uri)

    updated: set[str] = set()
    with anyio.fail_after(TIMEOUT):
        async with client(stack, message_handler=on_message) as c:
            resources_cap = c.server_capabilities.resources
            assert resources_cap and resources_cap.subscribe, "gateway does not advertise resources.subscribe"
            uris = [r.uri for r in (await c.list_resources()).resources if WATCHED in r.uri]
            if expected_count is not None:
                assert len(uris) == expected_count, uris
            assert uris, "no watched resource listed by the gateway"
            for uri in uris:
                await c.subscribe_resource(uri)
            while not set(uris) <= updated:
                uri = await receive.receive()
                assert uri in uris, f"update for {uri!r}, subscribed to {uris}"
                updated.add(uri)
            # The update is real: the resource reads back through the gateway.
            contents = (await c.read_resource(uris[0])).contents
            assert contents and "revision" in contents[0].text, contents
    return uris, updated


@pytest.fixture(scope="module", params=["stdio", "http"])
def single_upstream_gateway(request):
    """A gateway with only one fixture upstream, so a resource URI names one upstream."""
    with Stack(upstreams=(request.param,)) as stack:
        yield stack


async def test_resource_subscription_delivers_updates(single_upstream_gateway):
    await watch_updates(single_upstream_gateway, expected_count=1)


async def test_resource_subscription_with_two_upstreams(gateway):
    """Both upstreams offer test://watched-resource; however the gateway merges or namespaces
    it, every listed watched URI must deliver updates to a subscriber."""
    await watch_updates(gateway)


async def test_auto_negotiation_probe_falls_back_or_succeeds(gateway):
    """The SDK's default mode probes server/discover first; the gateway must answer it promptly."""
    with anyio.fail_after(TIMEOUT):
        async with Client(gateway.url, read_timeout_seconds=15) as c:
            names = {tool.name for tool in (await c.list_tools()).tools}
            version = c.protocol_version
    assert version in HANDSHAKE_PROTOCOL_VERSIONS or version == "2026-07-28", version
    assert "local__echo" in names and "remote__echo" in names, sorted(names)
