"""Nothing synfin makes outlives it: normal exit, SIGTERM, and SIGKILL followed by a later run's sweep."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from pyroute2 import IPRoute, netns as pr_netns

from harness import lab as lab_mod
from harness import sandbox
from harness import runtime
from harness.cleanup import owner_prefix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="building labs needs root")

# A run in miniature: start the linux target and its lab, say so, then wait to be ended.
CHILD = """
import sys, time
from harness.cleanup import REGISTRY
from harness.session import Session
REGISTRY.install()
s = Session(sys.argv[3] if len(sys.argv) > 3 else "linux", sys.argv[1])
s.ensure()
print("ready", flush=True)
if sys.argv[2] == "exit":
    sys.exit(0)          # no close(): atexit must clean up
time.sleep(600)
"""


def runtimes():
    client, _ = runtime.docker_client()
    return ["netns"] + (["docker"] if client else [])


def leftovers(pid: int) -> list[str]:
    prefix = owner_prefix(pid)
    found = [f"netns {n}" for n in pr_netns.listnetns() if n.startswith(prefix + "-")]
    found += [f"process {p}" for p in sandbox_processes(pid)]
    with IPRoute() as ip:
        found += [f"link {l.get_attr('IFLA_IFNAME')}" for l in ip.get_links()
                  if l.get_attr("IFLA_IFNAME").startswith(prefix)]
    if os.path.isdir(lab_mod.RUN_ROOT):
        found += [f"dir {d}" for d in os.listdir(lab_mod.RUN_ROOT) if d.startswith(prefix + "-")]
    client, _ = runtime.docker_client()
    if client:
        found += [f"container {name}" for name, _, _ in runtime.synfin_containers(client)
                  if name.startswith(prefix + "-")]
    return found


def sandbox_processes(owner: int) -> list[int]:
    return sandbox.processes(f"{lab_mod.RUN_ROOT}/{owner_prefix(owner)}-")


def start_child(rt: str, mode: str = "wait", target: str = "linux") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, rt, mode, target], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        pytest.fail(f"child did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc


def wait_gone(pid: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := leftovers(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.parametrize("rt", runtimes())
def test_sigkilled_run_leaves_objects_that_the_next_run_sweeps(rt):
    proc = start_child(rt)
    try:
        assert any(x.startswith("netns") for x in leftovers(proc.pid))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        left = leftovers(proc.pid)
        assert left, "a SIGKILLed run cannot clean up; its objects must still be there before the sweep"
        client = runtime.docker_client()[0]
        removed = lab_mod.sweep() + (runtime.sweep_containers(client) if client else [])
        assert any(f"{owner_prefix(proc.pid)}-" in r for r in removed)
        assert wait_gone(proc.pid) == []
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("rt", runtimes())
def test_sigterm_cleans_up_at_once(rt):
    proc = start_child(rt)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert proc.returncode == -signal.SIGTERM
    assert wait_gone(proc.pid, timeout=2) == []


def test_normal_exit_without_close_cleans_up():
    proc = start_child("netns", mode="exit")
    proc.wait(timeout=20)
    assert proc.returncode == 0
    assert wait_gone(proc.pid, timeout=2) == []


def test_sweep_leaves_a_live_runs_objects_alone():
    proc = start_child("netns")
    try:
        before = leftovers(proc.pid)
        lab_mod.sweep()
        assert leftovers(proc.pid) == before
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert wait_gone(proc.pid, timeout=2) == []


@pytest.mark.parametrize("target,tool", [("gvisor", "runsc"), ("linux-6.1", "linux.uml")])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_sandbox_or_user_mode_kernel_never_outlives_its_run(sig, target, tool):
    if shutil.which(tool) is None:
        pytest.skip(f"needs {tool}")
    proc = start_child("netns", target=target)
    try:
        assert sandbox_processes(proc.pid), "the sandbox's processes must be seen while the run lives"
        proc.send_signal(sig)
        proc.wait(timeout=20)
        client = runtime.docker_client()[0]
        if sig == signal.SIGKILL:
            runtime.sweep(client)
        assert wait_gone(proc.pid, timeout=5) == []
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_dead_runs_process_is_swept_even_when_its_folder_is_gone(tmp_path):
    # A killed user-mode kernel's helpers outlive it; its run may have removed the folder their
    # command line names: the sweep finds them by that name all the same.
    owner = subprocess.Popen(["true"])
    owner.wait()  # a run that has ended
    folder = f"{lab_mod.RUN_ROOT}/{owner_prefix(owner.pid)}-linux-6.1-0"
    assert not os.path.exists(folder)
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "umid=x", f"uml_dir={folder}"])
    try:
        deadline = time.monotonic() + 5
        while helper.pid not in sandbox_processes(owner.pid):  # until it has exec'd
            assert time.monotonic() < deadline and helper.poll() is None
            time.sleep(0.01)
        sandbox.sweep()  # (or another worker's, at its start: the same sweep)
        assert helper.wait(timeout=5) == -signal.SIGKILL
    finally:
        if helper.poll() is None:
            helper.kill()


def _listed_but_gone(monkeypatch, inspect: str, error) -> None:
    """Every inspection answers 404, as for an object another run removed after it was listed."""
    import docker

    def gone(self, resource_id, *args, **kwargs):
        raise error(f"No such object: {resource_id} (removed by another run)")
    monkeypatch.setattr(docker.api.client.APIClient, inspect, gone)


@pytest.mark.skipif(runtime.docker_client()[0] is None, reason="needs a Docker engine")
def test_a_container_removed_while_being_listed_is_no_error(monkeypatch):
    import docker
    from harness.images import ensure_target_image

    client = runtime.docker_client()[0]
    image = ensure_target_image(client, "linux", lambda line: None)
    name = f"{owner_prefix()}-listed"
    c = client.containers.create(image, name=name, labels={runtime.LABEL_OWNER: str(os.getpid())})
    try:
        _listed_but_gone(monkeypatch, "inspect_container", docker.errors.NotFound)
        assert f"container {name}" in leftovers(os.getpid())
        assert runtime.sweep_containers(client) == []  # its owner (this process) is alive
    finally:
        monkeypatch.undo()
        c.remove(force=True)


@pytest.mark.skipif(runtime.docker_client()[0] is None, reason="needs a Docker engine")
def test_an_image_removed_while_superseded_builds_are_pruned_is_no_error(monkeypatch):
    import docker
    from harness import images

    client = runtime.docker_client()[0]
    tag = images.ensure_target_image(client, "linux", lambda line: None)
    _listed_but_gone(monkeypatch, "inspect_image", docker.errors.ImageNotFound)
    images._prune(client, "synfin-linux", keep=tag, log=lambda line: None)
    monkeypatch.undo()
    assert client.images.get(tag).tags  # the kept build is still there
