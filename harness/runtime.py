"""Where a target runs: a Docker container on `--network none`, or a bare network namespace.

Either way the result is an `Instance`: the path of the target's network namespace (the lab plugs
its veth end in there), a connected agent client, and the agent's log for evidence.
"""
import os
import signal
import subprocess
import sys
import time

from . import lab as lab_mod
from .agent import AgentClient
from .engine import docker_client  # noqa: F401 (runtime.docker_client, as the harness asks it)
from .cleanup import REGISTRY, owner_alive, owner_of, owner_prefix
from .errors import TargetError

LABEL_OWNER = "synfin.owner"
CONTROL_DIR = "/run/synfin"


class Instance:
    """A started target; subclasses know how to read its log and stop it."""

    netns: str
    agent: AgentClient

    def log_marker(self):
        raise NotImplementedError

    def log_since(self, marker) -> str:
        raise NotImplementedError

    def log_tail(self, lines: int = 30) -> str:
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError

    def launch(self) -> None:
        """Once the lab's link is in the target's namespace (a sandbox takes it over then)."""

    def death(self, grace: bool = False) -> str | None:
        """How the target ended ("killed by SIGKILL (exit code 137)"), or None while it runs;
        `grace`: give a process that is still ending a moment to end."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


# The agent's channel closes a moment before its process can be reaped (a container's, before its
# shim reaps it): once the channel has closed, its exit is waited for this long.
EXIT_GRACE = 2.0


def _gone(exited, agent, grace: bool) -> bool:
    """Whether the target's process has ended; waited for a moment if its channel has closed or
    `grace` (what the case ran into says the target is going: its link closed, its channel broke)."""
    if exited() or not (grace or (agent is not None and not agent.healthy)):
        return exited()
    deadline = time.monotonic() + EXIT_GRACE
    while time.monotonic() < deadline:
        time.sleep(0.005)
        if exited():
            return True
    return False


def describe_exit(code: int) -> str:
    """An exit status in words: negative (Popen) or above 128 (a container's) is a signal."""
    signum = -code if code < 0 else code - 128 if code > 128 else None
    if signum is not None:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return f"killed by {name} (exit code {code})"
    return f"exited with code {code}"


class DockerInstance(Instance):
    def __init__(self, client, spec, label: str, log, env: dict):
        from .images import ensure_target_image

        self.name = f"{owner_prefix()}-{label}"
        self.client = client
        image = ensure_target_image(client, spec.name, log)
        self.image = {"tag": image, "id": None}
        # The control socket's directory: root's only. The agent runs as uid 0 without
        # CAP_DAC_OVERRIDE, which the directory's owner does not need.
        rundir = self.rundir = lab_mod.run_dir(label)
        self._undo = REGISTRY.add(f"container {self.name}", self._remove)
        # A user-space stack opens the TAP the lab makes (as its owner, without CAP_NET_ADMIN).
        devices = [] if spec.kernel else ["/dev/net/tun:/dev/net/tun:rwm"]
        try:
            self.container = client.containers.run(
                image, command=["--unix", f"{CONTROL_DIR}/agent.sock"], name=self.name,
                labels={LABEL_OWNER: str(os.getpid())}, network_mode="none", cap_drop=["ALL"],
                volumes={rundir: {"bind": CONTROL_DIR, "mode": "rw"}}, devices=devices,
                environment=env, detach=True,
            )
            self.container.reload()
            self.image["id"] = self.container.attrs.get("Image")
            pid = self._pid = self.container.attrs["State"]["Pid"]
            if not pid:
                raise TargetError(f"container {self.name} exited at once:\n{self.log_tail()}")
            # A path through the container's init: valid while the container runs.
            self.netns = f"/proc/{pid}/ns/net"
            sock = os.path.join(rundir, "agent.sock")
            self.agent = AgentClient.over_unix(sock, name=f"{spec.name} agent", log_tail=self.log_tail,
                                               exit_code=self._exit_code)
            os.chmod(sock, 0o600)  # made with the agent's umask; its directory already shuts others out
        except TargetError:
            self.stop()
            raise
        except Exception as exc:
            self.stop()
            raise TargetError(f"could not start the {spec.name} container: {exc}") from exc

    def _exit_code(self, wait: float):
        """The container's exit code once it has stopped (within `wait` s), else None."""
        deadline = time.monotonic() + wait
        while True:
            try:
                self.container.reload()
            except Exception:
                return None
            state = self.container.attrs["State"]
            if state["Status"] in ("exited", "dead"):
                return state["ExitCode"]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def log_marker(self):
        return time.time()

    def log_since(self, marker) -> str:
        try:
            return self.container.logs(stdout=False, stderr=True, since=marker).decode(errors="replace")
        except Exception as exc:
            return f"(log unavailable: {exc})"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return self.container.logs(stdout=False, stderr=True, tail=lines).decode(errors="replace")
        except Exception as exc:
            return f"(log unavailable: {exc})"

    def alive(self) -> bool:
        # The agent is the container's only process: its channel and its /proc entry tell
        # without a Docker API call (the channel alone only learns of a death at the next call).
        return self.agent.healthy and os.path.exists(f"/proc/{self._pid}")

    def death(self, grace: bool = False) -> str | None:
        if not _gone(lambda: not os.path.exists(f"/proc/{self._pid}"), self.agent, grace):
            return None
        code = self._exit_code(2.0)  # the engine records the exit a moment after the process ends
        if code is None:
            return "its process is gone (the engine has not recorded how)"
        state = self.container.attrs["State"]
        return describe_exit(code) + (" (out of memory)" if state.get("OOMKilled") else "")

    def _remove(self) -> None:
        try:
            self.client.containers.get(self.name).remove(force=True)
        except Exception as exc:
            if "No such container" not in str(exc) and "404" not in str(exc):
                raise

    def stop(self) -> None:
        try:
            if getattr(self, "agent", None):
                self.agent.close()
        finally:
            REGISTRY.run(self._undo)


class ProcessInstance(Instance):
    """A target that is a process of the harness's (`proc`, None until launched), its agent's
    log in a file (`log_path`)."""

    proc = None
    agent = None
    log_path: str
    _undo: int  # the REGISTRY tokens of the process and of its namespace
    _netns_undo: int

    def log_marker(self):
        return os.path.getsize(self.log_path)

    def log_since(self, marker) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(marker)
            return f.read().decode(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        with open(self.log_path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")

    def alive(self) -> bool:
        # A broken channel is a dead target too: nothing more can be asked of it.
        return self.proc is not None and self.proc.poll() is None and (self.agent is None or self.agent.healthy)

    def death(self, grace: bool = False) -> str | None:
        if self.proc is None or not _gone(lambda: self.proc.poll() is not None, self.agent, grace):
            return None
        return describe_exit(self.proc.returncode)

    def stop(self) -> None:
        try:
            if self.agent is not None:
                self.agent.close()
        finally:
            REGISTRY.run(self._undo)
            REGISTRY.run(self._netns_undo)


class NetnsInstance(ProcessInstance):
    """The agent as a host process inside a namespace of its own (no Docker needed)."""

    def __init__(self, spec, label: str, log):
        from . import netns

        self.name = f"{owner_prefix()}-{label}"
        self.netns, self._netns_undo = lab_mod.create_netns(f"{owner_prefix()}-t{label.rsplit('-', 1)[-1]}")
        rundir = self.rundir = lab_mod.run_dir(label)
        self.log_path = os.path.join(rundir, "agent.log")
        self._log = open(self.log_path, "ab")
        path = self.netns
        self.proc = subprocess.Popen(
            spec.host_agent_command(sys.executable), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log, preexec_fn=lambda: netns.enter(path), close_fds=True,
        )
        self._undo = REGISTRY.add(f"agent pid {self.proc.pid}", self._kill)
        self.agent = AgentClient.over_process(self.proc, name=f"{spec.name} agent", log_tail=self.log_tail)


    def _kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)
        self._log.close()



def start(spec, runtime: str, label: str, log, client=None, env: dict | None = None) -> Instance:
    if spec.sandbox == "runsc":  # its own launcher, with or without an engine
        from .sandbox import RunscInstance
        return RunscInstance(spec, label, log)
    if spec.sandbox == "uml":
        from .uml import UmlInstance
        return UmlInstance(spec, label, log, env or {})
    if runtime not in spec.runtimes:
        raise TargetError(f"target {spec.name} runs only with --runtime={' or '.join(spec.runtimes)}, "
                          f"not {runtime}")
    if runtime == "docker":
        return DockerInstance(client, spec, label, log, env or {})
    return NetnsInstance(spec, label, log)


def sweep(client) -> list[str]:
    """Everything of synfin runs whose process is gone: sandboxes first (their state lives in the
    run directories lab.sweep() removes), then namespaces, links, folders, containers."""
    from . import sandbox
    return sandbox.sweep() + lab_mod.sweep() + (sweep_containers(client) if client else [])


def synfin_containers(client) -> list[tuple[str, int, object]]:
    """(name, owner pid, container) of every synfin container, from one sparse listing: no
    inspection per container, which would fail on one another run removes meanwhile."""
    found = client.containers.list(all=True, sparse=True, filters={"label": LABEL_OWNER})
    return [((c.attrs.get("Names") or ["/"])[0].lstrip("/"),  # a sparse listing has no .name
             int((c.attrs.get("Labels") or {}).get(LABEL_OWNER, "0") or 0), c) for c in found]


def sweep_containers(client) -> list[str]:
    """Remove containers of synfin runs whose process is gone."""
    removed = []
    try:
        found = synfin_containers(client)
    except Exception:
        return removed
    for name, pid, c in found:
        if pid and not owner_alive(pid) and owner_of(name) == pid:
            try:
                c.remove(force=True)
                removed.append(f"container {name}")
            except Exception:  # another worker of the same run got there first
                pass
    return removed
