"""bench/soak.py's comparison of runs: which cases changed verdict, deciding step or choices."""
import importlib.util
import os
import signal
import time

import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "soak.py")
_spec = importlib.util.spec_from_file_location("soak", _PATH)
soak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)


def rec(case, verdict="PASS", step=None, choices=None, target="pytcp", message="", notes=None):
    return {"case": case, "target": target, "verdict": verdict, "step": step, "choices": choices or {},
            "message": message, "notes": notes or {}}


def doc(*records):
    return {"results": list(records)}


def test_identical_runs_show_no_change_whatever_their_notes_and_messages():
    a = doc(rec("c1", notes={"rtt": 1}, message="ports 1 2"), rec("c2", "EXPECTED", "s", {"k": "v"}))
    b = doc(rec("c1", notes={"rtt": 9}, message="ports 3 4"), rec("c2", "EXPECTED", "s", {"k": "v"}))
    assert soak.changes([a, b, a]) == {}


@pytest.mark.parametrize("field,before,after", [
    ("verdict", "PASS", "EXPECTED"),
    ("step", None, "the SYN in TIME-WAIT is answered"),
    ("choices", {"reopen_rule": "sequence"}, {"reopen_rule": "refused"}),
    ("choices", {}, {"ISN": "clock-driven"}),
])
def test_a_change_of_verdict_step_or_choices_is_reported_with_its_runs(field, before, after):
    def one(value):
        kw = {"verdict": "PASS", "step": None, "choices": None, field: value}
        return doc(rec("c1", **kw), rec("c2"))
    found = soak.changes([one(before), one(after), one(before)])
    assert list(found) == [("c1", "pytcp")]
    assert sorted(found[("c1", "pytcp")].values()) == [[1, 3], [2]]


def test_choices_compare_by_content_not_key_order():
    a = doc(rec("c1", choices={"x": 1, "y": 2}))
    b = doc(rec("c1", choices={"y": 2, "x": 1}))
    assert soak.changes([a, b]) == {}


def test_the_same_case_on_two_targets_is_two_pairs():
    a = doc(rec("c1", target="lwip"), rec("c1", target="pytcp"))
    b = doc(rec("c1", target="lwip"), rec("c1", "FAIL", target="pytcp"))
    assert list(soak.changes([a, b])) == [("c1", "pytcp")]


def test_a_case_missing_from_a_readable_run_is_a_change_and_an_unreadable_run_is_left_out():
    a = doc(rec("c1"), rec("c2"))
    b = doc(rec("c1"))
    found = soak.changes([a, None, b])
    assert list(found) == [("c2", "pytcp")]
    assert found[("c2", "pytcp")] == {soak.outcome(rec("c2")): [1], None: [3]}


def test_the_text_of_an_outcome_is_its_signature_else_its_message_else_its_notes():
    def failed(message, signature=None):
        r = rec("c1", "EXPECTED", message=message)
        r["signature"] = signature
        return doc(r)
    docs = [failed("recorded deviation (RFC x): why\nexpected A; received B", "expected A; received B"),
            failed("recorded deviation (RFC x): why\nexpected A; received B", "expected A; received B"),
            failed("expected A; received C\ndetail"),
            doc(rec("c1", "INFO", notes={"rate": 2}))]
    assert soak.messages(docs, ("c1", "pytcp"), [1, 2, 3, 4]) == [
        "expected A; received B", "expected A; received C", 'notes: {"rate": 2}']


def test_spans():
    assert soak.spans([1, 2, 3, 5, 7, 8]) == "1-3, 5, 7-8"
    assert soak.spans([4]) == "4"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_the_load_is_busy_while_it_runs_and_gone_afterwards_even_on_an_exception():
    with pytest.raises(KeyboardInterrupt):
        with soak.Load(2) as load:
            pids = [p.pid for p in load.procs]
            time.sleep(0.3)
            assert len(pids) == 2 and all(_alive(pid) for pid in pids)
            with open(f"/proc/{pids[0]}/stat") as f:
                assert int(f.read().split(")")[-1].split()[11]) > 0  # utime: it spins
            raise KeyboardInterrupt  # as Ctrl-C would (a signal may be ignored where the tests run)
    assert not any(_alive(pid) for pid in pids)
