"""Faults while a run goes on: the target killed mid-case on every kind of target, a restart that
fails, a pytest-xdist worker killed, SIGTERM at several moments. Each ends in one clear line, an
ERROR record in results.json (never a FAIL charged to the stack), and nothing left on the machine.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from textwrap import dedent

import pytest
from suite import ROOT, HEADER, passive_opens, run_cases
from test_cleanup import leftovers, wait_gone

from harness import runtime

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="building labs needs root")
DOCKER = runtime.docker_client()[0] is not None
needs_docker = pytest.mark.skipif(not DOCKER, reason="needs a Docker engine")

PASSING = passive_opens("test_after", "test_after_that")

# Kills the target of the case it is called in: the agent process (bare namespace) or the container.
KILL = """
import threading, time

def kill_target(lab, after=0.0):
    instance = lab.session.instance
    def kill():
        if hasattr(instance, "proc"):
            # Every process of it, as a crash would end it: gVisor's sandbox runs in a session of
            # its own, and killed with its launcher alone it may go on answering for a while.
            from harness import sandbox
            for pid in [instance.proc.pid] + sandbox.processes(instance.rundir + "/"):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        else:
            docker.from_env().containers.get(instance.name).kill()
    threading.Timer(after, kill).start() if after else kill()


def fail_starts(n, why):
    # The next n target starts fail as a replacement that never comes up would.
    from harness import runtime
    from harness.errors import TargetError
    real, left = runtime.start, [n]
    def start(*args, **kwargs):
        if left[0]:
            left[0] -= 1
            raise TargetError(why)
        return real(*args, **kwargs)
    runtime.start = start
