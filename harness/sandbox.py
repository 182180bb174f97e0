"""A target inside gVisor: Debian's runsc runs the Linux agent in a sandbox whose network stack
is gVisor's netstack, on the lab's veth end in a namespace of the target's own.

runsc 0.0~20221219 takes every namespace for the root one on kernels where
/proc/sys/net/core/rmem_default exists in all of them (its isRootNS() test), and refuses
--network=sandbox; a tmpfs over /proc/sys/net/core in a private mount namespace of the launcher
hides the file from that test alone. GSO stays off (with it the peer would receive
super-segments with bad TCP checksums). The sandbox's root is the host's own file system, read
only: the agent is docker/linux/agent.py (bound at /synfin) run by the host's python3, inside the sandbox.
"""
import ctypes
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import threading

from . import lab as lab_mod
from .agent import AgentClient
from .cleanup import REGISTRY, owner_alive, owner_of, owner_prefix
from .errors import TargetError
from .runtime import ProcessInstance
from .targets.spec import DOCKER_DIR

RUNSC = "runsc"
# The launcher's own mount namespace: proc mounted afresh, its net/core hidden from runsc's test.
HIDE_ROOT_TEST = ('mount -t proc -o nosuid,nodev,noexec proc /proc && mount -t tmpfs synfin /proc/sys/net/core '
                  '&& exec "$@"')
PR_SET_PDEATHSIG = 1
AGENT_MOUNT = "/synfin"  # docker/ of the checkout, inside the sandbox


def die_with(parent_is_main: bool) -> None:
    """In the child, before exec: SIGKILL when the harness dies. PR_SET_PDEATHSIG follows the
    thread that forked, so it is asked only of a child of the main thread (a target started in a
    thread that then ends would die with it); the next run's sweep covers the others."""
    if parent_is_main:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _own_group_dying_with(parent_is_main: bool) -> None:
    os.setsid()  # its own group: stopped as one, whatever the harness's group receives
    die_with(parent_is_main)


def available() -> str | None:
    """Why gVisor cannot run here, or None."""
    if shutil.which(RUNSC) is None:
        return "runsc is not installed (Debian's runsc package: bin/setup installs it)"
    return None


@functools.lru_cache(maxsize=1)
def version() -> str:
    """runsc's own version ("runsc 0.0~20221219.0"): uname inside the sandbox says 4.4.0."""
    out = subprocess.run([RUNSC, "--version"], capture_output=True, text=True, timeout=10).stdout
    return (out.splitlines() or ["runsc"])[0].replace("runsc version", "runsc").strip()


def _config(agent: str, netns_path: str, stack: str) -> dict:
    """An OCI runtime spec: the agent on stdin/stdout, the host's root read only, the target's
    network namespace."""
    return {
        "ociVersion": "1.0.0",
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0},
            "args": ["/usr/bin/python3", "-u", agent],
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"SYNFIN_STACK={stack}", f"SYNFIN_VERSION={version()}",
                    "PYTHONDONTWRITEBYTECODE=1"],
            "cwd": "/",
            "capabilities": {k: ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"]
                             for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": True,
        },
        "root": {"path": "/", "readonly": True},
        "hostname": "synfin-gvisor",
        "mounts": [
            # The agent from the checkout, wherever that lives (a /tmp one is under the tmpfs below).
            {"destination": AGENT_MOUNT, "type": "bind", "source": DOCKER_DIR, "options": ["rbind", "ro"]},
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs"},
        ],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                                 {"type": "network", "path": netns_path}]},
    }


