"""Faults end in one clear line and an ERROR verdict, never a hang, a FAIL or leftovers.

Each test runs a small case file through pytest in a subprocess, as a user would, and reads the
verdicts from its results.json.
"""
import os

import pytest
from suite import passive_opens, run_cases

from harness import runtime

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="building labs needs root")
needs_docker = pytest.mark.skipif(runtime.docker_client()[0] is None, reason="needs a Docker engine")


PASSING = passive_opens("test_after")


@needs_docker
def test_container_dying_mid_case_is_an_error_and_the_next_case_gets_a_new_target(tmp_path):
    proc, verdicts = run_cases(tmp_path, """
        @requirement("R9293-3.10.7.2/third", "MUST")
        def test_dies(lab):
            port = lab.port()
            lab.target.listen(port)
            docker.from_env().containers.get(lab.session.instance.name).kill()
            lab.target.listen(lab.port())
        """, "--runtime=docker", extra=PASSING)
    assert verdicts["test_dies"]["verdict"] == "ERROR", proc.stdout
    first = verdicts["test_dies"]["message"].splitlines()[0]
    assert first.startswith("TargetError: target linux died during the case: killed by SIGKILL") and "listen" in first
    assert verdicts["test_after"]["verdict"] == "PASS", proc.stdout + proc.stderr
    assert "restarting it" in proc.stderr


def test_agent_crash_mid_case_is_an_error_with_the_agents_log(tmp_path):
    proc, verdicts = run_cases(tmp_path, """
        @requirement("R9293-3.10.7.2/third", "MUST")
        def test_crash(lab):
            os.kill(lab.session.instance.proc.pid, signal.SIGKILL)
            lab.target.listen(lab.port())
        """, "--runtime=netns", extra=PASSING)
    record = verdicts["test_crash"]
    assert record["verdict"] == "ERROR"
    assert "died during the case: killed by SIGKILL" in record["message"].splitlines()[0]
    assert '"op":"hello"' in record["message"] or "hello" in record["message"]  # the log tail
    assert verdicts["test_after"]["verdict"] == "PASS"
    assert proc.returncode == 2  # an ERROR: the verdicts are incomplete


def test_agent_hang_is_an_error_within_the_deadline(tmp_path):
    proc, verdicts = run_cases(tmp_path, """
        @requirement("R9293-3.10.7.2/third", "MUST")
        def test_hang(lab):
            os.kill(lab.session.instance.proc.pid, signal.SIGSTOP)
            try:
                lab.target.call("listen", addr=lab.target.ip, port=lab.port(), timeout=0.5)
            finally:
                os.kill(lab.session.instance.proc.pid, signal.SIGCONT)
        """, "--runtime=netns", timeout=60)
    record = verdicts["test_hang"]
    assert record["verdict"] == "ERROR"
    assert "no reply within" in record["message"].splitlines()[0]
    assert record["durations"]["call"] < 10


def test_a_stack_deviation_is_a_fail_and_a_should_is_a_warning(tmp_path):
    proc, verdicts = run_cases(tmp_path, """
        @requirement("R9293-3.10.7.2/third", "MUST")
        def test_must(lab):
            port = lab.port()
            lab.target.listen(port)
            conn = lab.peer.connection(port)
            conn.syn()
            conn.expect(Seg("R"), within=0.2)   # Linux answers SYN-ACK: a deviation from this spec

        @requirement("SHLD-3", "SHOULD")
        def test_should(lab):
            port = lab.port()
            lab.target.listen(port)
            conn = lab.peer.connection(port)
            conn.syn()
            conn.expect(Seg("R"), within=0.2)
        """, "--runtime=netns")
    assert verdicts["test_must"]["verdict"] == "FAIL"
    assert "received instead:\n    SYN,ACK seq=0 ack=1" in verdicts["test_must"]["message"]
    assert verdicts["test_should"]["verdict"] == "WARN"
    assert proc.returncode == 1  # the MUST fails the run; the SHOULD alone would not
    assert "rerun: .venv/bin/pytest" in proc.stdout
    evidence = os.path.join(tmp_path, "results", verdicts["test_must"]["evidence"]["dir"])
    assert os.path.getsize(os.path.join(evidence, "capture.pcap")) > 24
    assert "SYN,ACK" in open(os.path.join(evidence, "ladder.txt")).read()


