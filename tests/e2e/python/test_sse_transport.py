"""End-to-end: the Python `mcp` SDK's HTTP+SSE client (`mcp.client.sse.sse_client`, the
2024-11-05 transport) talks to mcpgate's `/sse`: tools listed and called on both upstreams,
progress, sampling answered by the client, and resource subscriptions, all answered on the
client's one stream. Each test runs against one gateway and, marked ``fleet`` (run by
tests/fleet/run-all.sh), against 3 replicas behind haproxy's round-robin with no stickiness,
where the stream and the POSTs land on different replicas."""

import sys
import uuid
from pathlib import Path

import anyio
import pytest
from harness import Stack
from mcp import Client
from mcp.client.sse import sse_client
from sdk_checks import TIMEOUT, check_progress, check_sampling, texts, watch_updates

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fleet"))

from fleet import Fleet  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", params=["gateway", pytest.param("fleet", marks=pytest.mark.fleet)])
def stack(request):
    """One gateway, or Redis + 3 replicas + haproxy; both with the fixture over stdio
    (``local``) and Streamable HTTP (``remote``)."""
    started = Stack(upstreams=("stdio", "http")) if request.param == "gateway" \
        else Fleet(replicas=3, upstreams=("stdio", "http"))
    with started as running:
        yield running
        if request.session.testsfailed:
            print(f"\n[{request.param}] process logs (in {running.logdir}):\n{running.logs()}")


@pytest.fixture(params=["local", "remote"])
def upstream(request):
    return request.param


def client(stack, **kwargs) -> Client:
    url = stack.url.removesuffix("/mcp") + "/sse"
    return Client(sse_client(url, sse_read_timeout=60), mode="legacy", read_timeout_seconds=15, **kwargs)


def connector(stack):
    return lambda **kwargs: client(stack, **kwargs)


async def test_lists_and_calls_tools_of_both_upstreams(stack, upstream):
    text = f"over /sse to {upstream} {uuid.uuid4()}"
    with anyio.fail_after(TIMEOUT):
        async with client(stack) as c:
            names = {tool.name for tool in (await c.list_tools()).tools}
            assert f"{upstream}__echo" in names, sorted(names)
            for n in range(5):
                result = await c.call_tool(f"{upstream}__echo", {"text": f"{text} {n}"})
                assert not result.is_error, result
                assert texts(result) == [f"{text} {n}"], result


async def test_progress_reaches_the_stream(stack, upstream):
    await check_progress(connector(stack), upstream)


async def test_sampling_is_answered_by_the_client(stack, upstream):
    await check_sampling(connector(stack), upstream)


async def test_resource_subscriptions_deliver_updates(stack):
    await watch_updates(connector(stack))