class RunscInstance(ProcessInstance):
    """The sandbox is launched only once the lab's link is in its namespace (launch()): runsc
    takes over the interface it finds there, address and routes, and removes them from the
    namespace's kernel, which then cannot answer in the stack's name."""

    def __init__(self, spec, label: str, log):
        why = available()
        if why:
            raise TargetError(f"target {spec.name}: {why}")
        self.spec = spec
        self.name = f"{owner_prefix()}-{label}"
        self.netns, self._netns_undo = lab_mod.create_netns(f"{owner_prefix()}-t{label.rsplit('-', 1)[-1]}")
        self.rundir = lab_mod.run_dir(label)
        self.state = os.path.join(self.rundir, "runsc")
        self.bundle = os.path.join(self.rundir, "bundle")
        os.makedirs(self.state, exist_ok=True)
        os.makedirs(self.bundle, exist_ok=True)
        self.log_path = os.path.join(self.rundir, "agent.log")
        self._log = open(self.log_path, "ab")
        self.proc = None
        self.agent = None
        self._undo = REGISTRY.add(f"sandbox {self.name}", self._kill)

    def launch(self) -> None:
        agent = os.path.join(AGENT_MOUNT, "linux", "agent.py")
        with open(os.path.join(self.bundle, "config.json"), "w") as f:
            json.dump(_config(agent, self.netns, self.spec.name), f)
        runsc = [RUNSC, "--root", self.state, "--network=sandbox", "--platform=ptrace", "--gso=false",
                 "--software-gso=false", "--ignore-cgroups", "run", "--bundle", self.bundle, self.name]
        cmd = ["nsenter", f"--net={self.netns}", "unshare", "-m", "--propagation", "private",
               "sh", "-c", HIDE_ROOT_TEST, "sh", *runsc]
        main = threading.current_thread() is threading.main_thread()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     preexec_fn=lambda: _own_group_dying_with(main), close_fds=True)
        self.agent = AgentClient.over_process(self.proc, name=f"{self.spec.name} agent", log_tail=self.log_tail)

    def _kill(self) -> None:
        end(self.proc, self.rundir)  # launcher, gofer and sandbox together
        forget(self.state, self.name)
        self._log.close()



def forget(state: str, name: str) -> None:
    """runsc keeps a killed sandbox listed (and, killed during its start, a lock file): delete
    it and its state folder."""
    subprocess.run([RUNSC, "--root", state, "delete", "-force", name], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=20)
    shutil.rmtree(state, ignore_errors=True)


def processes(prefix: str) -> list[int]:
    """Live processes whose command line names a path that starts with `prefix` (a sandbox's
    launcher, gofer and sentry all carry its state folder in theirs, a user-mode kernel's
    helper processes their kernel's command line)."""
    return [pid for pid, _ in _marked(prefix.encode())]


def _marked(mark: bytes) -> list[tuple[int, bytes]]:
    """(pid, command line) of the live processes whose command line contains `mark`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            if mark not in cmdline:
                continue
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    found.append((int(entry), cmdline))
        except (OSError, IndexError):
            pass
    return found


def end(proc, rundir: str) -> None:
    """Ends a launched sandbox or user-mode kernel: its process group while its leader lives
    (the leader unreaped, its id cannot name another group), then by id whatever still runs
    with its run folder on its command line (the helpers of a leader killed on its own)."""
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            proc.kill()
        proc.wait(timeout=10)
    for pid in processes(rundir.rstrip("/") + "/"):
        _kill(pid)


def _kill(pid: int) -> bool:
    """SIGKILL to one process by its id (never 1 or below); whether it was still there."""
    if pid <= 1:
        return False
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


_RUN_FOLDER = re.compile(rb"/(syn[0-9a-f]+-[^/\x00]+)")


def sweep() -> list[str]:
    """Processes of runs whose process is gone, before lab.sweep() removes their folders: a
    sandbox or a user-mode kernel dies with the run (PR_SET_PDEATHSIG), but whatever still runs
    with a dead run's folder on its command line (whether the folder is still there or not) is
    ended by its pid (never by what runsc's state lists: a stopped sandbox is listed with pid
    -1, and kill(-1) signals every process)."""
    removed = []
    root = lab_mod.RUN_ROOT
    for leftover, cmdline in _marked(root.encode() + b"/"):
        folder = _RUN_FOLDER.search(cmdline.split(root.encode(), 1)[1])
        entry = folder.group(1).decode(errors="replace") if folder else ""
        pid = owner_of(entry, run_dir=True)
        if pid is not None and not owner_alive(pid) and _kill(leftover):
            removed.append(f"process {leftover} of {entry}")
    for entry in os.listdir(root) if os.path.isdir(root) else ():
        pid = owner_of(entry, run_dir=True)
        if pid is not None and not owner_alive(pid):
            shutil.rmtree(os.path.join(root, entry, "runsc"), ignore_errors=True)
    return removed