def test_unknown_target_lists_the_known_ones(tmp_path):
    proc, _ = run_cases(tmp_path, PASSING, "--target=nosuch")
    assert proc.returncode == 4
    assert "unknown target 'nosuch'; known targets: gvisor, linux, linux-6.1, lwip" in proc.stderr


def test_unknown_requirement_id_is_refused(tmp_path):
    proc, _ = run_cases(tmp_path, """
        @requirement("MUST-999", "MUST")
        def test_x(lab):
            pass
        """)
    assert proc.returncode == 4
    assert "requirement id 'MUST-999' is not in" in proc.stderr


def test_no_docker_engine_falls_back_to_netns_with_a_notice(tmp_path):
    proc, verdicts = run_cases(tmp_path, PASSING, env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert "no Docker engine answers" in proc.stderr and "using --runtime=netns" in proc.stderr
    assert verdicts["test_after"]["verdict"] == "PASS"


@needs_docker
def test_image_build_failure_is_an_error_naming_the_image(tmp_path):
    proc, verdicts = run_cases(tmp_path, PASSING, "--runtime=docker",
                               env={"SYNFIN_BASE_IMAGE": "synfin-no-such-base:1"})
    assert verdicts["test_after"]["verdict"] == "ERROR"
    assert "synfin-no-such-base:1" in verdicts["test_after"]["message"].splitlines()[0]


DEVIATING = """
@requirement("R9293-3.10.7.1", "MUST")
def test_closed_port(lab):
    conn = lab.peer.connection(lab.port())
    conn.syn()
    conn.expect(Seg("R", seq=0), within=0.2)   # Linux sends RST,ACK: a 'deviation' from this spec
"""


def expectation(tmp_path, observed: str) -> str:
    directory = tmp_path / "expect"
    directory.mkdir()
    (directory / "linux.toml").write_text(
        '[[deviation]]\ncase = "cases/test_fault.py::test_closed_port"\n'
        f'observed = "{observed}"\nrfc = "RFC 9293 §3.10.7.1"\nwhy = "recorded for this test"\n')
    return f"--expectations={directory}"


def test_a_recorded_deviation_seen_as_recorded_is_expected_and_passes_the_run(tmp_path):
    proc, verdicts = run_cases(tmp_path, DEVIATING, "--runtime=netns",
                               expectation(tmp_path, "received RST,ACK seq=0"))
    assert verdicts["test_closed_port"]["verdict"] == "EXPECTED", proc.stdout
    assert proc.returncode == 0


def test_a_recorded_deviation_that_fails_differently_is_a_fail(tmp_path):
    proc, verdicts = run_cases(tmp_path, DEVIATING, "--runtime=netns",
                               expectation(tmp_path, "received FIN"))
    assert verdicts["test_closed_port"]["verdict"] == "FAIL"
    assert "fails differently from the recorded deviation" in verdicts["test_closed_port"]["message"]
    assert proc.returncode == 1


def test_a_recorded_deviation_that_no_longer_occurs_is_a_fail(tmp_path):
    proc, verdicts = run_cases(tmp_path, DEVIATING.replace('Seg("R", seq=0)', 'Seg("RA", seq=0)'),
                               "--runtime=netns", expectation(tmp_path, "received RST,ACK seq=0"))
    assert verdicts["test_closed_port"]["verdict"] == "FAIL"
    assert "did not occur" in verdicts["test_closed_port"]["message"]
    assert proc.returncode == 1
