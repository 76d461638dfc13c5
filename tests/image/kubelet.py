"""Runs the chart's pods the way a kubelet would, as podman containers of the built image.

`PodTemplate.from_chart(objects)` reads the rendered Deployment (and the ConfigMap and Secrets
it mounts) and `start()` makes one pod of it: the container's image, args and env (values and
`secretKeyRef`s), its volume mounts (the ConfigMap and the projected Secret written to a folder
and mounted read-only, `emptyDir` as a tmpfs), and its securityContext (user and group,
read-only root, capabilities dropped, no new privileges). `Pod.ready()` is the readiness probe;
`Pod.terminate()` is what the kubelet does to a pod that is deleted: the preStop hook (`sleep`
or `exec` of sleep), SIGTERM, and SIGKILL once terminationGracePeriodSeconds have passed.

One difference from Kubernetes: the containers share the host's network (there is no CNI
here), so each pod gets its own ports through `MCPGATE_SERVER__LISTEN` and
`MCPGATE_ADMIN__LISTEN`, and the probes' named ports are mapped to them.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from podman import PodmanError, free_port, podman


@dataclass
class PodTemplate:
    """The parts of the rendered Deployment's pod template that a pod is made from."""

    deployment: dict
    config_maps: dict[str, dict]
    secrets: dict[str, dict]

    @classmethod
    def from_chart(cls, objects: list[dict]) -> "PodTemplate":
        [deployment] = [o for o in objects if o["kind"] == "Deployment"]
        by_kind = lambda kind: {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}  # noqa: E731
        return cls(deployment, by_kind("ConfigMap"), by_kind("Secret"))

    @property
    def spec(self) -> dict:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self) -> dict:
        [container] = self.spec["containers"]
        return container

    @property
    def strategy(self) -> dict:
        return self.deployment["spec"]["strategy"]

    @property
    def replicas(self) -> int:
        return self.deployment["spec"]["replicas"]

    @property
    def grace_seconds(self) -> int:
        return self.spec["terminationGracePeriodSeconds"]

    @property
    def pre_stop_seconds(self) -> int:
        hook = self.container.get("lifecycle", {}).get("preStop")
        if hook is None:
            return 0
        if "sleep" in hook:
            return int(hook["sleep"]["seconds"])
        command = hook["exec"]["command"]
        assert command[0].endswith("sleep"), f"preStop is not a sleep: {command}"
        return int(command[1])

    @property
    def readiness_path(self) -> str:
        probe = self.container["readinessProbe"]["httpGet"]
        assert probe["port"] == "admin", probe
        return probe["path"]

    def start(self, name: str, image: str, workdir: Path, extra_env: dict[str, str] | None = None) -> "Pod":
        http_port, admin_port = free_port(), free_port()
        env = {
            "MCPGATE_SERVER__LISTEN": f"127.0.0.1:{http_port}",
            "MCPGATE_ADMIN__LISTEN": f"127.0.0.1:{admin_port}",
        }
        env |= self._env() | (extra_env or {})
        volumes = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
        args = ["run", "-d", "--name", name, "--network", "host", "--pull", "never", *self._security_args(), *self._mount_args(volumes)]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        args += [image, *self.container.get("args", [])]
        podman(*args)
        return Pod(name, self, http_port, admin_port, volumes)

    def _env(self) -> dict[str, str]:
        env = {}
        for var in self.container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            else:
                ref = var["valueFrom"]["secretKeyRef"]
                env[var["name"]] = self._secret_value(ref["name"], ref["key"])
        return env

    def _secret_value(self, name: str, key: str) -> str:
        secret = self.secrets[name]
        if key in secret.get("stringData", {}):
            return secret["stringData"][key]
        return base64.b64decode(secret["data"][key]).decode()

    def _security_args(self) -> list[str]:
        pod, ctx = self.spec.get("securityContext", {}), self.container.get("securityContext", {})
        user = ctx.get("runAsUser", pod.get("runAsUser"))
        group = ctx.get("runAsGroup", pod.get("runAsGroup", user))
        args = ["--user", f"{user}:{group}"]
        if ctx.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        for capability in ctx.get("capabilities", {}).get("drop", []):
            args.append(f"--cap-drop={capability}")
        if ctx.get("allowPrivilegeEscalation") is False:
            args.append("--security-opt=no-new-privileges")
        return args

    def _mount_args(self, folder: Path) -> list[str]:
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        args = []
        for mount in self.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "emptyDir" in volume:
                args += ["--tmpfs", f"{mount['mountPath']}:rw,size=64m,mode=1777"]
                continue
            source = folder / mount["name"]
            if not source.exists():
                self._materialize(volume, source)
            if "subPath" in mount:
                source = source / mount["subPath"]
            mode = "ro" if mount.get("readOnly") else "rw"
            args += ["--volume", f"{source}:{mount['mountPath']}:{mode}"]
        return args

    def _materialize(self, volume: dict, folder: Path) -> None:
        """Writes a ConfigMap or Secret volume's files, as the kubelet projects them."""
        folder.mkdir(parents=True)
        if "configMap" in volume:
            data = self.config_maps[volume["configMap"]["name"]]["data"]
            for item in volume["configMap"].get("items") or [{"key": k, "path": k} for k in data]:
                (folder / item["path"]).write_text(data[item["key"]])
        else:
            sources = volume["projected"]["sources"] if "projected" in volume else [volume]
            for source in sources:
                secret = source["secret"]
                name = secret.get("name", secret.get("secretName"))
                for item in secret["items"]:
                    (folder / item["path"]).write_text(self._secret_value(name, item["key"]))
        for path in folder.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o444)
        folder.chmod(0o755)


@dataclass
class Pod:
    name: str
    template: PodTemplate
    http_port: int
    admin_port: int
    volumes: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/mcp"

    def ready(self) -> bool:
        """The readiness probe: GET of its path on the admin port answers 2xx."""
        try:
            url = f"http://127.0.0.1:{self.admin_port}{self.template.readiness_path}"
            with urllib.request.urlopen(url, timeout=2) as response:
                return 200 <= response.status < 300
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.ready():
                return time.monotonic() - started
            if not self.running():
                raise RuntimeError(f"pod {self.name} exited while starting:\n{self.logs()}")
            time.sleep(0.1)
        raise RuntimeError(f"pod {self.name} not ready within {timeout}s:\n{self.logs()}")

    def running(self) -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return state.stdout.strip() == "true"

    def pre_stop(self) -> None:
        time.sleep(self.template.pre_stop_seconds)

    def sigterm_and_wait(self) -> float:
        """SIGTERM; SIGKILL after terminationGracePeriodSeconds (less the preStop already
        spent, as the kubelet counts it). Returns how long the container took to exit."""
        started = time.monotonic()
        podman("kill", "--signal", "TERM", self.name)
        budget = self.template.grace_seconds - self.template.pre_stop_seconds
        try:
            podman("wait", self.name, timeout=budget)
        except PodmanError:
            podman("kill", "--signal", "KILL", self.name, check=False)
            podman("wait", self.name, check=False)
        return time.monotonic() - started

    def exit_code(self) -> int:
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout.strip())

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def remove(self) -> None:
        podman("rm", "--force", "--time", "0", self.name, check=False)
        shutil.rmtree(self.volumes, ignore_errors=True)
