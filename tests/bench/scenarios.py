#!/usr/bin/env python3
"""mcpgate's benchmark: every scenario in one invocation, one table, figures printed (never
asserted), the same results as JSON in target/bench/results.json.

Run it through tests/bench/run.sh (builds the release binaries and installs the tooling when
missing). The load generator is `mcpgate bench` (src/bench/); everything runs on 127.0.0.1 and
shares this machine's cores with the generator.

Scenarios (`tools/call echo`, 8 connections unless said):

  a   the HTTP fixture directly: the baseline every ratio is against
  b   one replica, memory store, HTTP fixture upstream
  c   one replica, Redis store
  d   three replicas behind round-robin haproxy (tests/fleet/fleet.py's config: one request
      per connection, `option httpclose`), Redis
  d'  the same with haproxy keeping connections alive (`option http-keep-alive`)
      a-d, d', h, i, x, x', y: 1, 8 and 64 connections
  e   session creation + deletion rate (`--mode sessions`) for a, x, b, c, d, d'
  f   revival: two replicas on one Redis, sessions created on one, first request on the other
  g   idle scale: BENCH_IDLE sessions (default 100000) on one replica with Redis: replica RSS,
      Redis memory per session, upstream sessions the fixture holds, calls on old sessions,
      and the same calls on as many sessions created just before (what age changes)
  h   one replica, memory store, the fixture as a stdio child
  i   other gateways in front of the same stdio fixture: supergateway (npm, --stateful) and
      mcp-proxy (PyPI, stateful by default), both serving Streamable HTTP
  x   a bare relay built from what mcpgate's request path is made of (actix-web server,
      mcpgate's own hyper-util upstream client per worker; `mcpgate-fixture relay`, no MCP)
      in front of the HTTP fixture: the least a gateway on those crates costs, next to b and y
  x'  the same relay making one Redis round trip (PING, on mcpgate's own Redis connections)
      before each request: the least a request that checks its session in Redis costs, next
      to c
  y   nginx as a plain reverse proxy in front of the HTTP fixture (kept-alive upstream
      connections, no MCP logic): what one HTTP hop costs at the least, next to b
  z   the load generator against nginx returning a canned JSON-RPC result: its own ceiling

CPU: utime+stime (/proc/PID/stat; to the nanosecond from its threads' schedstat, see
cpu_delta) of every process of each role (its descendants included; a gateway's fixture
children count as `upstream`), read in a window inside the measured phase
(from 20 % to 95 % of --duration after the warm-up) and divided by the requests served in that
window (rate x window); idle creation (count-based) reads before and after. The generator does
not say when its measured phase starts (calls mode opens its sessions first): a run whose
start-up and setup took longer than 20 % of the duration is marked `~` (the window may include
setup).

Options: --quick (1 s runs, BENCH_IDLE 2000: the CI smoke run), --only a,b,... (a subset, for
development). Environment: BENCH_SECONDS (default 10), BENCH_IDLE (default 100000),
BENCH_WARMUP (default 1, 0.3 with --quick), BENCH_REDIS_FSYNC (Redis appendfsync, default
everysec), BENCH_OUT (JSON path).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("MCPGATE_BIN_DIR", str(ROOT / "target" / "release"))
sys.path.insert(0, str(ROOT / "tests" / "fleet"))

from fleet import HMAC_KEY, HAProxy, Redis, Replica, free_port  # noqa: E402
from harness import (  # noqa: E402
    FIXTURE_BIN,
    GATEWAY_BIN,
    HarnessError,
    Proc,
    interrupt_on_sigterm,
    list_tool_names,
    missing_binary,
)

# The load generator; by default the gateway binary under test. Set BENCH_GENERATOR to measure
# another build of the gateway (MCPGATE_BIN_DIR) with this build's generator.
GENERATOR_BIN = Path(os.environ.get("BENCH_GENERATOR", str(GATEWAY_BIN)))

TOOLS = ROOT / "target" / "tools"
NODE = TOOLS / "node" / "node_modules" / ".bin" / "node"
SUPERGATEWAY = TOOLS / "node" / "node_modules" / "supergateway" / "dist" / "index.js"
MCP_PROXY = TOOLS / "mcp-proxy-venv" / "bin" / "mcp-proxy"
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 30.0
ARGUMENTS = '{"text":"ping"}'
ROLES = ("gateway", "upstream", "redis", "balancer", "loadgen")
CONNECTIONS = (1, 8, 64)
WINDOW = (0.2, 0.95)  # the CPU window, as fractions of --duration after the warm-up


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- processes ------------------------------------------------------------------------------


def _become_subreaper() -> None:
    """Orphans of our children (supergateway starts its fixture children in process groups of
    their own) are re-parented to us, so the final sweep finds and ends them."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _proc_table() -> dict[int, tuple[int, int, float]]:
    """pid -> (ppid, start time in ticks, CPU seconds utime+stime) for every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read().decode(errors="replace")
        except OSError:
            continue
        rest = data[data.rindex(")") + 2:].split()  # rest[i] is field i + 3 of proc(5)
        out[int(entry)] = (int(rest[1]), int(rest[19]), (int(rest[11]) + int(rest[12])) / CLK_TCK)
    return out


def _argv0(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return ""


def descendants(pid: int, table=None) -> list[int]:
    table = table if table is not None else _proc_table()
    children = defaultdict(list)
    for child, (ppid, _, _) in table.items():
        children[ppid].append(child)
    out, stack = [], list(children[pid])
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children[p])
    return out


def _thread_ns(pid: int) -> dict[int, int]:
    """tid -> nanoseconds on CPU (the first field of /proc/PID/task/TID/schedstat)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                out[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def cpu_snapshot(roles: dict[str, list[int]]) -> dict[tuple, tuple]:
    """{(role, pid, start): (utime+stime seconds, {tid: ns})} over each role's processes and
    their descendants; a descendant that is the fixture counts as `upstream`."""
    table = _proc_table()
    children = defaultdict(list)
    for child, (ppid, _, _) in table.items():
        children[ppid].append(child)
    snap = {}
    for role, roots in roles.items():
        for root in roots:
            stack = [(root, role)]
            while stack:
                pid, r = stack.pop()
                if pid not in table:
                    continue
                if pid != root and Path(_argv0(pid)).name == FIXTURE_BIN.name:
                    r = "upstream"
                snap[(r, pid, table[pid][1])] = (table[pid][2], _thread_ns(pid))
                stack.extend((c, r) for c in children[pid])
    return snap


def cpu_delta(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds per role between two snapshots. utime+stime comes in clock ticks (10 ms),
    rounded down per process: many small processes (supergateway's child per session) would
    count as nothing. So each process counts the nanoseconds of its threads (schedstat), unless
    utime+stime says more by over 2 ticks (threads that ended in between take their time with
    them from schedstat, not from utime+stime)."""
    out: dict[str, float] = defaultdict(float)
    for key, (stat_s, threads) in after.items():
        stat0, threads0 = before.get(key, (0.0, {}))
        by_ticks = stat_s - stat0
        by_threads = sum(ns - threads0.get(tid, 0) for tid, ns in threads.items()) / 1e9
        out[key[0]] += by_ticks if (not threads or by_ticks - by_threads > 2 / CLK_TCK) else by_threads
    return dict(out)


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def wait_port(port: int, proc: Proc, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise HarnessError(f"{proc.name} exited ({proc.popen.returncode})\n{proc.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise HarnessError(f"{proc.name} not listening on {port} within {timeout}s\n{proc.tail()}")


def wait_tools(url: str, proc: Proc, timeout: float = START_TIMEOUT) -> None:
    """Until an MCP client can initialize and list a tool at `url`."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise HarnessError(f"{proc.name} exited ({proc.popen.returncode})\n{proc.tail()}")
        try:
            if "echo" in list_tool_names(url):
                return
            last = "no echo tool"
        except (OSError, HarnessError, ValueError) as err:
            last = f"{type(err).__name__}: {err}"
        time.sleep(0.1)
    raise HarnessError(f"{proc.name} not serving tools at {url} within {timeout}s ({last})\n{proc.tail()}")


def redis_info(redis: Redis, section: str = "memory") -> dict[str, str]:
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5.0) as s:
        s.sendall(f"INFO {section}\r\n".encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n")
        size = int(head[1:])
        while len(body) < size:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    return dict(line.split(":", 1) for line in body[:size].decode().splitlines() if ":" in line)


def http_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def open_upstream_sessions(url: str):
    """The fixture's count of open sessions; `None` when it cannot say in time (a fixture
    holding 100,000 sessions may be slow to)."""
    try:
        return http_json(url, timeout=60.0).get("open")
    except OSError as err:
        log(f"the fixture's session count is unavailable: {err}")
        return None


class QuietHAProxy(HAProxy):
    """fleet.py's haproxy without its per-request log (a log line per request through a pipe
    would cost haproxy and this process CPU); `keep_alive` swaps `option httpclose` (one request
    per connection, as the fleet tests need) for `option http-keep-alive`."""

    def __init__(self, logdir: Path, replicas: list[Replica], keep_alive: bool = False):
        super().__init__(logdir, replicas)
        self.keep_alive = keep_alive
        if keep_alive:
            self.socket = logdir / "haproxy-ka.sock"
            self.config = logdir / "haproxy-ka.cfg"

    def render(self) -> str:
        text = super().render()
        text = text.replace("    log stdout format raw local0 info\n", "").replace("    log global\n", "")
        text = text.replace("    option httplog\n", "")
        if self.keep_alive:
            text = text.replace("    option httpclose\n", "    option http-keep-alive\n")
        return text

    def start(self) -> None:
        if self.keep_alive:
            # Proc's log files are named after the process: keep the two balancers' apart.
            argv_name = "haproxy-ka"
            self.config.write_text(self.render())
            check = subprocess.run(["haproxy", "-c", "-q", "-f", str(self.config)], capture_output=True, text=True)
            if check.returncode != 0:
                raise HarnessError(f"haproxy rejects {self.config}:\n{check.stdout}{check.stderr}")
            self.proc = Proc(argv_name, ["haproxy", "-db", "-f", str(self.config)], self.logdir)
            wait_port(self.port, self.proc)
            return
        super().start()


# --- the stack ------------------------------------------------------------------------------


class Target:
    """Something the load generator is pointed at, and the processes whose CPU it costs."""

    def __init__(self, key: str, label: str, url: str, roles: dict[str, list[int]], args=()):
        self.key = key
        self.label = label
        self.url = url
        self.roles = roles
        self.args = list(args)
        self.replica: Replica | None = None


class Stack:
    def __init__(self, logdir: Path, wanted: set[str], fsync: str):
        self.logdir = logdir
        self.wanted = wanted
        self.fsync = fsync
        self.procs: list[Proc] = []
        self.replicas: list[Replica] = []
        self.balancers: list[HAProxy] = []
        self.redis: Redis | None = None
        self.targets: dict[str, Target] = {}
        self.fixture_url = ""
        self.fixture: Proc | None = None
        self.notes: list[str] = []
        self._index = 0

    def needs(self, *keys: str) -> bool:
        return any(k in self.wanted for k in keys)

    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> Proc:
        proc = Proc(name, [str(a) for a in argv], self.logdir, env)
        self.procs.append(proc)
        return proc

    def _spawn_fixture(self, listen: str) -> Proc:
        return self._spawn("fixture-http", [FIXTURE_BIN, "http", "--listen", listen, "--name", "remote"])

    def restart_fixture(self) -> int:
        """Restarts the HTTP fixture on its port, with no upstream session open; its new pid."""
        self.fixture.stop()
        self.fixture = self._spawn_fixture(self.fixture_url.split("//", 1)[1].split("/", 1)[0])
        self.fixture.wait_listening()
        return self.fixture.popen.pid

    def _config(self, name: str, store: str, upstream: dict) -> Path:
        lines = ["[server]", 'listen = "127.0.0.1:0"', f"hmac_key = {json.dumps(HMAC_KEY)}",
                 "[admin]", 'listen = "127.0.0.1:0"',
                 "[session]", f'store = "{store}"', 'idle_ttl = "1h"']
        if store == "redis":
            lines += ["[redis]", f"url = {json.dumps(self.redis.url)}", 'timeout = "2s"']
        lines.append("[[upstreams]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in {**upstream, "prefix": ""}.items()]
        path = self.logdir / f"{name}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _replica(self, config: Path) -> Replica:
        replica = Replica(self._index, config, self.logdir)
        self._index += 1
        self.replicas.append(replica)
        replica.start()
        replica.wait_ready(probe_tools={""})
        return replica

    def start(self) -> None:
        for binary in (GATEWAY_BIN, FIXTURE_BIN):
            if not binary.is_file():
                raise HarnessError(missing_binary(binary))
        self.fixture = self._spawn_fixture("127.0.0.1:0")
        self.fixture_url = self.fixture.wait_listening()
        fx = [self.fixture.popen.pid]
        http_upstream = {"name": "remote", "transport": "http", "url": self.fixture_url}
        self.targets["a"] = Target("a", "a. direct: HTTP fixture", self.fixture_url, {"upstream": fx})

        if self.needs("c", "d", "d'", "e", "f", "g", "x'"):
            self.redis = Redis(self.logdir)
            self.redis.start()
            self.redis.command("CONFIG", "SET", "appendfsync", self.fsync)
            rd = [self.redis.proc.popen.pid]
        if self.needs("b", "e"):
            r = self._replica(self._config("b-memory", "memory", http_upstream))
            self.targets["b"] = Target("b", "b. 1 replica, memory store", r.url,
                                       {"gateway": [r.proc.popen.pid], "upstream": fx})
        if self.needs("c", "e", "g"):
            r = self._replica(self._config("c-redis", "redis", http_upstream))
            self.targets["c"] = Target("c", "c. 1 replica, Redis", r.url,
                                       {"gateway": [r.proc.popen.pid], "upstream": fx, "redis": rd})
            self.targets["c"].replica = r
        if self.needs("d", "d'", "e", "f"):
            config = self._config("d-fleet", "redis", http_upstream)
            fleet = [self._replica(config) for _ in range(3)]
            pids = [r.proc.popen.pid for r in fleet]
            roles = {"gateway": pids, "upstream": fx, "redis": rd}
            if self.needs("d", "e"):
                lb = QuietHAProxy(self.logdir, fleet)
                self.balancers.append(lb)
                lb.start()
                lb.wait_states({r.name: "UP" for r in fleet})
                self.targets["d"] = Target("d", "d. 3 replicas + haproxy (httpclose), Redis", lb.url,
                                           {**roles, "balancer": [lb.proc.popen.pid]})
            if self.needs("d'", "e"):
                lb = QuietHAProxy(self.logdir, fleet, keep_alive=True)
                self.balancers.append(lb)
                lb.start()
                lb.wait_states({r.name: "UP" for r in fleet})
                self.targets["d'"] = Target("d'", "d'. 3 replicas + haproxy (keep-alive), Redis", lb.url,
                                            {**roles, "balancer": [lb.proc.popen.pid]})
            # f: created on one replica, first request on another, both on one Redis.
            self.targets["f"] = Target("f", "f. revival", fleet[1].url, roles, ["--revive-from", fleet[0].url])
        if self.needs("h", "i"):
            stdio = {"name": "local", "transport": "stdio", "command": str(FIXTURE_BIN), "args": ["stdio", "--name", "local"]}
            r = self._replica(self._config("h-stdio", "memory", stdio))
            self.targets["h"] = Target("h", "h. 1 replica, memory, stdio upstream", r.url,
                                       {"gateway": [r.proc.popen.pid]})
        if self.needs("i"):
            self._start_competitors()
        if self.needs("x", "e"):
            self._start_bare_relay(fx)
        if self.needs("x'"):
            self._start_bare_relay(fx, rd)
        if self.needs("y"):
            self._start_proxy_nginx()
        if self.needs("z"):
            self._start_canned_nginx()

    def _start_competitors(self) -> None:
        fixture_cmd = f"{FIXTURE_BIN} stdio --name local"
        if NODE.is_file() and SUPERGATEWAY.is_file():
            port = free_port()
            # --stateful: one MCP session per client session, each with a stdio child of its
            # own (without it every POST starts a new child and no session id is issued).
            self._start_competitor("i-sg", "i. supergateway --stateful, stdio", port,
                                   [NODE, SUPERGATEWAY, "--stdio", fixture_cmd, "--outputTransport",
                                    "streamableHttp", "--port", port, "--stateful", "--logLevel", "none"])
        else:
            self.notes.append(f"supergateway not installed ({SUPERGATEWAY}): run tests/tools/install.sh")
        if MCP_PROXY.is_file():
            port = free_port()
            self._start_competitor("i-mp", "i. mcp-proxy (stateful), stdio", port,
                                   [MCP_PROXY, "--host", "127.0.0.1", "--port", port, "--log-level", "WARNING",
                                    "--", FIXTURE_BIN, "stdio", "--name", "local"])
        else:
            self.notes.append(f"mcp-proxy not installed ({MCP_PROXY}): run tests/tools/install.sh")

    def _start_bare_relay(self, fixture_pids: list[int], redis_pids: list[int] | None = None) -> None:
        """x, or with `redis_pids` x': the relay making one Redis round trip before each request."""
        argv = [FIXTURE_BIN, "relay", "--listen", "127.0.0.1:0", "--upstream", self.fixture_url]
        if redis_pids is None:
            key, name, label, roles = "x", "relay", "x. bare actix-web + hyper-util relay, HTTP fixture", {}
        else:
            argv += ["--redis", self.redis.url]
            key, name, label = "x'", "relay-redis", "x'. the same relay + one Redis round trip (PING) a request"
            roles = {"redis": redis_pids}
        proc = self._spawn(name, argv)
        url = proc.wait_listening()
        self.targets[key] = Target(key, label, url,
                                   {"gateway": [proc.popen.pid], "upstream": fixture_pids, **roles})

    def _start_competitor(self, key: str, label: str, port: int, argv: list) -> None:
        """Another gateway serving Streamable HTTP at 127.0.0.1:`port`/mcp, once it lists tools."""
        proc = self._spawn(key, argv)
        url = f"http://127.0.0.1:{port}/mcp"
        wait_port(port, proc)
        wait_tools(url, proc)
        self.targets[key] = Target(key, label, url, {"gateway": [proc.popen.pid]})

    def _start_nginx(self, key: str, label: str, location: str, upstream: str = "") -> None:
        """nginx serving `location` at 127.0.0.1:<port>/, one worker; `upstream` (the fixture, whose
        CPU then counts as the upstream's) goes in `http`."""
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if nginx is None:
            self.notes.append(f"nginx not installed: scenario {key} skipped (tests/tools/install.sh installs it)")
            return
        prefix = self.logdir / f"nginx-{key}"
        (prefix / "logs").mkdir(parents=True, exist_ok=True)
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(f"""\
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    {upstream}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            {location}
        }}
    }}
}}
""")
        proc = self._spawn(f"nginx-{key}", [nginx, "-p", prefix, "-c", conf, "-e", "stderr"])
        wait_port(port, proc)
        roles = {"gateway": [proc.popen.pid]}
        if upstream:
            roles["upstream"] = [self.fixture.popen.pid]
        self.targets[key] = Target(key, label, f"http://127.0.0.1:{port}/mcp", roles)

    def _start_canned_nginx(self) -> None:
        # One canned answer for everything: a tools/call result that is also an initialize
        # result; the generator sends ids in order, the body always says id 1.
        result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                  "serverInfo": {"name": "nginx", "version": "0"},
                  "content": [{"type": "text", "text": "ping"}], "isError": False}
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": result}, separators=(",", ":"))
        location = ("default_type application/json;\n"
                    "            add_header Mcp-Session-Id bench-session always;\n"
                    f"            return 200 '{body}';")
        self._start_nginx("z", "z. nginx canned reply (generator ceiling)", location)

    def _start_proxy_nginx(self) -> None:
        # A bare HTTP hop: nginx relays every request to the fixture over kept-alive
        # connections, with no MCP knowledge; what any reverse proxy costs at the least.
        address = self.fixture_url.split("://", 1)[1].split("/", 1)[0]
        upstream = f"upstream fixture {{ server {address}; keepalive 64; }}"
        location = ("proxy_pass http://fixture;\n"
                    "            proxy_http_version 1.1;\n"
                    "            proxy_set_header Connection \"\";\n"
                    "            proxy_set_header Host $http_host;\n"
                    "            proxy_buffering off;")
        self._start_nginx("y", "y. nginx reverse proxy, HTTP fixture", location, upstream)

    def stop(self) -> None:
        """Stops everything (replicas in parallel); each step goes on whatever the last did."""
        def quietly(fn):
            try:
                fn()
            except Exception:  # noqa: BLE001 - teardown goes on
                pass

        for lb in self.balancers:
            quietly(lb.stop)
        threads = [threading.Thread(target=quietly, args=(lambda r=r: r.stop(grace=2.0),))
                   for r in self.replicas if r.proc]
        for thread in threads:
            thread.start()
        for proc in reversed(self.procs):
            quietly(proc.stop)
        for thread in threads:
            thread.join(timeout=15)
        if self.redis is not None and self.redis.proc is not None:
            quietly(lambda: self.redis.stop(kill=False))


def sweep_orphans() -> None:
    """SIGKILL whatever is still our child (orphaned grandchildren re-parented to us), with its
    process group."""
    me = os.getpid()
    for _ in range(5):
        left = [pid for pid, (ppid, _, _) in _proc_table().items() if ppid == me]
        if not left:
            return
        for pid in left:
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for pid in left:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        time.sleep(0.05)


# --- running the load generator -------------------------------------------------------------


class Runner:
    def __init__(self, logdir: Path, seconds: float, warmup: float):
        self.logdir = logdir
        self.seconds = seconds
        self.warmup = warmup
        self.count = 0
        self.current: subprocess.Popen | None = None

    def run(self, target: Target, mode: str = "calls", connections: int = 8, extra=(), timed: bool = True,
            limit: float | None = None) -> dict:
        """One `mcpgate bench` run; returns its JSON plus `cpu_s` (per role) and `cpu_window_s`."""
        self.count += 1
        argv = [str(GENERATOR_BIN), "bench", "--url", target.url, "--mode", mode, "--connections", str(connections),
                "--json", "--timeout", "30s", *target.args, *extra]
        if mode in ("calls", "sessions", "revival"):
            argv += ["--tool", "echo", "--arguments", ARGUMENTS]
        if timed:
            argv += ["--duration", f"{self.seconds:g}s", "--warmup", f"{int(self.warmup * 1000)}ms"]
        stderr_path = self.logdir / f"gen-{self.count:02d}-{target.key}-{mode}-{connections}.stderr.log"
        limit = limit if limit is not None else self.warmup + self.seconds + 90
        roles = {k: v for k, v in target.roles.items()}
        usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        before = cpu_snapshot(roles)
        started = time.monotonic()
        with open(stderr_path, "wb") as stderr:
            self.current = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                                            start_new_session=True)
        proc = self.current
        roles["loadgen"] = [proc.pid]
        window = None
        if timed:
            # The generator opens its sessions (calls mode) before its warm-up clock starts:
            # the window starts late enough for a setup of up to 20 % of the duration.
            a_at = started + self.warmup + WINDOW[0] * self.seconds
            b_at = started + self.warmup + WINDOW[1] * self.seconds
            self._sleep_until(a_at, proc)
            a, ta = cpu_snapshot(roles), time.monotonic()
            self._sleep_until(b_at, proc)
            b, tb = cpu_snapshot(roles), time.monotonic()
            if proc.poll() is None:  # still measuring all along: the window is valid
                window = (a, b, tb - ta)
        try:
            out, _ = proc.communicate(timeout=max(1.0, limit - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            self.current = None
            return {"error": f"load generator still running after {limit:.0f}s, killed", "argv": argv}
        self.current = None
        elapsed = time.monotonic() - started
        stderr_text = stderr_path.read_text(errors="replace")
        try:
            result = json.loads(out)
        except ValueError:
            return {"error": f"load generator exited {proc.returncode} without JSON: {stderr_text[-600:]}",
                    "argv": argv}
        result["argv"] = argv
        result["wall_s"] = round(elapsed, 3)
        if window is not None:
            a, b, span = window
            result["cpu_s"] = cpu_delta(a, b)
            result["cpu_window_s"] = span
            # Time outside warm-up + measured window: start, session setup, the end. Past
            # WINDOW[0] x duration the window may have seen session setup.
            outside = elapsed - self.warmup - (result.get("duration_s") or self.seconds)
            result["cpu_window_outside_s"] = round(outside, 3)
            result["cpu_window_suspect"] = outside > WINDOW[0] * self.seconds
        else:
            after = cpu_snapshot({k: v for k, v in roles.items() if k != "loadgen"})
            usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = cpu_delta(before, after)
            cpu["loadgen"] = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
            result["cpu_s"] = cpu
            result["cpu_window_s"] = None
        return result

    @staticmethod
    def _sleep_until(when: float, proc: subprocess.Popen) -> None:
        while time.monotonic() < when and proc.poll() is None:
            time.sleep(min(0.05, max(0.0, when - time.monotonic())))

    def kill(self) -> None:
        if self.current is not None and self.current.poll() is None:
            try:
                os.killpg(self.current.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.current.wait()


# --- figures ------------------------------------------------------------------------------


def per_op_us(result: dict, rate_key: str, ops: float | None = None) -> dict[str, float]:
    """CPU microseconds per operation for each role: in the window, per `rate_key` x window
    (revival: sessions_per_s, or half the request rate: two requests a session); otherwise
    per `ops`."""
    cpu = result.get("cpu_s") or {}
    if result.get("cpu_window_s"):
        rate = result.get(rate_key)
        if rate is None and rate_key == "sessions_per_s" and result.get("mode") == "revival":
            rate = (result.get("throughput_per_s") or 0) / 2
        count = (rate or 0) * result["cpu_window_s"]
    else:
        count = ops or 0
    if not count:
        return {}
    return {role: seconds / count * 1e6 for role, seconds in cpu.items()}


def lat(result: dict, key: str = "latency_ms") -> dict:
    return result.get(key) or (result.get("phases") or {}).get(key) or {}


def make_row(scenario: str, label: str, result: dict, connections: int, unit: str = "req",
             rate_key: str = "throughput_per_s", latency_key: str = "latency_ms", ops: float | None = None,
             rate: float | None = None) -> dict:
    latency = lat(result, latency_key)
    return {
        "scenario": scenario,
        "label": label,
        "connections": connections,
        "unit": unit,
        "rate_per_s": rate if rate is not None else result.get(rate_key),
        "p50_ms": latency.get("p50"),
        "p99_ms": latency.get("p99"),
        "ok": result.get("ok"),
        "errors": sum((result.get("errors") or {}).values()) if isinstance(result.get("errors"), dict) else result.get("errors"),
        "error": result.get("error"),
        "cpu_us_per_op": per_op_us(result, rate_key, ops),
        "raw": result,
    }


def add_ratios(rows: list[dict]) -> None:
    """ratio to direct, added p50/p99 and gateway/fixture CPU, against `a` (calls) or `e-a`
    (sessions) at the same connection count; gateway/relay CPU against `x` (`e-x`) there."""
    base = {}
    relay = {}
    for row in rows:
        if row["scenario"] in ("a", "e-a"):
            base[(row["unit"], row["connections"])] = row
        if row["scenario"] in ("x", "e-x"):
            relay[(row["unit"], row["connections"])] = row["cpu_us_per_op"].get("gateway")
    for row in rows:
        gw = row["cpu_us_per_op"].get("gateway")
        bare = relay.get((row["unit"], row["connections"]))
        compared = gw is not None and bare and row["scenario"] not in ("x", "e-x", "z")
        row["gateway_cpu_vs_relay"] = gw / bare if compared else None
        ref = base.get((row["unit"], row["connections"])) or base.get((row["unit"], 8))
        row["ratio_to_direct"] = row["added_p50_ms"] = row["added_p99_ms"] = row["gateway_cpu_vs_fixture"] = None
        if ref is None or ref is row:
            continue
        if row["rate_per_s"] and ref["rate_per_s"]:
            row["ratio_to_direct"] = row["rate_per_s"] / ref["rate_per_s"]
        if row["p50_ms"] is not None and ref["p50_ms"] is not None:
            row["added_p50_ms"] = row["p50_ms"] - ref["p50_ms"]
        if row["p99_ms"] is not None and ref["p99_ms"] is not None:
            row["added_p99_ms"] = row["p99_ms"] - ref["p99_ms"]
        fx = ref["cpu_us_per_op"].get("upstream")
        if gw is not None and fx and row["scenario"] != "z":
            row["gateway_cpu_vs_fixture"] = gw / fx


def fmt(value, spec: str = ".0f", dash: str = "-") -> str:
    if value is None:
        return dash
    return format(value, spec)


def render_table(rows: list[dict]) -> str:
    head = ["scenario", "conn", "rate/s", "x direct", "p50 ms", "p99 ms", "+p50", "+p99",
            "gw µs", "up µs", "redis µs", "lb µs", "gen µs", "gw/fixture", "gw/relay", "errors"]
    lines = []
    for row in rows:
        cpu = row["cpu_us_per_op"]
        mark = "~" if (row["raw"] or {}).get("cpu_window_suspect") else ""
        label = row["label"] + ("" if row["unit"] == "req" else f" [per {row['unit']}]")
        errors = row["error"] and "FAILED" or str(row["errors"] or 0)
        lines.append([
            label, str(row["connections"]), fmt(row["rate_per_s"]), fmt(row["ratio_to_direct"], ".2f"),
            fmt(row["p50_ms"], ".2f"), fmt(row["p99_ms"], ".2f"), fmt(row["added_p50_ms"], "+.2f"),
            fmt(row["added_p99_ms"], "+.2f"), *(mark + fmt(cpu.get(role)) if role in cpu else "-" for role in ROLES),
            fmt(row["gateway_cpu_vs_fixture"], ".1f"), fmt(row["gateway_cpu_vs_relay"], ".1f"), errors,
        ])
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    def line(cells):
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells))
    out = [line(head), line(["-" * w for w in widths])]
    out += [line(l) for l in lines]
    return "\n".join(out)


# --- the scenarios ------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 s runs, BENCH_IDLE 2000 (CI smoke run)")
    parser.add_argument("--only", default="", help="comma-separated subset: a,b,c,d,d',e,f,g,h,i,x,y,z")
    args = parser.parse_args(argv)

    everything = ["a", "b", "c", "d", "d'", "e", "f", "g", "h", "i", "x", "x'", "y", "z"]
    wanted = set(x.strip() for x in args.only.split(",") if x.strip()) or set(everything)
    unknown = wanted - set(everything)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {','.join(everything)}")
    wanted.add("a")  # the baseline of every ratio

    seconds = 1.0 if args.quick else float(os.environ.get("BENCH_SECONDS", "10"))
    warmup = float(os.environ.get("BENCH_WARMUP", "0.3" if args.quick else "1"))
    idle_n = 2000 if args.quick else int(os.environ.get("BENCH_IDLE", "100000"))
    fsync = os.environ.get("BENCH_REDIS_FSYNC", "everysec")
    out_path = Path(os.environ.get("BENCH_OUT") or ROOT / "target" / "bench" / "results.json")

    interrupt_on_sigterm()
    signal.signal(signal.SIGHUP, signal.getsignal(signal.SIGTERM))
    _become_subreaper()
    logdir = Path(tempfile.mkdtemp(prefix="mcpgate-bench-"))
    log(f"logs in {logdir}; {seconds:g} s runs after {warmup:g} s warm-up; idle sessions {idle_n}; "
        f"load average {os.getloadavg()[0]:.2f}")
    began = time.monotonic()
    stack = Stack(logdir, wanted, fsync)
    runner = Runner(logdir, seconds, warmup)
    rows: list[dict] = []
    extra: dict = {}
    try:
        stack.start()
        log(f"stack up in {time.monotonic() - began:.1f} s: {', '.join(stack.targets)}")
        t = stack.targets

        # a-d, d', h, i, x, y: calls at 1, 8 and 64 connections, interleaved (every target at one
        # connection count before the next count), so drift over the run spreads evenly.
        call_keys = [k for k in ("a", "x", "x'", "y", "b", "c", "d", "d'", "h", "i-sg", "i-mp")
                     if k in t and (k.split("-")[0] in wanted)]
        for connections in CONNECTIONS:
            for key in call_keys:
                log(f"{t[key].label}: calls, {connections} connection(s)")
                result = runner.run(t[key], "calls", connections)
                rows.append(make_row(key, t[key].label, result, connections))
        if "z" in t:
            for connections in (8, 64):
                log(f"{t['z'].label}: calls, {connections} connections")
                rows.append(make_row("z", t["z"].label, runner.run(t["z"], "calls", connections), connections))

        # e: session creation + deletion.
        if "e" in wanted:
            for key in ("a", "x", "b", "c", "d", "d'"):
                if key not in t:
                    continue
                label = f"e. sessions: {t[key].label.split('. ', 1)[1]}"
                log(f"{label}: 8 connections")
                result = runner.run(t[key], "sessions", 8)
                rows.append(make_row(f"e-{key}", label, result, 8, unit="session", rate_key="sessions_per_s"))

        # f: revival.
        if "f" in wanted and "f" in t:
            log("f. revival: 8 connections")
            result = runner.run(t["f"], "revival", 8)
            rate = result.get("sessions_per_s") or (result.get("throughput_per_s") or 0) / 2 or None
            rows.append(make_row("f", "f. revival: first request on the other replica", result, 8,
                                 unit="revived session", rate_key="sessions_per_s", latency_key="first", rate=rate))
            rows.append(make_row("f", "f. revival: steady request after it", result, 8,
                                 unit="revived session", rate_key="sessions_per_s", latency_key="steady", rate=rate))
            rows[-1]["cpu_us_per_op"] = {}  # one CPU figure for both rows (on the first)

        # g: idle scale, last (it leaves many sessions behind).
        if "g" in wanted and "c" in t:
            extra["idle"] = idle_scale(stack, runner, rows, idle_n)
    except KeyboardInterrupt as err:
        log(f"interrupted ({err}); stopping every process")
        code = 130
    except (HarnessError, OSError) as err:
        log(f"failed: {err}")
        code = 1
    else:
        code = 0
    finally:
        # A second Ctrl-C (or a SIGTERM) must not cut the teardown short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        runner.kill()
        stack.stop()
        sweep_orphans()
        shutil.rmtree(logdir / "redis-data", ignore_errors=True)  # the AOF of every session: large
    if code == 130:
        return code
    if code and rows:
        log("partial results follow")
    finish(rows, extra, stack, out_path, seconds, warmup, idle_n, fsync, began, args.quick)
    return code


def idle_scale(stack: Stack, runner: Runner, rows: list[dict], n: int) -> dict:
    target = stack.targets["c"]
    replica: Replica = target.replica
    pid = replica.proc.popen.pid
    fixture_sessions = stack.fixture_url.rsplit("/mcp", 1)[0] + "/sessions"
    ids = stack.logdir / "idle-ids.txt"
    info = {"sessions": n, "replica_pid": pid}
    info["replica_rss_kib_before"] = rss_kib(pid)
    info["redis_used_memory_before"] = int(redis_info(stack.redis)["used_memory"])
    info["redis_keys_before"] = int(stack.redis.command("DBSIZE").lstrip(":") or 0)
    info["fixture_open_sessions_before"] = open_upstream_sessions(fixture_sessions)
    log(f"g. idle: creating {n} sessions on one replica with Redis")
    bound = max(60, n // 250)  # seconds: idle mode stops there even if not all are created
    created = runner.run(target, "idle", 64, timed=False, limit=bound + 120,
                         extra=["--sessions", str(n), "--ids-out", str(ids), "--duration", f"{bound}s"])
    info["create"] = created
    if created.get("error"):
        info["error"] = created["error"]
        return info
    time.sleep(0.5)
    info["replica_rss_kib_after"] = rss_kib(pid)
    info["redis_used_memory_after"] = int(redis_info(stack.redis)["used_memory"])
    info["redis_keys_after"] = int(stack.redis.command("DBSIZE").lstrip(":") or 0)
    info["fixture_open_sessions_after_create"] = open_upstream_sessions(fixture_sessions)
    info["sessions_per_s"] = created.get("sessions_per_s")
    made = created.get("sessions") or n
    info["redis_bytes_per_session"] = (info["redis_used_memory_after"] - info["redis_used_memory_before"]) / made
    info["replica_rss_bytes_per_session"] = (info["replica_rss_kib_after"] - info["replica_rss_kib_before"]) * 1024 / made
    info["create_cpu_us_per_session"] = per_op_us(created, "sessions_per_s", made)
    # Requests on old sessions: the generator picks a random id of the file per request.
    lines = [l for l in ids.read_text().splitlines() if l.strip()] if ids.exists() else []
    label = f"g. calls on old sessions ({len(lines)} idle), 1 replica, Redis"
    log(label)
    result = runner.run(target, "calls", 8, extra=["--ids-in", str(ids)])
    rows.append(make_row("g", label, result, 8))
    info["fixture_open_sessions_after_calls"] = open_upstream_sessions(fixture_sessions)
    info["replica_rss_kib_after_calls"] = rss_kib(pid)
    fresh_calls(stack, runner, target, stack.logdir / "fresh-ids.txt", n, bound, rows)
    try:
        text = replica.metrics_text()
        info["replica_session_metrics"] = {l.split(" ")[0]: l.split(" ")[-1] for l in text.splitlines()
                                           if not l.startswith("#") and "session" in l and "bucket" not in l}
    except (OSError, HarnessError):
        pass
    return info


def restart(stack: Stack, target: Target) -> None:
    """Restarts the target's replica (a new process on a new port), and the fixture while the
    replica is down. The replica drains first, so it frees the leases of the upstream streams
    it held and ends them; the fixture then starts with no upstream session open."""
    replica = target.replica
    replica.stop()
    target.roles["upstream"] = [stack.restart_fixture()]
    replica.start()
    replica.wait_ready(probe_tools={""})
    target.url = replica.url
    target.roles["gateway"] = [replica.proc.popen.pid]


def fresh_calls(stack: Stack, runner: Runner, target: Target, ids: Path, n: int, bound: int,
                rows: list[dict]) -> None:
    """The same calls as on the old sessions, on as many sessions created just before: what a
    session's age changes in a request's cost (in both runs nearly every call is the first of
    its session, which opens its upstream session). The replica is restarted first: the old
    sessions' run filled its `server.max_held_streams`, and with the bound reached the calls
    on fresh sessions would hold no stream, which made them cheaper than the first ones. So is
    the fixture, while the replica is down: it would otherwise still hold the upstream
    sessions the old sessions' calls opened (tens of thousands), a difference between the two
    runs that is not the sessions' age."""
    log("g. fresh: restarting the replica and the fixture, so that neither holds what the old sessions' run left")
    restart(stack, target)
    log(f"g. fresh: creating {n} more sessions, then the same calls on them")
    created = runner.run(target, "idle", 64, timed=False, limit=bound + 120,
                         extra=["--sessions", str(n), "--ids-out", str(ids), "--duration", f"{bound}s"])
    if created.get("error"):
        return
    made = len([l for l in ids.read_text().splitlines() if l.strip()]) if ids.exists() else 0
    result = runner.run(target, "calls", 8, extra=["--ids-in", str(ids)])
    rows.append(make_row("g-fresh", f"g. the same calls on fresh sessions ({made} just created)", result, 8))


def finish(rows, extra, stack: Stack, out_path: Path, seconds, warmup, idle_n, fsync, began, quick) -> None:
    order = ["a", "x", "x'", "y", "b", "c", "d", "d'", "h", "i-sg", "i-mp", "z", "e-a", "e-x", "e-b", "e-c", "e-d", "e-d'", "f", "g", "g-fresh"]
    rows.sort(key=lambda r: (order.index(r["scenario"]) if r["scenario"] in order else 99, r["connections"]))
    add_ratios(rows)
    took = time.monotonic() - began
    table = render_table(rows)
    notes = list(stack.notes)
    idle = extra.get("idle")
    print()
    print(table)
    print()
    if idle and not idle.get("error"):
        def delta(a, b):
            return f"{b - a:+d}" if isinstance(a, int) and isinstance(b, int) else "?"

        def mib(kib):
            return f"{kib / 1024:.0f} MiB" if kib is not None else "-"
        print(f"g. idle scale, {idle['sessions']} sessions on one replica with Redis: created at "
              f"{fmt(idle.get('sessions_per_s'))}/s; replica RSS {mib(idle['replica_rss_kib_before'])} -> "
              f"{mib(idle['replica_rss_kib_after'])} ({idle['replica_rss_bytes_per_session']:.0f} B/session), "
              f"{mib(idle.get('replica_rss_kib_after_calls'))} after the calls on old sessions; Redis "
              f"{idle['redis_bytes_per_session']:.0f} B/session (INFO used_memory delta / N), keys "
              f"{idle['redis_keys_before']} -> {idle['redis_keys_after']}; upstream sessions the fixture holds "
              f"open (its GET /sessions): {idle['fixture_open_sessions_before']} before, "
              f"{idle['fixture_open_sessions_after_create']} after creating "
              f"({delta(idle['fixture_open_sessions_before'], idle['fixture_open_sessions_after_create'])}), "
              f"{idle['fixture_open_sessions_after_calls']} after the calls on old sessions "
              f"({delta(idle['fixture_open_sessions_after_create'], idle['fixture_open_sessions_after_calls'])})")
    elif idle:
        print(f"g. idle scale failed: {idle['error']}")
    print("rate: req/s (or sessions/s where marked); x direct: rate / `a` at the same connection count "
          "(sessions: / `e. sessions: direct`); +p50/+p99: ms over `a`'s at the same count; CPU: µs of "
          "utime+stime per request (or session) per process role; gw/fixture: gateway CPU / the fixture's "
          "own CPU per direct request; gw/relay: gateway CPU / the bare relay's (`x`) at the same count, "
          "what the gateway costs beyond the least a relay on its crates costs; h and i have a stdio "
          "fixture, still compared with the HTTP `a`.")
    for note in notes:
        print(f"note: {note}")
    load = os.getloadavg()
    print(f"{len(rows)} rows in {took:.0f} s; {seconds:g} s runs, {warmup:g} s warm-up; load average at the end "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs (other work on the machine skews "
          f"every figure); JSON: {out_path}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({
        "settings": {"seconds": seconds, "warmup_s": warmup, "idle_sessions": idle_n, "quick": quick,
                     "redis_appendfsync": fsync, "tool": "echo", "arguments": json.loads(ARGUMENTS),
                     "gateway_bin": str(GATEWAY_BIN), "fixture_bin": str(FIXTURE_BIN)},
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
                    "loadavg_end": os.getloadavg()},
        "took_s": round(took, 1),
        "rows": rows,
        "idle": idle,
        "notes": notes,
        "table": table,
    }, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
