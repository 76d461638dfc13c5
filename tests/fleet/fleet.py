#!/usr/bin/env python3
"""A local mcpgate fleet: one real redis-server, N gateway replicas sharing it, and haproxy
balancing every request round-robin over them with no stickiness.

Used three ways:

* as a library (tests/e2e/python/test_fleet.py)::

      with Fleet(replicas=3) as fleet:
          fleet.url                      # haproxy's /mcp
          fleet.kill_replica(1)          # SIGKILL (the process group: its stdio child too)
          fleet.restart_replicas()       # every replica stopped, new ones started
          fleet.stop_redis(); fleet.start_redis()
          fleet.metric(0, "mcpgate_sessions_revived_total")

* ``fleet.py up --replicas 3``: starts a fleet, prints the load balancer's URL and keeps it
  running until Ctrl-C (or SIGTERM).
* ``fleet.py run --replicas 3 -- CMD ARGS...``: starts a fleet, runs CMD with
  MCPGATE_URL=<load balancer>/mcp (every literal ``{url}`` argument is replaced by it too) and
  MCPGATE_FLEET_CONTROL=<control endpoint> (see ``Control``: restart/kill replicas, stop Redis,
  read metrics), stops the fleet and exits with CMD's code.

What runs, all on 127.0.0.1 with free ports, in a temp dir that keeps every log:

* ``redis-server`` with AOF (``appendfsync always``), so a restart keeps every session;
* the replicas: ``mcpgate serve`` with ``[session] store = "redis"`` and a shared
  ``[server] hmac_key``; upstream ``stdio`` is the fixture as a child of each replica (name
  ``local``), upstream ``http`` is one fixture process serving Streamable HTTP (name ``remote``)
  shared by all replicas. ``prefix`` sets every upstream's tool prefix (default: its name);
  ``extra_upstreams`` (``--extra-upstream JSON``) adds ``[[upstreams]]`` tables as given, after
  those; a table with a ``fixture`` key (a list of extra arguments, e.g. ``["--modern-only"]``)
  gets a fixture process of its own serving Streamable HTTP, shared by all replicas, as its
  ``url``: ``{"name": "legacy", "transport": "http", "era": "legacy", "fixture": []}``;
* ``haproxy`` (HTTP mode, ``balance roundrobin``, ``option httpclose`` so that every request
  is balanced on its own, no stickiness). It retries only connection failures
  (``retry-on conn-failure``: the request never reached a replica, so nothing is duplicated)
  and redispatches those to another replica. A request a replica accepted and then lost (it was
  killed) is answered 502 by haproxy and never replayed. Health checks use the replicas'
  ``/readyz``, as a Kubernetes Service follows readiness: a draining replica leaves the pool.
  ``/readyz`` ignores Redis, so during a Redis outage every replica stays in and a client sees
  the gateway's own 503 + Retry-After, not haproxy's. Timeouts are long
  so that SSE streams stay open. The runtime API (a unix socket in the temp dir) points a
  server slot at a restarted replica's new ports.

Every wait is bounded, and teardown kills every process it started (each in its own process
group). Only the standard library is used.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from harness import (  # noqa: E402
    FIXTURE_BIN,
    GATEWAY_BIN,
    UPSTREAM_NAMES,
    HarnessError,
    Proc,
    interrupt_on_sigterm,
    list_tool_names,
    missing_binary,
)

HMAC_KEY = "mcpgate-fleet-shared-hmac-key-0123456789abcdef"
BACKEND = "replicas"
START_TIMEOUT = 20.0  # seconds for one process to come up
READY_TIMEOUT = 30.0  # seconds for a replica to list tools / haproxy to see it UP
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL when stopping a replica

ADMIN_LINE = re.compile(r"admin on (http://127\.0\.0\.1:\d+)\s*$")
METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port(url: str) -> int:
    return int(re.search(r":(\d+)(/|$)", url.split("//", 1)[1]).group(1))


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {"name{labels}": value} (``name`` alone without labels)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = METRIC_LINE.match(line)
        if match:
            try:
                out[match.group(1) + (match.group(2) or "")] = float(match.group(3))
            except ValueError:
                pass
    return out


def _signal_group(proc: Proc, sig: int) -> None:
    try:
        os.killpg(proc.popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Redis:
    """redis-server with AOF in its own directory, on a fixed free port (kept across restarts)."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.dir = logdir / "redis-data"
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.proc: Proc | None = None
        self.generation = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.proc is not None and self.proc.popen.poll() is None:
            return
        self.generation += 1
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir),
                "--logfile", "", "--protected-mode", "yes"]
        self.proc = Proc(f"redis.{self.generation}", argv, self.logdir)
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.popen.poll() is not None:
                raise HarnessError(f"redis-server exited ({self.proc.popen.returncode})\n{self.proc.tail()}")
            try:
                last = self.command("PING")
                if last == "+PONG":
                    return
            except OSError as err:
                last = f"{type(err).__name__}: {err}"
            time.sleep(0.05)
        raise HarnessError(f"redis-server not answering PING within {START_TIMEOUT}s ({last})\n{self.proc.tail()}")

    def command(self, *words: str, timeout: float = 2.0) -> str:
        """One inline command; returns the first reply line (enough for PING, DBSIZE, ...)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall((" ".join(words) + "\r\n").encode())
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data.decode(errors="replace").split("\r\n", 1)[0]

    def stop(self, kill: bool = True) -> None:
        """An outage: SIGKILL by default (AOF with fsync always keeps every write)."""
        if self.proc is None:
            return
        _signal_group(self.proc, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.popen.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            _signal_group(self.proc, signal.SIGKILL)
            self.proc.popen.wait(timeout=STOP_GRACE)
        self.proc.stop()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.popen.poll() is None


class Replica:
    """One `mcpgate serve`. A restart is a new process (new ports) in the same slot."""

    def __init__(self, index: int, config: Path, logdir: Path):
        self.index = index
        self.name = f"r{index}"
        self.config = config
        self.logdir = logdir
        self.generation = 0
        self.proc: Proc | None = None
        self.url = ""
        self.admin_url = ""

    def start(self) -> None:
        self.generation += 1
        self.proc = Proc(f"replica{self.index}.{self.generation}",
                         [str(GATEWAY_BIN), "serve", "--config", str(self.config)], self.logdir)
        self.url = self.proc.wait_listening()
        line = self.proc.next_line()
        match = ADMIN_LINE.search(line)
        if not match:
            raise HarnessError(f"{self.proc.name}: expected 'admin on ...', got {line!r}\n{self.proc.tail()}")
        self.admin_url = match.group(1)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.popen.poll() is None

    @property
    def port(self) -> int:
        return _port(self.url)

    @property
    def admin_port(self) -> int:
        return _port(self.admin_url)

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            _signal_group(self.proc, sig)

    def stop(self, grace: float = STOP_GRACE) -> float:
        """SIGTERM, then SIGKILL after `grace` seconds; returns how long it took to exit."""
        if self.proc is None:
            return 0.0
        started = time.monotonic()
        if self.proc.popen.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.popen.wait(timeout=STOP_GRACE)
        took = time.monotonic() - started
        self.proc.stop()  # reaps what is left of the process group, closes the log
        return took

    def kill(self) -> None:
        """SIGKILL to the process group (the replica and its stdio upstream child)."""
        if self.proc is None:
            return
        self.signal(signal.SIGKILL)
        self.proc.popen.wait(timeout=STOP_GRACE)
        self.proc.stop()

    def metrics_text(self, timeout: float = 2.0) -> str:
        status, body = _http_get(self.admin_url + "/metrics", timeout)
        if status != 200:
            raise HarnessError(f"{self.name}: /metrics answered {status}")
        return body

    def wait_ready(self, timeout: float = READY_TIMEOUT, probe_tools: set[str] | None = None) -> None:
        """Until /readyz is 200 and, when `probe_tools` is given (tool prefixes), tools/list on
        this replica lists a tool of each (the probe creates and deletes one session)."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.running:
                raise HarnessError(f"{self.name} exited while starting\n{self.proc.tail()}")
            try:
                status, body = _http_get(self.admin_url + "/readyz")
                if status != 200:
                    last = f"/readyz {status} {body.strip()}"
                elif probe_tools is None:
                    return
                else:
                    names = list_tool_names(self.url)
                    if probe_tools == {""}:
                        missing = [] if names else ["(any)"]
                    else:
                        missing = [p for p in probe_tools if not any(n.startswith(f"{p}__") for n in names)]
                    if not missing:
                        return
                    last = f"tools {names}, none with prefix {missing}"
            except (OSError, HarnessError, ValueError) as err:
                last = f"{type(err).__name__}: {err}"
            time.sleep(0.1)
        raise HarnessError(f"{self.name} not ready within {timeout}s ({last})\n{self.proc.tail()}")


