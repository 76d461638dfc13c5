#!/usr/bin/env python3
"""Starts mcpgate in front of fixture upstreams, for the e2e tests and the conformance run.

Used two ways:

* as a library (tests/e2e/python/conftest.py): ``with Stack(upstreams=("stdio", "http")) as s: s.url``
* as a launcher:  ``harness.py run [--upstreams stdio,http] [--prefix P] -- CMD ARGS...``
  starts the stack, runs CMD with MCPGATE_URL=<gateway>/mcp in its environment (and every
  literal ``{url}`` argument replaced by that URL), stops the stack and exits with CMD's code.

Upstream ``stdio`` is the fixture as a child of the gateway (name/prefix ``local``); ``http``
is the fixture serving Streamable HTTP (name/prefix ``remote``). Everything listens on
127.0.0.1 with port 0, every wait is bounded, and every process started here is killed
(by its own process group) at the end. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("MCPGATE_BIN_DIR") or Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "debug").resolve()
GATEWAY_BIN = BIN_DIR / "mcpgate"
FIXTURE_BIN = BIN_DIR / "mcpgate-fixture"


def missing_binary(binary: Path) -> str:
    """What to do when a binary the harness runs is not built."""
    return (
        f"{binary} not found: run `cargo build --bins` first, or point MCPGATE_BIN_DIR at "
        "another build (e.g. MCPGATE_BIN_DIR=target/release after `cargo build --release --bins`)"
    )

UPSTREAM_NAMES = {"stdio": "local", "http": "remote"}
START_TIMEOUT = 20.0  # seconds for a process to print its "listening on" line
READY_TIMEOUT = 30.0  # seconds for the gateway to list tools of every upstream
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL

LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+/mcp)\s*$")


class HarnessError(RuntimeError):
    pass


def interrupt_on_sigterm() -> None:
    """Turns SIGTERM (e.g. from `timeout`) into KeyboardInterrupt, so `with Stack()` blocks
    and pytest fixtures still stop the processes they started (each runs in its own session
    and would not see the signal)."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


