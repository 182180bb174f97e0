"""Steps: a failure is charged to the requirement of the step it happened in; a recorded
deviation lets the case go on; the verdict adds up from the steps."""
import pytest

from harness.agent import OpError
from harness.errors import AgentError, Unsupported
from harness.expectations import Deviation
from harness.steps import StepLog


def dev(step=None, observed="received RST,ACK", intermittent=False):
    return Deviation("cases/x.py::test_y", observed, "RFC 9293 §3.10.7.1", "why", intermittent, step)


def run(log: StepLog, body) -> tuple:
    """Run `body(log)` as pytest would run a case; the step the verdict is charged to."""
    try:
        body(log)
    except BaseException as exc:  # noqa: BLE001 - the case's outcome, whatever it is
        outcome = log.finish(exc)
    else:
        outcome = log.finish(None)
    return outcome, {s["step"]: s["verdict"] for s in log.records()}


def test_a_failure_inside_a_step_is_charged_to_that_steps_requirement_and_level():
    log = StepLog("test_case", "RFC2525-2.16", "SHOULD")

    def body(log):
        with log.step("the target's FIN", "R9293-3.6", "MUST"):
            raise AssertionError("expected FIN,ACK; received nothing")

    outcome, steps = run(log, body)
    assert (outcome.name, outcome.verdict, outcome.requirement, outcome.level) == (
        "the target's FIN", "FAIL", "R9293-3.6", "MUST")
    assert steps == {"the target's FIN": "FAIL", "test_case": "NOT RUN"}


def test_a_failure_outside_any_step_is_the_cases_own_at_its_level():
    log = StepLog("test_case", "SHLD-3", "SHOULD")

    def body(log):
        with log.step("passive open", "R9293-3.10.7.2/third", "MUST"):
            pass
        raise AssertionError("expected RST; received FIN,ACK")

    outcome, steps = run(log, body)
    assert (outcome.name, outcome.verdict, outcome.requirement) == ("test_case", "WARN", "SHLD-3")
    assert steps == {"passive open": "PASS", "test_case": "WARN"}


def test_a_deviation_recorded_for_a_step_lets_the_later_checks_run_and_count():
    log = StepLog("test_case", "RFC5961-3.2", "MUST", {"answered from CLOSED": dev("answered from CLOSED")})
    ran = []

    def body(log):
        with log.step("answered from CLOSED", "R9293-3.10.7.1"):
            raise AssertionError("expected RST seq=1; received RST,ACK seq=1")
        ran.append("recv")
        raise OpError("recv", {"errno": "EAGAIN"})  # the later check fails: it still counts

    outcome, steps = run(log, body)
    assert ran == ["recv"]
    assert (outcome.name, outcome.verdict, outcome.requirement) == ("test_case", "FAIL", "RFC5961-3.2")
    assert steps == {"answered from CLOSED": "EXPECTED", "test_case": "FAIL"}


def test_a_recorded_deviation_and_passing_later_checks_are_expected():
    log = StepLog("test_case", "RFC5961-3.2", "MUST", {"probe": dev("probe")})

    def body(log):
        with log.step("probe", "R9293-3.10.7.1"):
            raise AssertionError("received RST,ACK seq=1")

    outcome, steps = run(log, body)
    assert (outcome.name, outcome.verdict, outcome.requirement) == ("probe", "EXPECTED", "R9293-3.10.7.1")
    assert steps == {"probe": "EXPECTED", "test_case": "PASS"}


def test_a_gate_step_with_a_recorded_deviation_ends_the_case_as_expected():
    log = StepLog("test_case", "MAY-2", "INFO", {"handshake": dev("handshake")})
    ran = []

    def body(log):
        with log.step("handshake", "R9293-3.10.7.3/fourth", gate=True):
            raise AssertionError("received RST,ACK")
        ran.append("after")

    outcome, steps = run(log, body)
    assert not ran
    assert (outcome.name, outcome.verdict) == ("handshake", "EXPECTED")
    assert steps["test_case"] == "NOT RUN"


