"""The mcpgate image, run the way the Helm chart runs it.

The configuration is the chart's own rendered ConfigMap (tests/deploy/chart.py, the real Helm
engine) with one Streamable HTTP upstream: the fixture (target/debug/mcpgate-fixture) on a
loopback port of the host. The chart's Secret (the HMAC key) is written to a folder mounted at
/etc/mcpgate/secrets, as its projected volume would be. The container runs as uid 10001 with a
read-only root filesystem, a tmpfs /tmp, no capabilities and no-new-privileges (tests/image/
podman.py), on the host's network with its ports set by MCPGATE_*__LISTEN overrides. A real MCP
client (the Python SDK) then initializes a session through it and calls a tool.

    bash tests/image/build.sh && target/tools/venv/bin/python -m pytest -v tests/image/test_image.py

The last test runs the derived image (localhost/mcpgate-node:test, deploy/images/Dockerfile.node)
with the npm filesystem server as a stdio upstream over a mounted folder.

Needs root (podman), the images (localhost/mcpgate:test and localhost/mcpgate-node:test, from
build.sh; others with MCPGATE_IMAGE / MCPGATE_NODE_IMAGE) and `cargo build --bins` (the
fixture). Every wait is bounded; containers and the fixture are removed at the end, also when a
test fails.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import podman  # noqa: E402
from harness import FIXTURE_BIN, HarnessError, Proc, missing_binary  # noqa: E402

CHART_MODULE = ROOT / "tests" / "deploy" / "chart.py"
CHART_WAIT = float(os.environ.get("MCPGATE_CHART_WAIT", "0"))  # seconds to wait for chart.py
UPSTREAM = "demo"  # the upstream's name, hence the tools' prefix
CLIENT_TIMEOUT = 30.0  # seconds for the MCP client's whole exchange
STOP_GRACE = 20  # `podman stop -t`: SIGKILL after this many seconds
PROMPT_STOP = 10.0  # an idle gateway must be gone well within this after SIGTERM
CARGO_VERSION = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)


def load_chart():
    """tests/deploy/chart.py (written alongside this test); waits up to MCPGATE_CHART_WAIT
    seconds for it to appear."""
    deadline = time.monotonic() + CHART_WAIT
    while not CHART_MODULE.exists():
        if time.monotonic() >= deadline:
            pytest.fail(f"{CHART_MODULE} not found: the chart's render helper is needed for the config")
        time.sleep(2)
    sys.path.insert(0, str(CHART_MODULE.parent))
    import chart

    return chart


class Stack:
    """A running container of `image` configured by the chart rendered with `values` (plus,
    with `fixture`, an HTTP upstream: the fixture on a free loopback port of the host)."""

    def __init__(self, tmp: Path, image: str, values: dict, fixture: bool, extra_args: tuple[str, ...] = ()):
        self.tmp = tmp
        self.image = image
        self.values = values
        self.with_fixture = fixture
        self.extra_args = extra_args
        self.name = f"mcpgate-image-test-{uuid.uuid4().hex[:8]}"
        self.fixture: Proc | None = None
        self.container_id = ""
        self.objects: list[dict] = []
        self.config_text = ""
        self.http_port = 0
        self.admin_port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/mcp"

    def admin(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def start(self) -> None:
        if not podman.image_exists(self.image):
            pytest.fail(f"image {self.image} not found: run `bash tests/image/build.sh` first")
        chart = load_chart()
        values = dict(self.values)
        if self.with_fixture:
            if not FIXTURE_BIN.is_file():
                pytest.fail(missing_binary(FIXTURE_BIN))
            argv = [str(FIXTURE_BIN), "http", "--listen", "127.0.0.1:0", "--name", UPSTREAM]
            self.fixture = Proc("fixture-demo", argv, self.tmp)
            fixture_url = self.fixture.wait_listening()
            values["upstreams"] = [{"name": UPSTREAM, "transport": "http", "url": fixture_url}]
        self.objects = chart.render(values)
        self.config_text = chart.config_toml(self.objects)
        config = self.tmp / "mcpgate.toml"
        config.write_text(self.config_text)
        config.chmod(0o644)

        # The Secret's keys as files, as the chart's projected volume shows them (0440, fsGroup).
        secret_dir = None
        for secret in chart.find_all(self.objects, "Secret"):
            for key, value in (secret.get("data") or {}).items():
                if secret_dir is None:
                    secret_dir = self.tmp / "secrets"
                    secret_dir.mkdir()
                    secret_dir.chmod(0o755)
                path = secret_dir / key
                path.write_bytes(base64.b64decode(value))
                os.chown(path, podman.UID, podman.GID)
                path.chmod(0o440)

        self.http_port, self.admin_port = podman.free_port(), podman.free_port()
        self.container_id = podman.run_container(
            self.name,
            config,
            self.http_port,
            self.admin_port,
            secrets_dir=secret_dir,
            image=self.image,
            extra_args=self.extra_args,
        )
        podman.wait_ready(self.admin_port, name=self.name, timeout=60)

    def stop(self) -> None:
        podman.remove_container(self.name)
        if self.fixture is not None:
            self.fixture.stop()


@contextlib.contextmanager
def running(*args, **kwargs):
    tmp = Path(tempfile.mkdtemp(prefix="mcpgate-image-"))
    os.chmod(tmp, 0o755)
    s = Stack(tmp, *args, **kwargs)
    try:
        try:
            s.start()
        except (podman.PodmanError, HarnessError) as err:
            pytest.fail(f"could not start the container: {err}")
        yield s
    finally:
        s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def stack():
    """The image with the chart's defaults (memory store, one replica) plus an HMAC key, which
    puts the chart's Secret and its mount in play, and the fixture as an HTTP upstream."""
    with running(podman.IMAGE, {"hmacKey": {"value": secrets.token_hex(24)}}, fixture=True) as s:
        yield s