class Proc:
    """A child process in its own process group; stdout/stderr go to log files.

    The first stdout line must be ``listening on http://127.0.0.1:PORT/mcp``.
    """

    def __init__(self, name: str, argv: list[str], logdir: Path, env: dict | None = None):
        self.name = name
        self.stdout_log = logdir / f"{name}.stdout.log"
        self.stderr_log = logdir / f"{name}.stderr.log"
        self._stderr = open(self.stderr_log, "wb")
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            start_new_session=True,  # own process group: stop() also reaches its children
            env=None if env is None else {**os.environ, **env},
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        with open(self.stdout_log, "wb") as log:
            for raw in self.popen.stdout:
                log.write(raw)
                log.flush()
                self._lines.put(raw.decode(errors="replace"))
        self._lines.put(None)

    def wait_listening(self, timeout: float = START_TIMEOUT) -> str:
        """Returns the URL from the first stdout line."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise HarnessError(f"{self.name}: no 'listening on' line within {timeout}s\n{self.tail()}")
        if line is None:
            raise HarnessError(f"{self.name}: exited ({self.popen.wait()}) before listening\n{self.tail()}")
        match = LISTENING.search(line)
        if not match:
            raise HarnessError(f"{self.name}: unexpected first line {line!r}\n{self.tail()}")
        return match.group(1)

    def next_line(self, timeout: float = START_TIMEOUT) -> str:
        """The next stdout line (after the one `wait_listening` read), e.g. mcpgate's
        ``admin on http://...``."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise HarnessError(f"{self.name}: no further stdout line within {timeout}s\n{self.tail()}")
        if line is None:
            raise HarnessError(f"{self.name}: exited ({self.popen.wait()})\n{self.tail()}")
        return line.rstrip("\n")

    def tail(self, lines: int = 40) -> str:
        out = []
        for log in (self.stdout_log, self.stderr_log):
            text = log.read_text(errors="replace") if log.exists() else ""
            out.append(f"--- {log.name} (last {lines} lines) ---")
            out.extend(text.splitlines()[-lines:])
        return "\n".join(out)

    def stop(self) -> None:
        if self.popen.poll() is None:
            for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
                try:
                    os.killpg(self.popen.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.popen.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:
            # The leader is gone; make sure nothing it started lingers in its group.
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._stderr.close()


def gateway_config(upstreams: list[dict]) -> str:
    """The gateway's TOML config for the given upstream tables."""

    def value(v) -> str:
        return json.dumps(v)  # a JSON string/list of strings is valid TOML

    lines = [
        "[server]",
        'listen = "127.0.0.1:0"',
        "[admin]",
        'listen = "127.0.0.1:0"',
        "[session]",
        'store = "memory"',
    ]
    for upstream in upstreams:
        lines.append("[[upstreams]]")
        lines.extend(f"{k} = {value(v)}" for k, v in upstream.items())
    return "\n".join(lines) + "\n"


class Stack:
    """The gateway plus its fixture upstreams. ``url`` is the gateway's /mcp endpoint."""

    def __init__(self, upstreams=("stdio", "http"), prefix: str | None = None, env: dict | None = None, gateway_args: tuple = ()):
        """``env`` is added to the gateway's environment, ``gateway_args`` to its command line."""
        unknown = set(upstreams) - set(UPSTREAM_NAMES)
        if unknown or not upstreams:
            raise HarnessError(f"upstreams must be a non-empty subset of {sorted(UPSTREAM_NAMES)}")
        self.kinds = list(upstreams)
        self.prefix = prefix
        self.env = env
        self.gateway_args = list(gateway_args)
        self.procs: list[Proc] = []
        self.url = ""
        self.logdir = Path(tempfile.mkdtemp(prefix="mcpgate-e2e-"))

    def prefixes(self) -> dict[str, str]:
        """upstream name -> tool name prefix as configured ('' = none)."""
        return {UPSTREAM_NAMES[k]: (UPSTREAM_NAMES[k] if self.prefix is None else self.prefix) for k in self.kinds}

    def __enter__(self) -> "Stack":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        for binary in (GATEWAY_BIN, FIXTURE_BIN):
            if not binary.is_file():
                raise HarnessError(missing_binary(binary))
        tables = []
        for kind in self.kinds:
            name = UPSTREAM_NAMES[kind]
            table: dict = {"name": name, "transport": kind}
            if kind == "stdio":
                table["command"] = str(FIXTURE_BIN)
                table["args"] = ["stdio", "--name", name]
            else:
                fixture = self._spawn(f"fixture-{name}", [str(FIXTURE_BIN), "http", "--listen", "127.0.0.1:0", "--name", name])
                table["url"] = fixture.wait_listening()
            if self.prefix is not None:
                table["prefix"] = self.prefix
            tables.append(table)

        config = self.logdir / "mcpgate.toml"
        config.write_text(gateway_config(tables))
        gateway = self._spawn("mcpgate", [str(GATEWAY_BIN), "serve", "--config", str(config), *self.gateway_args], self.env)
        self.url = gateway.wait_listening()
        self._wait_ready(gateway)

    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> Proc:
        proc = Proc(name, argv, self.logdir, env)
        self.procs.append(proc)
        return proc

    def _wait_ready(self, gateway: Proc) -> None:
        """Polls tools/list until a tool of every configured upstream is listed."""
        wanted = set(self.prefixes().values())
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer yet"
        while time.monotonic() < deadline:
            if gateway.popen.poll() is not None:
                raise HarnessError(f"mcpgate exited ({gateway.popen.returncode}) while starting\n{gateway.tail()}")
            try:
                names = list_tool_names(self.url)
                missing = [p for p in wanted if not any(n.startswith(f"{p}__") for n in names)]
                if wanted == {""}:  # no prefix: any tool will do
                    missing = [] if names else ["(any)"]
                if not missing:
                    return
                last = f"tools {names}, no tool with prefix {missing}"
            except (OSError, HarnessError, ValueError) as err:
                last = f"{type(err).__name__}: {err}"
            time.sleep(0.2)
        raise HarnessError(f"mcpgate not ready within {READY_TIMEOUT}s ({last})\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.procs)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def metric(admin: str, line_prefix: str) -> float:
    """The value of the first line of `admin`'s /metrics starting with `line_prefix` (0 when
    there is none)."""
    with urllib.request.urlopen(f"{admin}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(line_prefix):
                return float(line.split()[-1])
    return 0.0


# --- a minimal raw MCP client, only for the readiness probe ---------------------------


def _post(url: str, message: dict, session: str | None, timeout: float = 5.0):
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-11-25",
    }
    if session:
        headers["Mcp-Session-Id"] = session
    request = urllib.request.Request(url, data=json.dumps(message).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read().decode()
        ctype = response.headers.get("Content-Type", "")
        sid = response.headers.get("Mcp-Session-Id")
    if "id" not in message:
        return None, sid
    if ctype.startswith("text/event-stream"):
        for line in body.splitlines():
            if line.startswith("data:") and line[5:].strip():
                data = json.loads(line[5:])
                if data.get("id") == message["id"]:
                    return data, sid
        raise HarnessError(f"no response to {message['method']} in SSE body")
    return json.loads(body), sid


def list_tool_names(url: str) -> list[str]:
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "mcpgate-harness", "version": "0"},
        },
    }
    reply, session = _post(url, init, None)
    if "result" not in reply:
        raise HarnessError(f"initialize failed: {reply}")
    try:
        _post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
        reply, _ = _post(url, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, session)
        if "result" not in reply:
            raise HarnessError(f"tools/list failed: {reply}")
        return [tool["name"] for tool in reply["result"]["tools"]]
    finally:
        if session:
            request = urllib.request.Request(url, headers={"Mcp-Session-Id": session}, method="DELETE")
            try:
                urllib.request.urlopen(request, timeout=5.0).close()
            except (OSError, urllib.error.HTTPError):
                pass


# --- launcher ---------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="start the stack, run a command against it, stop the stack")
    run.add_argument("--upstreams", default="stdio,http", help="comma-separated: stdio, http (default both)")
    run.add_argument("--prefix", default=None, help="prefix for every upstream ('' = none; default: the name)")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS... ('{url}' is replaced)")
    args = parser.parse_args(argv)

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("missing command after --")
    kinds = [k for k in args.upstreams.split(",") if k]

    interrupt_on_sigterm()
    stack = Stack(upstreams=kinds, prefix=args.prefix)
    try:
        with stack:
            print(f"[harness] mcpgate at {stack.url} (upstreams: {', '.join(kinds)}; logs: {stack.logdir})", flush=True)
            env = dict(os.environ, MCPGATE_URL=stack.url)
            code = subprocess.run([a.replace("{url}", stack.url) for a in command], env=env).returncode
            if code != 0:
                print(f"[harness] command exited {code}; process logs:\n{stack.logs()}", file=sys.stderr, flush=True)
            return code
    except HarnessError as err:
        print(f"[harness] {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print(f"[harness] interrupted ({err}); stopped all processes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
