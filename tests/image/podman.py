"""Run containers of the mcpgate image the way the Helm chart runs its pods, with podman.

Used by tests/image/test_image.py; reusable by other tests (e.g. several replicas in a rolling
update). Only the standard library; every call is bounded by a timeout.

    import podman
    cid = podman.run_container("mcpgate-r1", config_path, http_port, admin_port,
                               env={"MCPGATE_SESSION__IDLE_TTL": "1h"},
                               secrets_dir=secrets)      # optional: /etc/mcpgate/secrets
    podman.wait_ready(admin_port)                        # GET /readyz == 200, bounded
    ...
    seconds, code = podman.stop_container("mcpgate-r1", timeout=40)   # SIGTERM, then SIGKILL
    text = podman.logs("mcpgate-r1")
    podman.remove_container("mcpgate-r1")                # also in teardown: never raises

What `run_container` applies, as the chart's pod spec does: user 10001:10001, a read-only root
filesystem with only a tmpfs at /tmp (64 MiB, the chart's emptyDir), every capability dropped,
no-new-privileges, the default seccomp profile, the config file mounted read-only at
/etc/mcpgate/config/mcpgate.toml, the image's entrypoint with the chart's args
(`serve --config /etc/mcpgate/config/mcpgate.toml --json-logs`). Every container uses the host's
network (`--network host`): its listeners are host ports, chosen with the environment overrides
MCPGATE_SERVER__LISTEN / MCPGATE_ADMIN__LISTEN=127.0.0.1:<port> (see `free_port`).

Storage is podman's vfs driver and containers.conf is tests/image/containers.conf (through
CONTAINERS_CONF), the same as tests/image/build.sh, which builds the image (`IMAGE`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CONTAINERS_CONF = HERE / "containers.conf"
IMAGE = os.environ.get("MCPGATE_IMAGE", "localhost/mcpgate:test")
PODMAN = ["podman", "--storage-driver", "vfs", "--runtime", "runc"]

CONFIG_DIR = "/etc/mcpgate/config"
CONFIG_PATH = f"{CONFIG_DIR}/mcpgate.toml"
SECRETS_PATH = "/etc/mcpgate/secrets"
CHART_ARGS = ("serve", "--config", CONFIG_PATH, "--json-logs")
UID = 10001
GID = 10001
TMP_SIZE = "64m"  # the chart's tmpSizeLimit (64Mi)

COMMAND_TIMEOUT = 120.0  # seconds for one podman command (vfs copies the image on create)


class PodmanError(RuntimeError):
    pass


def podman(*args: str, timeout: float = COMMAND_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `podman --storage-driver vfs --runtime runc ARGS...` with this folder's
    containers.conf; returns the completed process (text output). Raises PodmanError when it
    fails (with check) or takes longer than `timeout`."""
    env = dict(os.environ, CONTAINERS_CONF=str(CONTAINERS_CONF))
    try:
        proc = subprocess.run(
            [*PODMAN, *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as err:
        raise PodmanError(f"podman {' '.join(args)}: no answer within {timeout}s") from err
    if check and proc.returncode != 0:
        raise PodmanError(f"podman {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def image_exists(image: str = IMAGE) -> bool:
    return podman("image", "exists", image, check=False).returncode == 0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_container(
    name: str,
    config_path: str | os.PathLike,
    http_port: int,
    admin_port: int,
    env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] | list[str] = (),
    *,
    image: str = IMAGE,
    secrets_dir: str | os.PathLike | None = None,
    args: tuple[str, ...] | list[str] = CHART_ARGS,
    host: str = "127.0.0.1",
) -> str:
    """Starts a detached container `name` (an old container of that name is removed first) and
    returns its id. The gateway listens on host:http_port (/mcp) and host:admin_port (/metrics,
    /healthz, /readyz). `env` adds environment variables; `extra_args` go to `podman run` before
    the image (e.g. ("--memory", "512m") or another "-v"); `secrets_dir` is mounted read-only at
    /etc/mcpgate/secrets (its files must be readable by uid 10001); `args` replace the chart's
    arguments to the entrypoint. It does not wait for readiness (see `wait_ready`)."""
    remove_container(name)
    environment = {
        "MCPGATE_SERVER__LISTEN": f"{host}:{http_port}",
        "MCPGATE_ADMIN__LISTEN": f"{host}:{admin_port}",
        **(env or {}),
    }
    argv = [
        "run", "--detach", "--name", name,
        "--network", "host",
        "--user", f"{UID}:{GID}",
        "--read-only", "--read-only-tmpfs=false",
        "--tmpfs", f"/tmp:rw,nosuid,nodev,size={TMP_SIZE},mode=1777",
        "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "--pull", "never",
        "--volume", f"{Path(config_path).resolve()}:{CONFIG_PATH}:ro",
    ]
    if secrets_dir is not None:
        argv += ["--volume", f"{Path(secrets_dir).resolve()}:{SECRETS_PATH}:ro"]
    for key, value in environment.items():
        argv += ["--env", f"{key}={value}"]
    argv += [*extra_args, image, *args]
    return podman(*argv).stdout.strip()


def inspect(name: str) -> dict:
    """`podman inspect` of the container, as a dict (State, Config, HostConfig, ...)."""
    return json.loads(podman("inspect", "--type", "container", name).stdout)[0]


def is_running(name: str) -> bool:
    proc = podman("inspect", "--type", "container", "--format", "{{.State.Running}}", name, check=False)
    return proc.returncode == 0 and proc.stdout.strip() == "true"


def exit_code(name: str) -> int | None:
    """The exit code of a stopped container, None while it runs."""
    state = inspect(name)["State"]
    return None if state.get("Running") else int(state.get("ExitCode", -1))


def kill_container(name: str, signal: str = "SIGTERM") -> None:
    """Sends `signal` to the container's main process (mcpgate) without waiting."""
    podman("kill", "--signal", signal, name)


def wait_container(name: str, timeout: float = 60.0) -> int:
    """Waits until the container has stopped; returns its exit code. Raises PodmanError after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = exit_code(name)
        if code is not None:
            return code
        time.sleep(0.1)
    raise PodmanError(f"container {name} still running after {timeout}s")


def stop_container(name: str, timeout: int = 40) -> tuple[float, int]:
    """`podman stop -t timeout`: the image's stop signal (SIGTERM, which makes mcpgate drain),
    SIGKILL after `timeout` seconds, as the kubelet does with terminationGracePeriodSeconds.
    Returns (seconds it took, exit code); 137 means it had to be killed."""
    start = time.monotonic()
    podman("stop", "--time", str(timeout), name, timeout=timeout + COMMAND_TIMEOUT)
    return time.monotonic() - start, wait_container(name, timeout=10)


def logs(name: str, tail: int | None = None) -> str:
    """What the container wrote so far, stdout and stderr interleaved (JSON lines with
    --json-logs). Empty when the container does not exist."""
    argv = ["logs"] + (["--tail", str(tail)] if tail else []) + [name]
    proc = podman(*argv, check=False)
    return proc.stdout + proc.stderr


def remove_container(name: str) -> None:
    """Removes the container (killing it when it runs). Never raises: safe in teardown."""
    try:
        podman("rm", "--force", "--time", "0", "--ignore", name, check=False)
    except PodmanError:
        pass


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (OSError, ValueError):
        return 0, ""


def wait_ready(admin_port: int, name: str | None = None, timeout: float = 60.0, path: str = "/readyz", host: str = "127.0.0.1") -> None:
    """Polls http://host:admin_port/readyz until it answers 200. With `name`, fails at once (with
    the container's logs) when the container stopped. Raises PodmanError after `timeout`."""
    deadline = time.monotonic() + timeout
    status = 0
    while time.monotonic() < deadline:
        status, _ = http_get(f"http://{host}:{admin_port}{path}")
        if status == 200:
            return
        if name is not None and not is_running(name):
            raise PodmanError(f"container {name} stopped before {path} answered 200:\n{logs(name, tail=50)}")
        time.sleep(0.2)
    detail = f":\n{logs(name, tail=50)}" if name else ""
    raise PodmanError(f"{path} on port {admin_port} not 200 within {timeout}s (last {status}){detail}")


def exec_in(name: str, *command: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Runs a command in the running container (as its user), unchecked."""
    return podman("exec", name, *command, timeout=timeout, check=False)