async def mcp_exchange(url: str, tool: str, arguments: dict):
    """initialize, tools/list and tools/call through the SDK's client session."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    with anyio.fail_after(CLIENT_TIMEOUT):
        async with streamable_http_client(url) as (read, write, *_):
            async with ClientSession(read, write, read_timeout_seconds=15) as session:
                init = await session.initialize()
                tools = {t.name for t in (await session.list_tools()).tools}
                result = await session.call_tool(tool, arguments)
                return init, tools, result


def texts(result) -> list[str]:
    import mcp_types as types

    return [b.text for b in result.content if isinstance(b, types.TextContent)]


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


# --- the image matches the chart ---------------------------------------------------------------


def test_image_metadata_matches_the_chart(stack):
    image = json.loads(podman.podman("image", "inspect", podman.IMAGE).stdout)[0]
    config = image["Config"]
    assert config["Entrypoint"] == ["mcpgate"]
    assert config["User"] == "10001:10001"
    assert set(config["ExposedPorts"]) == {"8080/tcp", "9090/tcp"}
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["MCPGATE_SERVER__LISTEN"] == "0.0.0.0:8080"
    assert env["MCPGATE_ADMIN__LISTEN"] == "0.0.0.0:9090"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == CARGO_VERSION
    assert labels["org.opencontainers.image.title"] == "mcpgate"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"

    chart = load_chart()
    deployment = chart.find(stack.objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "mcpgate")
    # The image's default command is what the chart runs; the chart's user is the image's.
    assert config["Cmd"] == container["args"] == list(podman.CHART_ARGS)
    # The chart's default image (repository mcpgate, tag = appVersion) is what build.sh tags.
    assert container["image"] == f"mcpgate:{CARGO_VERSION}"
    assert podman.image_exists(f"localhost/mcpgate:{CARGO_VERSION}")
    assert container["securityContext"]["runAsUser"] == podman.UID
    assert container["securityContext"]["runAsGroup"] == podman.GID
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {p["containerPort"] for p in container["ports"]} == {8080, 9090}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[podman.CONFIG_DIR]["readOnly"] is True
    assert mounts[podman.SECRETS_PATH]["readOnly"] is True
    assert "/tmp" in mounts
    # The config really references the mounted secret.
    assert f'{podman.SECRETS_PATH}/hmac-key' in stack.config_text


# --- the running container ----------------------------------------------------------------------


def test_health_and_readiness(stack):
    for path in ("/healthz", "/readyz"):
        status, body = podman.http_get(stack.admin(path))
        assert status == 200, (path, status, body)
    status, body = podman.http_get(stack.admin("/metrics"))
    assert status == 200 and "mcpgate_" in body


def test_mcp_client_calls_a_tool_through_the_container(stack):
    text = f"hello from the image {uuid.uuid4()}"
    init, tools, result = anyio.run(mcp_exchange, stack.url, f"{UPSTREAM}__echo", {"text": text})
    assert init.server_info.name, init
    assert f"{UPSTREAM}__echo" in tools, sorted(tools)
    assert not result.is_error, result
    assert texts(result) == [text], result


def test_runs_as_uid_10001_without_privileges(stack):
    info = podman.inspect(stack.name)
    assert info["Config"]["User"] == "10001:10001"
    pid = info["State"]["Pid"]
    assert pid > 0
    status = proc_status(pid)
    assert status["Name"] == "mcpgate"
    assert status["Uid"].split() == ["10001"] * 4, status["Uid"]
    assert status["Gid"].split() == ["10001"] * 4, status["Gid"]
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[cap], 16) == 0, f"{cap} = {status[cap]}"
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2", "expected the default seccomp filter"


def test_root_filesystem_is_read_only(stack):
    info = podman.inspect(stack.name)
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    pid = info["State"]["Pid"]
    mounts = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        mounts[fields[4]] = fields[5].split(",")
    assert "ro" in mounts["/"], mounts["/"]
    assert "ro" in mounts[podman.CONFIG_PATH]
    assert "ro" in mounts[podman.SECRETS_PATH]
    assert "rw" in mounts["/tmp"]
    # And as the gateway's user sees it: nothing outside /tmp can be written.
    denied = podman.exec_in(stack.name, "/bin/sh", "-c", "echo x > /etc/mcpgate/probe")
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied
    denied = podman.exec_in(stack.name, "/bin/sh", "-c", "echo x > /usr/local/bin/probe")
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied
    allowed = podman.exec_in(stack.name, "/bin/sh", "-c", "echo x > /tmp/probe && rm /tmp/probe && id -u")
    assert allowed.returncode == 0 and allowed.stdout.strip() == "10001", allowed


def test_sigterm_stops_promptly_and_logs_are_json(stack):
    """Last: stops the container."""
    seconds, code = podman.stop_container(stack.name, timeout=STOP_GRACE)
    text = podman.logs(stack.name)
    assert code == 0, f"exit code {code} after {seconds:.1f}s (137 = killed)\n{text}"
    assert seconds < PROMPT_STOP, f"took {seconds:.1f}s to stop"
    events = []
    for line in text.splitlines():
        if not line.strip() or line.startswith(("listening on ", "admin on ")):
            continue  # the two plain stdout lines announcing the listeners
        try:
            events.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a log line is not JSON: {line!r}\n{text}")
    messages = [e.get("fields", {}).get("message", "") for e in events]
    assert any("mcpgate is serving" in m for m in messages), messages
    assert any(m.startswith("draining") for m in messages), messages
    assert all("level" in e and "timestamp" in e for e in events)


# --- the derived image with Node and an npm stdio server (deploy/images/Dockerfile.node) ---------

NODE_IMAGE = os.environ.get("MCPGATE_NODE_IMAGE", "localhost/mcpgate-node:test")


def children(pid: int) -> list[int]:
    """Host pids of the processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if proc_status(int(entry.name)).get("PPid") == str(pid):
                    found.append(int(entry.name))
            except OSError:
                continue  # gone meanwhile
    return found