def test_a_step_that_fails_differently_from_its_record_is_a_fail_and_stops():
    log = StepLog("test_case", "RFC5961-3.2", "MUST", {"probe": dev("probe")})

    def body(log):
        with log.step("probe", "R9293-3.10.7.1"):
            raise AssertionError("received nothing within 1.00 s")

    outcome, _ = run(log, body)
    assert outcome.verdict == "FAIL" and outcome.message.startswith("fails differently")


def test_a_recorded_deviation_whose_step_passed_is_a_fail_of_that_step():
    log = StepLog("test_case", "RFC5961-3.2", "MUST", {"probe": dev("probe")})

    def body(log):
        with log.step("probe", "R9293-3.10.7.1"):
            pass

    outcome, _ = run(log, body)
    assert (outcome.name, outcome.verdict) == ("probe", "FAIL")
    assert "did not occur" in outcome.message


def test_an_intermittent_deviation_that_did_not_show_keeps_the_verdict():
    log = StepLog("test_case", "MAY-2", "INFO", {None: dev(intermittent=True)})
    outcome, _ = run(log, lambda log: None)
    assert outcome.verdict == "INFO"


def test_a_deviation_recorded_for_a_step_the_case_does_not_have_is_a_fail():
    log = StepLog("test_case", "MAY-2", "MUST", {"no such step": dev("no such step")})
    outcome, _ = run(log, lambda log: None)
    assert outcome.verdict == "FAIL" and "which this case does not have" in outcome.message


@pytest.mark.parametrize("exc, verdict", [
    (Unsupported("target linux cannot so_rcvbuf"), "UNSUPPORTED"),
    (AgentError("agent exited"), "ERROR"),
    (KeyError("bug in a case"), "ERROR"),
])
def test_unsupported_and_errors_inside_a_step_are_never_deviations(exc, verdict):
    log = StepLog("test_case", "R9293-3.6", "MUST")

    def body(log):
        with log.step("the target's FIN", "R9293-3.6"):
            raise exc

    outcome, _ = run(log, body)
    assert outcome.verdict == verdict and outcome.name == "the target's FIN"


def test_repeated_step_names_are_numbered_and_unknown_ids_refused():
    log = StepLog("test_case", "MUST-12", "MUST")
    with log.step("passive open", "R9293-3.10.7.2/third"):
        pass
    with log.step("passive open", "R9293-3.10.7.2/third") as second:
        pass
    assert second.name == "passive open #2"
    with pytest.raises(KeyError, match="MUST-999"):
        log.step("x", "MUST-999")
    with pytest.raises(ValueError, match="level 'OFTEN'"):
        log.step("x", "MUST-12", "OFTEN")


def test_an_outer_step_stops_with_the_inner_step_that_failed():
    log = StepLog("test_case", "R9293-3.6", "MUST")

    def body(log):
        with log.step("outer", "R9293-3.6"):
            with log.step("inner", "R9293-3.10.7.4/eighth"):
                raise AssertionError("expected ACK; received nothing")

    outcome, steps = run(log, body)
    assert (outcome.name, outcome.verdict) == ("inner", "FAIL")
    assert steps == {"outer": "NOT RUN", "inner": "FAIL", "test_case": "NOT RUN"}


def test_a_step_failure_the_case_caught_still_decides_the_verdict():
    log = StepLog("test_case", "R9293-3.6", "MUST")

    def body(log):
        try:
            with log.step("probe", "R9293-3.10.7.1"):
                raise AssertionError("expected RST; received nothing")
        except AssertionError:
            pass

    outcome, _ = run(log, body)
    assert (outcome.name, outcome.verdict, outcome.requirement) == ("probe", "FAIL", "R9293-3.10.7.1")


def test_a_deviation_recorded_for_a_repeated_step_covers_every_occurrence():
    log = StepLog("test_case", "MUST-12", "MUST", {"passive open": dev("passive open")})
    ran = []

    def body(log):
        for _ in range(2):
            with log.step("passive open", "R9293-3.10.7.2/third"):
                raise AssertionError("received RST,ACK")
            ran.append("after")

    outcome, steps = run(log, body)
    assert ran == ["after", "after"]
    assert steps == {"passive open": "EXPECTED", "passive open #2": "EXPECTED", "test_case": "PASS"}