"""

# Every kind of target: a kernel in a bare namespace, a kernel in a container, user-space stacks
# on a TAP in a container (each dies differently: the namespace or the TAP goes with it).
KINDS = [("linux", "netns")] + ([("linux", "docker"), ("lwip", "docker"), ("smoltcp", "docker"),
                                 ("pytcp", "docker")] if DOCKER else []) + (
    # a kernel of its own, as a process: the frame socket dies with it
    [("linux-6.1", "netns")] if shutil.which("linux.uml") else []) + (
    [("gvisor", "netns")] if shutil.which("runsc") else [])


def by_case(tmp_path, target):
    with open(tmp_path / "results" / "results.json") as f:
        return {r["case"].rsplit("::", 1)[1]: r for r in json.load(f)["results"] if r["target"] == target}


@pytest.mark.parametrize("target,rt", KINDS, ids=[f"{t}-{r}" for t, r in KINDS])
def test_a_target_dying_while_the_peer_waits_is_an_error_saying_so(tmp_path, target, rt):
    proc, _ = run_cases(tmp_path, KILL + dedent("""
        @requirement("R9293-3.10.7.2/third", "MUST")
        def test_dies_while_the_peer_waits(lab):
            conn, _, _ = lab.passive_open()
            kill_target(lab, after=0.3)
            conn.expect(Seg("F"), within=3.0)   # never comes: the target dies meanwhile

        @requirement("R9293-3.10.7.2/third", "MUST")
        def test_dies_before_the_peer_sends(lab):
            conn, _, _ = lab.passive_open()
            kill_target(lab)
            time.sleep(0.5)
            conn.send(b"x")
            conn.expect(Seg("A"), within=1.0)
        """), f"--target={target}", f"--runtime={rt}", extra=PASSING, timeout=180)
    verdicts = by_case(tmp_path, target)
    for name in ("test_dies_while_the_peer_waits", "test_dies_before_the_peer_sends"):
        record = verdicts[name]
        first = record["message"].splitlines()[0]
        assert record["verdict"] == "ERROR", (name, record["message"], proc.stdout[-3000:])
        assert first.startswith(f"TargetError: target {target} died during the case: killed by SIGKILL"), first
        assert "its log" in record["message"]
        # pytest's internals are not what the user reads
        assert "_pytest" not in record["message"] and "pluggy" not in record["message"]
    assert verdicts["test_after"]["verdict"] == "PASS", proc.stdout[-3000:]
    assert "restarting it" in proc.stderr


def test_a_failed_restart_is_retried_and_a_dead_target_costs_one_case(tmp_path):
    # The replacement fails to come up twice (the third attempt works): no case after it is lost.
    proc, verdicts = run_cases(tmp_path, KILL + dedent("""
        @requirement("R9293-3.10.7.2/third", "MUST")
        def test_dies(lab):
            fail_starts(2, "the replacement did not answer its probe SYN (injected)")
            kill_target(lab)
        """), "--runtime=netns", extra=PASSING, timeout=120)
    assert verdicts["test_after"]["verdict"] == "PASS", proc.stdout[-3000:] + proc.stderr[-2000:]
    assert verdicts["test_after_that"]["verdict"] == "PASS"
    assert "restart 1 of target linux failed (the replacement did not answer its probe SYN" in proc.stderr


@pytest.mark.parametrize("target,rt", KINDS, ids=[f"{t}-{r}" for t, r in KINDS])
def test_a_target_killed_after_the_cases_last_call_is_charged_to_that_case(tmp_path, target, rt):
    # Nothing is asked of the target after the kill, and its process may still be exiting when
    # the next case begins: the death must be found at the end of the case that saw it, not by
    # the next case's first call (which would charge the death to the wrong case).
    pidfile = tmp_path / "run.pid"
    body = KILL + "".join(dedent(f"""
        @requirement("R9293-3.10.7.2/third", "MUST")
        def test_dies_{i}(lab):
            open({str(pidfile)!r}, "w").write(str(os.getpid()))
            lab.target.listen(lab.port())
            kill_target(lab)
        """) + passive_opens(f"test_after_{i}") for i in range(3))
    proc, _ = run_cases(tmp_path, body, f"--target={target}", f"--runtime={rt}", timeout=240)
    # What a killed target leaves (a user-mode kernel's helper processes) goes with its run.
    assert wait_gone(int(pidfile.read_text()), timeout=2) == []
    verdicts = by_case(tmp_path, target)
    for i in range(3):
        record = verdicts[f"test_dies_{i}"]
        assert record["verdict"] == "ERROR", (record, proc.stdout[-3000:])
        assert record["message"].startswith(f"TargetError: target {target} died during the case: killed by SIGKILL"), \
            record["message"]
        assert verdicts[f"test_after_{i}"]["verdict"] == "PASS", proc.stdout[-3000:] + proc.stderr[-2000:]


def test_a_restart_that_keeps_failing_costs_that_case_only(tmp_path):
    proc, verdicts = run_cases(tmp_path, KILL + dedent("""
        @requirement("R9293-3.10.7.2/third", "MUST")
        def test_dies(lab):
            fail_starts(3, "injected start failure")   # every attempt of the first restart fails
            kill_target(lab)
        """), "--runtime=netns", extra=PASSING, timeout=120)
    after = verdicts["test_after"]
    assert after["verdict"] == "ERROR"
    assert after["message"].startswith("TargetError: target linux could not be restarted (3 attempts"), after["message"]
    assert verdicts["test_after_that"]["verdict"] == "PASS", proc.stdout[-3000:]


@pytest.mark.parametrize("rt", ["netns"] + (["docker"] if DOCKER else []))
def test_teardown_after_a_dead_target_adds_no_second_error(tmp_path, rt):
    proc, verdicts = run_cases(tmp_path, KILL + dedent("""
        @requirement("R9293-3.10.7.2/third", "MUST")
        def test_dies_with_a_sysctl_changed(lab):
            lab.target.sysctl("net.ipv4.tcp_fin_timeout", "7")   # put back at teardown, normally
            kill_target(lab)
            time.sleep(0.3)
            lab.target.listen(lab.port())   # no socket stays open: the teardown goes on to the sysctl
        """), f"--runtime={rt}", extra=PASSING, timeout=120)
    assert verdicts["test_dies_with_a_sysctl_changed"]["verdict"] == "ERROR"
    assert "without a verdict" not in proc.stdout, proc.stdout[-3000:]
    assert "error in teardown" not in proc.stdout.lower() and "FileNotFoundError" not in proc.stdout
    assert len(verdicts) == 3
    assert proc.stdout.splitlines()[-1].endswith("linux: PASS 2  ERROR 1"), proc.stdout[-3000:]


def test_a_crashed_xdist_worker_s_case_is_an_error_and_its_objects_are_swept(tmp_path):
    pidfile = tmp_path / "crashed.pid"
    proc, _ = run_cases(tmp_path, f"""
        @requirement("R9293-3.10.7.2/third", "MUST")
        def test_crash(lab):
            lab.target.listen(lab.port())
            open({str(pidfile)!r}, "w").write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        """, "-n", "2", "--runtime=netns", extra=PASSING, timeout=180)
    verdicts = by_case(tmp_path, "linux")
    assert set(verdicts) == {"test_crash", "test_after", "test_after_that"}, proc.stdout[-3000:]
    crash = verdicts["test_crash"]
    assert crash["verdict"] == "ERROR"
    assert crash["message"].startswith("worker crashed"), crash["message"]
    assert crash["requirement"] == "R9293-3.10.7.2/third" and crash["rerun"].endswith("--runtime=netns")
    assert "ERROR" in proc.stdout and "test_crash" in proc.stdout  # in the verdict summary
    assert proc.returncode == 2
    assert wait_gone(int(pidfile.read_text()), timeout=2) == []


def start_paused(tmp_path, point: str, *args, pause: float = 10.0) -> subprocess.Popen:
    """A run of a small case file, once it has reached `point` (tests/fault_points.py)."""
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "test_fault.py").write_text(HEADER + PASSING)
    marker = tmp_path / "reached"
    none = tmp_path / "none"
    none.mkdir()
    cmd = [sys.executable, "-m", "pytest", str(cases), "-p", "harness.plugin", "-p", "tests.fault_points",
           "-p", "no:cacheprovider", f"--rootdir={tmp_path}", f"--results={tmp_path / 'results'}",
           f"--expectations={none}", "-q", *args]
    env = {**os.environ, "SYNFIN_PAUSE_AT": point, "SYNFIN_PAUSE_FILE": str(marker), "SYNFIN_PAUSE_S": str(pause)}
    # SIGINT at its default, so Python turns it into KeyboardInterrupt: a job started in the
    # background by a non-interactive shell inherits it ignored.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run never reached {point}: {proc.communicate()[0][-3000:]}")
        time.sleep(0.02)
    return proc


def run_and_signal(tmp_path, point: str, sig: int, *args, pause: float = 10.0):
    """Signal a run at `point`: (process, its output)."""
    proc = start_paused(tmp_path, point, *args, pause=pause)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    return proc, out


MOMENTS = ["collection", "case", "teardown"] + (["container-start"] if DOCKER else [])


@pytest.mark.parametrize("point", MOMENTS)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_the_run_with_a_line_the_partial_results_and_nothing_left(tmp_path, point, sig):
    rt = "--runtime=docker" if point == "container-start" else "--runtime=netns"
    proc, out = run_and_signal(tmp_path, point, sig, rt, pause=2.0 if point == "container-start" else 10.0)
    assert proc.returncode == 2, out[-3000:]
    if sig == signal.SIGTERM:
        assert "synfin: SIGTERM received: stopping the run" in out
    assert "synfin: exit 2, verdicts incomplete" in out.splitlines()[-1], out[-3000:]
    doc = json.loads((tmp_path / "results" / "results.json").read_text())
    assert doc["exit_code"] == 2
    if point == "teardown":  # the case itself had its verdict
        assert [r["verdict"] for r in doc["results"]] == ["PASS"]
    assert wait_gone(proc.pid, timeout=5) == [], out[-3000:]


def test_the_agents_control_socket_is_reachable_by_root_only(tmp_path):
    proc, verdicts = run_cases(tmp_path, """
        import stat

        @requirement("R9293-3.10.7.2/third", "MUST")
        def test_modes(lab):
            instance = lab.session.instance
            if hasattr(instance, "container"):   # the folder mounted at the agent's /run/synfin
                where = next(m["Source"] for m in instance.container.attrs["Mounts"]
                             if m["Destination"] == "/run/synfin")
            else:
                where = os.path.dirname(instance.log_path)
            sock = os.path.join(where, "agent.sock")   # the agent's control socket (in a container)
            assert os.stat(where).st_uid == 0
            assert stat.S_IMODE(os.stat(where).st_mode) & 0o077 == 0, oct(os.stat(where).st_mode)
            if os.path.exists(sock):
                assert stat.S_IMODE(os.stat(sock).st_mode) & 0o077 == 0, oct(os.stat(sock).st_mode)
        """, *(["--runtime=docker"] if DOCKER else ["--runtime=netns"]))
    assert verdicts["test_modes"]["verdict"] == "PASS", verdicts["test_modes"]["message"]


def test_leftovers_helper_sees_a_live_runs_objects(tmp_path):
    """The checks above rely on leftovers() seeing what a run makes (else 'nothing left' proves nothing)."""
    proc = start_paused(tmp_path, "case", "--runtime=netns", pause=2.0)
    try:
        assert any(x.startswith("netns") for x in leftovers(proc.pid))
    finally:
        proc.communicate(timeout=60)