class HAProxy:
    """haproxy in front of the replicas, with its runtime API on a unix socket."""

    def __init__(self, logdir: Path, replicas: list[Replica]):
        self.logdir = logdir
        self.port = free_port()
        self.socket = logdir / "haproxy.sock"
        self.config = logdir / "haproxy.cfg"
        self.replicas = replicas
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def render(self) -> str:
        servers = "\n".join(
            f"    server {r.name} 127.0.0.1:{r.port} check port {r.admin_port}" for r in self.replicas
        )
        return f"""\
global
    log stdout format raw local0 info
    stats socket {self.socket} mode 600 level admin
    maxconn 4096

defaults
    mode http
    log global
    option httplog
    # One request per connection on both sides, so each request is balanced on its own (no
    # connection-level stickiness). Not `http-server-close`: with a keep-alive client
    # connection, haproxy answers a request whose replica died mid-request (not the first on
    # that connection) by closing the client connection silently, without a status or a log
    # line, "so that the client retries"; MCP clients must not replay a POST, and the Python
    # SDK (mcp 2.3.0) then fails the whole client, not just that request. With `httpclose`
    # such a request gets a 502 and a log line.
    option httpclose
    # Forward each chunk of a streamed response at once. Without it haproxy may hold small
    # chunks back to merge them, and SSE events a server sends apart reach the client in one
    # read; the TypeScript SDK's SSEClientTransport then drops the progress notifications that
    # arrived with their response (it handles notifications a microtask after the response).
    option http-no-delay
    # Only failed connections are retried (the request never reached a replica) and every
    # retry goes to another replica. A request a replica accepted is never replayed.
    retries 3
    retry-on conn-failure
    option redispatch 1
    timeout connect 2s
    timeout queue 5s
    timeout http-request 30s
    timeout http-keep-alive 30s
    # SSE streams stay open for a long time.
    timeout client 1h
    timeout server 1h
    timeout check 1s

frontend mcp
    bind 127.0.0.1:{self.port}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    # Readiness, as a Kubernetes Service follows it: a draining replica leaves the pool.
    # /readyz ignores Redis, so during an outage the replicas' own 503 still reaches clients.
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 500ms fastinter 250ms downinter 250ms fall 2 rise 1
{servers}
"""

    def start(self) -> None:
        self.config.write_text(self.render())
        check = subprocess.run(["haproxy", "-c", "-q", "-f", str(self.config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise HarnessError(f"haproxy rejects {self.config}:\n{check.stdout}{check.stderr}")
        self.proc = Proc("haproxy", ["haproxy", "-db", "-f", str(self.config)], self.logdir)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.popen.poll() is not None:
                raise HarnessError(f"haproxy exited ({self.proc.popen.returncode})\n{self.proc.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    pass
                self.command("show info")
                return
            except OSError:
                time.sleep(0.05)
        raise HarnessError(f"haproxy not listening within {START_TIMEOUT}s\n{self.proc.tail()}")

    def command(self, line: str, timeout: float = 2.0) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def point(self, replica: Replica) -> None:
        """Points the replica's server slot at its current ports."""
        for line in (
            f"set server {BACKEND}/{replica.name} addr 127.0.0.1 port {replica.port}",
            f"set server {BACKEND}/{replica.name} check-port {replica.admin_port}",
        ):
            answer = self.command(line).strip()
            if answer and "changed" not in answer and "no need to change" not in answer.lower():
                raise HarnessError(f"haproxy refused {line!r}: {answer}")

    def states(self) -> dict[str, str]:
        """server name -> status (UP, DOWN, 'UP 1/2', MAINT, ...)."""
        text = self.command("show stat")
        lines = [l for l in text.splitlines() if l.strip()]
        header = lines[0].lstrip("# ").split(",")
        px, sv, st = header.index("pxname"), header.index("svname"), header.index("status")
        out = {}
        for line in lines[1:]:
            fields = line.split(",")
            if fields[px] == BACKEND and fields[sv] not in ("BACKEND", "FRONTEND"):
                out[fields[sv]] = fields[st]
        return out

    def wait_states(self, wanted: dict[str, str], timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        states = {}
        while time.monotonic() < deadline:
            states = self.states()
            if all(states.get(name) == status for name, status in wanted.items()):
                return
            time.sleep(0.05)
        raise HarnessError(f"haproxy states {states}, wanted {wanted} within {timeout}s")

    def served_by(self) -> list[tuple[str, int]]:
        """(server, HTTP status) of every request haproxy logged so far, oldest first."""
        out = []
        log = self.proc.stdout_log if self.proc else None
        if log is None or not log.exists():
            return out
        for line in log.read_text(errors="replace").splitlines():
            # httplog: ... mcp replicas/r1 0/0/0/3/3 200 ...
            match = re.search(rf" {BACKEND}/(\S+) \S+ (-?\d+) ", line)
            if match:
                out.append((match.group(1), int(match.group(2))))
        return out

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class Fleet:
    """redis-server + N replicas + haproxy. ``url`` is haproxy's /mcp endpoint."""

    def __init__(self, replicas: int = 3, upstreams=("stdio",), prefix: str | None = None,
                 sse_retry: str | None = None, idle_ttl: str = "1h", redis_timeout: str = "500ms",
                 extra_toml: str = "", extra_upstreams=()):
        unknown = set(upstreams) - set(UPSTREAM_NAMES)
        if unknown or not upstreams or replicas < 1:
            raise HarnessError(f"need >= 1 replica and upstreams from {sorted(UPSTREAM_NAMES)}")
        self.kinds = list(upstreams)
        self.prefix = prefix
        self.count = replicas
        self.sse_retry = sse_retry
        self.idle_ttl = idle_ttl
        self.redis_timeout = redis_timeout
        self.extra_toml = extra_toml
        self.extra_upstreams = [dict(table) for table in extra_upstreams]
        if any("name" not in table or "transport" not in table for table in self.extra_upstreams):
            raise HarnessError(f"every extra upstream needs a name and a transport: {self.extra_upstreams}")
        self.logdir = Path(tempfile.mkdtemp(prefix="mcpgate-fleet-"))
        self.redis = Redis(self.logdir)
        self.fixtures: list[Proc] = []
        self.replicas: list[Replica] = []
        self.lb: HAProxy | None = None
        self._lock = threading.Lock()

    # --- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> "Fleet":
        try:
            self.start()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.teardown()

    @property
    def url(self) -> str:
        return self.lb.url if self.lb else ""

    def prefixes(self) -> set[str]:
        """The tool prefixes the readiness probe waits for: every upstream's, extras included."""
        out = {UPSTREAM_NAMES[k] if self.prefix is None else self.prefix for k in self.kinds}
        return out | {t.get("prefix", t["name"]) for t in self.extra_upstreams}

    def start(self) -> None:
        for binary in (GATEWAY_BIN, FIXTURE_BIN):
            if not binary.is_file():
                raise HarnessError(missing_binary(binary))
        self.redis.start()
        config = self.logdir / "mcpgate.toml"
        config.write_text(self._gateway_config())
        self.replicas = [Replica(i, config, self.logdir) for i in range(self.count)]
        self._parallel(lambda r: (r.start(), r.wait_ready(probe_tools=self.prefixes())), self.replicas)
        self.lb = HAProxy(self.logdir, self.replicas)
        self.lb.start()
        self.lb.wait_states({r.name: "UP" for r in self.replicas})

    def _gateway_config(self) -> str:
        def value(v) -> str:
            if isinstance(v, dict):  # a TOML inline table
                return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
            return json.dumps(v)  # a JSON string/list of strings is valid TOML

        server = ['listen = "127.0.0.1:0"', f"hmac_key = {value(HMAC_KEY)}"]
        if self.sse_retry:
            server.append(f"sse_retry = {value(self.sse_retry)}")
        lines = ["[server]", *server,
                 "[admin]", 'listen = "127.0.0.1:0"',
                 "[session]", 'store = "redis"', f"idle_ttl = {value(self.idle_ttl)}",
                 "[redis]", f"url = {value(self.redis.url)}", f"timeout = {value(self.redis_timeout)}"]
        if self.extra_toml:
            lines.append(self.extra_toml.strip())
        for kind in self.kinds:
            name = UPSTREAM_NAMES[kind]
            table: dict = {"name": name, "transport": kind}
            if kind == "stdio":
                table["command"] = str(FIXTURE_BIN)
                table["args"] = ["stdio", "--name", name]
                # One child per replica: they share the key of their MRTR requestState, as the
                # instances of a scaled-out upstream would, so a retry may reach any of them.
                table["env"] = {"MCPGATE_FIXTURE_STATE_KEY": "fleet-fixture-state-key"}
            else:
                fixture = Proc(f"fixture-{name}",
                               [str(FIXTURE_BIN), "http", "--listen", "127.0.0.1:0", "--name", name], self.logdir)
                self.fixtures.append(fixture)
                table["url"] = fixture.wait_listening()
            if self.prefix is not None:
                table["prefix"] = self.prefix
            lines.append("[[upstreams]]")
            lines.extend(f"{k} = {value(v)}" for k, v in table.items())
        for extra in self.extra_upstreams:
            table = dict(extra)
            fixture_args = table.pop("fixture", None)
            if fixture_args is not None:
                name = table["name"]
                fixture = Proc(f"fixture-{name}", [str(FIXTURE_BIN), "http", "--listen", "127.0.0.1:0",
                                                   "--name", name, *fixture_args], self.logdir)
                self.fixtures.append(fixture)
                table["url"] = fixture.wait_listening()
            lines.append("[[upstreams]]")
            lines.extend(f"{k} = {value(v)}" for k, v in table.items())
        return "\n".join(lines) + "\n"

    @staticmethod
    def _parallel(fn, items) -> list:
        items = list(items)
        if not items:
            return []
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(items)) as pool:
            return list(pool.map(fn, items))

    # --- replicas ------------------------------------------------------------------------

    def stop_replica(self, i: int, grace: float = STOP_GRACE) -> float:
        """SIGTERM (SIGKILL after `grace`); returns seconds until it exited."""
        return self.replicas[i].stop(grace)

    def kill_replica(self, i: int) -> None:
        """SIGKILL: no draining, in-flight requests are lost."""
        self.replicas[i].kill()

    def start_replica(self, i: int, timeout: float = READY_TIMEOUT) -> None:
        """Starts a new process in slot i, waits for its /readyz and for haproxy to send it
        traffic. No tools/list probe, so its session counters start at 0."""
        replica = self.replicas[i]
        if replica.running:
            raise HarnessError(f"{replica.name} is still running")
        replica.start()
        replica.wait_ready(timeout)
        with self._lock:
            self.lb.point(replica)
        self.lb.wait_states({replica.name: "UP"}, timeout)

    def restart_replicas(self, grace: float = STOP_GRACE) -> dict:
        """Stops every replica (in parallel), then starts new ones. Returns timings."""
        started = time.monotonic()
        took = self._parallel(lambda i: self.stop_replica(i, grace), range(self.count))
        stopped = time.monotonic()
        self._parallel(self.start_replica, range(self.count))
        return {"stop_s": round(stopped - started, 3), "slowest_exit_s": round(max(took), 3),
                "start_s": round(time.monotonic() - stopped, 3)}

    # --- redis ---------------------------------------------------------------------------

    def stop_redis(self, kill: bool = True) -> None:
        self.redis.stop(kill)

    def start_redis(self) -> None:
        self.redis.start()

    def restart_redis(self) -> None:
        self.redis.stop()
        self.redis.start()

    # --- observation ---------------------------------------------------------------------

    def metrics(self, i: int) -> dict[str, float]:
        return parse_metrics(self.replicas[i].metrics_text())

    def metric(self, i: int, name: str, **labels: str) -> float:
        """Sum of the series of `name` (on replica i) whose labels include `labels`."""
        total = 0.0
        for key, value in self.metrics(i).items():
            base, _, rest = key.partition("{")
            if base != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += value
        return total

    def logs(self, lines: int = 40) -> str:
        procs = [r.proc for r in self.replicas if r.proc] + self.fixtures
        procs += [p for p in (self.redis.proc, self.lb.proc if self.lb else None) if p]
        return "\n".join(p.tail(lines) for p in procs)

    def state(self) -> dict:
        return {
            "url": self.url,
            "redis": {"url": self.redis.url, "running": self.redis.running},
            "replicas": [{"name": r.name, "url": r.url, "admin_url": r.admin_url, "running": r.running,
                          "generation": r.generation} for r in self.replicas],
            "logdir": str(self.logdir),
        }

    def describe(self) -> str:
        rows = [f"load balancer  {self.url}  (haproxy; config {self.lb.config if self.lb else '-'})",
                f"redis          {self.redis.url}  (AOF in {self.redis.dir})"]
        for r in self.replicas:
            rows.append(f"replica {r.name}     {r.url}  admin {r.admin_url}/metrics")
        rows.append(f"logs           {self.logdir}")
        return "\n".join(rows)

    def teardown(self) -> None:
        if self.lb:
            self.lb.stop()
        self._parallel(lambda r: r.stop(grace=1.0), [r for r in self.replicas if r.proc])
        for proc in self.fixtures:
            proc.stop()
        self.fixtures.clear()
        if self.redis.proc:
            self.redis.stop(kill=False)


# --- control endpoint (for `up` and `run`) ------------------------------------------------


class Control:
    """A loopback HTTP endpoint that lets a test in another language (or a human with curl)
    drive the fleet. JSON answers; errors are 500 with {"error": ...}.

        GET  /fleet                       urls, replicas, redis, logdir
        GET  /metrics                     {"r0": {"mcpgate_...": value, ...}, ...}
        POST /replicas/restart            stop every replica, start new ones (timings)
        POST /replicas/<i>/stop|kill|start
        POST /redis/stop|start
    """

    def __init__(self, fleet: Fleet):
        import http.server

        fleet_ = fleet

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _answer(self, status: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _run(self, fn) -> None:
                try:
                    self._answer(200, fn())
                except Exception as err:  # noqa: BLE001 - reported to the caller
                    self._answer(500, {"error": f"{type(err).__name__}: {err}"})

            def do_GET(self):
                if self.path == "/fleet":
                    self._run(fleet_.state)
                elif self.path == "/metrics":
                    self._run(lambda: {r.name: (fleet_.metrics(r.index) if r.running else None)
                                       for r in fleet_.replicas})
                else:
                    self._answer(404, {"error": "unknown path"})

            def do_POST(self):
                parts = self.path.strip("/").split("/")
                actions = {
                    ("replicas", "restart"): fleet_.restart_replicas,
                    ("redis", "stop"): lambda: fleet_.stop_redis() or {},
                    ("redis", "start"): lambda: fleet_.start_redis() or {},
                }
                if tuple(parts) in actions:
                    self._run(actions[tuple(parts)])
                elif len(parts) == 3 and parts[0] == "replicas" and parts[1].isdigit() \
                        and parts[2] in ("stop", "kill", "start"):
                    i = int(parts[1])
                    fn = {"stop": fleet_.stop_replica, "kill": fleet_.kill_replica, "start": fleet_.start_replica}
                    self._run(lambda: {"result": fn[parts[2]](i)})
                else:
                    self._answer(404, {"error": "unknown path"})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- CLI -----------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, text in (("up", "start a fleet and keep it running until Ctrl-C"),
                       ("run", "start a fleet, run a command against it, stop the fleet")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--replicas", type=int, default=3)
        p.add_argument("--upstreams", default="stdio", help="comma-separated: stdio, http (default stdio)")
        p.add_argument("--prefix", default=None, help="tool prefix for every upstream ('' = none; default: its name)")
        p.add_argument("--sse-retry", default=None, help="[server] sse_retry, e.g. 1s")
        p.add_argument("--extra-upstream", action="append", default=[], type=json.loads, metavar="JSON",
                       help='an [[upstreams]] table as JSON, added after --upstreams (repeatable); '
                            '"fixture": [ARGS...] starts an HTTP fixture with ARGS for its url, e.g. '
                            '\'{"name": "modern", "transport": "http", "era": "modern", "fixture": ["--modern-only"]}\'')
        if name == "run":
            p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS... ('{url}' is replaced)")
    args = parser.parse_args(argv)

    command = []
    if args.cmd == "run":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("missing command after --")

    interrupt_on_sigterm()
    kinds = [k for k in args.upstreams.split(",") if k]
    try:
        with Fleet(replicas=args.replicas, upstreams=kinds, prefix=args.prefix, sse_retry=args.sse_retry,
                   extra_upstreams=args.extra_upstream) as fleet:
            control = Control(fleet)
            try:
                if args.cmd == "up":
                    print(fleet.describe(), flush=True)
                    print(f"control        {control.url}  (GET /fleet, POST /replicas/restart, "
                          f"/replicas/<i>/kill, /redis/stop, ...)", flush=True)
                    print(f"\nMCP endpoint: {fleet.url}\n(Ctrl-C stops the fleet)", flush=True)
                    while True:
                        time.sleep(3600)
                names = kinds + [t["name"] for t in fleet.extra_upstreams]
                print(f"[fleet] {fleet.url} ({args.replicas} replicas, upstreams {', '.join(names)}; "
                      f"control {control.url}; logs {fleet.logdir})", flush=True)
                env = dict(os.environ, MCPGATE_URL=fleet.url, MCPGATE_FLEET_CONTROL=control.url)
                code = subprocess.run([a.replace("{url}", fleet.url) for a in command], env=env).returncode
                if code != 0:
                    print(f"[fleet] command exited {code}; process logs:\n{fleet.logs()}", file=sys.stderr,
                          flush=True)
                return code
            finally:
                control.close()
    except HarnessError as err:
        print(f"[fleet] {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\n[fleet] stopped every process", file=sys.stderr)
        return 0 if args.cmd == "up" else 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