def test_node_image_serves_an_npm_stdio_server():
    """The chart with a stdio upstream naming the image's npm server (a bare command found in
    PATH), a data volume mounted as extraVolumes would, the same restrictions."""
    data = Path(tempfile.mkdtemp(prefix="mcpgate-image-data-"))
    try:
        data.chmod(0o755)
        (data / "hello.txt").write_text(f"hello from a volume {uuid.uuid4()}\n")
        (data / "hello.txt").chmod(0o644)
        values = {
            "upstreams": [
                {"name": "files", "transport": "stdio", "command": "mcp-server-filesystem", "args": ["/data"]}
            ]
        }
        with running(NODE_IMAGE, values, fixture=False, extra_args=("--volume", f"{data}:/data:ro")) as s:
            init, tools, result = anyio.run(
                mcp_exchange, s.url, "files__read_text_file", {"path": "/data/hello.txt"}
            )
            assert "files__list_allowed_directories" in tools, sorted(tools)
            assert not result.is_error, result
            assert texts(result) == [(data / "hello.txt").read_text()], result

            # tini is PID 1, mcpgate its child, node (the stdio server) mcpgate's; all uid 10001.
            pid = podman.inspect(s.name)["State"]["Pid"]
            assert proc_status(pid)["Name"] == "tini"
            (gateway,) = children(pid)
            assert proc_status(gateway)["Name"] == "mcpgate"
            servers = children(gateway)
            assert [proc_status(p)["Name"] for p in servers] == ["node"], servers
            for p in (pid, gateway, *servers):
                status = proc_status(p)
                assert status["Uid"].split() == ["10001"] * 4, (p, status["Uid"])
                assert int(status["CapEff"], 16) == 0

            seconds, code = podman.stop_container(s.name, timeout=STOP_GRACE)
            assert code == 0, f"exit code {code} after {seconds:.1f}s\n{podman.logs(s.name)}"
            assert seconds < PROMPT_STOP, f"took {seconds:.1f}s to stop"
    finally:
        shutil.rmtree(data, ignore_errors=True)
