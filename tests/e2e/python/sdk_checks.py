"""What every SDK end-to-end suite checks of a client connected to mcpgate, whatever the
transport (test_gateway.py over Streamable HTTP, test_sse_transport.py over HTTP+SSE): progress,
sampling answered by the client, resource updates. ``connect(**kwargs)`` returns an unentered
``mcp.Client`` with those keyword arguments (callbacks) for the stack under test."""

import uuid

import anyio
import mcp_types as types

TIMEOUT = 30  # seconds for any one check's client work
WATCHED = "watched-resource"  # test://watched-resource in the conformance suite's surface


def texts(result: types.CallToolResult) -> list[str]:
    return [block.text for block in result.content if isinstance(block, types.TextContent)]


async def check_progress(connect, upstream: str) -> None:
    """The fixture's progress tool reports 0, 50 and 100 of 100, all before its response."""
    updates: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total))

    with anyio.fail_after(TIMEOUT):
        async with connect() as c:
            result = await c.call_tool(f"{upstream}__test_tool_with_progress", {}, progress_callback=on_progress)
    assert not result.is_error, result
    assert updates == [(0, 100), (50, 100), (100, 100)], updates


async def check_sampling(connect, upstream: str) -> None:
    """The fixture's sampling tool gets the client's answer, and the client saw the prompt."""
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
        async with connect(sampling_callback=sample) as c:
            result = await c.call_tool(f"{upstream}__test_sampling", {"prompt": prompt})
    assert not result.is_error, result
    assert prompt in seen, f"sampling request did not carry the prompt: {seen}"
    assert any(answer in t for t in texts(result)), result


async def watch_updates(connect, expected_count=None) -> tuple[list[str], set[str]]:
    """Subscribes to every watched resource the gateway lists and waits until each has
    reported an update. The fixture changes test://watched-resource every 2 seconds and
    notifies its subscribers, so no trigger is needed. Returns (subscribed, updated URIs)."""
    send, receive = anyio.create_memory_object_stream[str](100)

    async def on_message(message) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            await send.send(message.params.uri)

    updated: set[str] = set()
    with anyio.fail_after(TIMEOUT):
        async with connect(message_handler=on_message) as c:
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
