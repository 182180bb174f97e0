"""A deviation recorded for one step of a case lets the rest of the case run, and the checks after
it still count (end to end, through pytest as a user runs it)."""
import os

import pytest
from suite import run_cases, run_suite

from harness import runtime

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="building labs needs root")

CASE = """
@requirement("RFC5961-3.2", "MUST")
def test_probe(lab):
    conn, _, _ = lab.passive_open()
    with lab.step("probe", "R9293-3.10.7.1"):
        conn.expect(Seg("R"), within=0.1)     # nothing comes: the recorded deviation
    lab.note("after the probe", "ran")
    assert AFTER, "the check after the probe"
"""


def expectations(tmp_path) -> str:
    directory = tmp_path / "expect"
    directory.mkdir()
    (directory / "linux.toml").write_text(
        '[[deviation]]\ncase = "cases/test_fault.py::test_probe"\nstep = "probe"\n'
        'observed = "received nothing within"\nrfc = "RFC 9293 §3.10.7.1"\nwhy = "recorded for this test"\n')
    return f"--expectations={directory}"


@pytest.mark.parametrize("after, verdict", [(True, "EXPECTED"), (False, "FAIL")])
def test_the_checks_after_a_recorded_deviation_run_and_count(tmp_path, after, verdict):
    proc, verdicts = run_cases(tmp_path, CASE.replace("AFTER", str(after)), "--runtime=netns",
                               expectations(tmp_path))
    record = verdicts["test_probe"]
    assert record["verdict"] == verdict, proc.stdout
    assert record["notes"] == {"after the probe": "ran"}
    steps = {s["step"]: s["verdict"] for s in record["steps"]}
    assert steps == {"passive open": "PASS", "probe": "EXPECTED", "test_probe": "PASS" if after else "FAIL"}
    if not after:  # the later failure is the case's own, at its own requirement
        assert (record["requirement"], record["step"]) == ("RFC5961-3.2", None)
        assert record["message"].startswith("the check after the probe")
        assert proc.returncode == 1


@pytest.mark.skipif(runtime.docker_client()[0] is None, reason="the lwip target runs in Docker")
def test_on_lwip_the_reset_is_still_checked_after_the_recorded_rst_ack(tmp_path):
    case = "cases/reset/test_rst_received.py::test_rst_at_rcv_nxt_resets_the_connection_silently"
    proc, records = run_suite(tmp_path, "--evidence=all", cases=(case,), target="lwip")
    record = records[case]
    assert record["verdict"] == "EXPECTED", proc.stdout
    assert (record["requirement"], record["step"]) == ("R9293-3.10.7.1", "answered from CLOSED")
    steps = {s["step"]: s["verdict"] for s in record["steps"]}
    assert steps["answered from CLOSED"] == "EXPECTED"
    assert steps["test_rst_at_rcv_nxt_resets_the_connection_silently"] == "PASS"
    log = open(os.path.join(tmp_path, record["evidence"]["agent_log"])).read()
    assert '"op":"recv"' in log.replace(" ", "") and "ECONNRESET" in log
