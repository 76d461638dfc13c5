"""Shared fixtures: one gateway (tests/e2e/harness.py) in front of two fixture upstreams."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import Stack, interrupt_on_sigterm  # noqa: E402

interrupt_on_sigterm()


@pytest.fixture(scope="session")
def gateway(request):
    """The running stack; its ``url`` is the gateway's /mcp endpoint."""
    with Stack(upstreams=("stdio", "http")) as stack:
        yield stack
        if request.session.testsfailed:
            print(f"\n[harness] process logs (in {stack.logdir}):\n{stack.logs()}")


@pytest.fixture(params=["local", "remote"])
def upstream(request):
    """Upstream name, which is also its tool prefix: ``local`` (stdio) or ``remote`` (HTTP)."""
    return request.param


@pytest.fixture
def anyio_backend():
    return "asyncio"
