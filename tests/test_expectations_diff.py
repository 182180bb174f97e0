"""synfin-expectations diff: what a run says should change in expectations/<target>.toml."""
import json
import os
import shutil

import jsonschema
import pytest

from harness import expectations
from harness.expectations_diff import SCHEMA_PATH, main, stable_text

STARTED = "2025-01-02T03:04:05+00:00"
RFC = "RFC 9293 §3.10.7.1"

LWIP = '''\
# Known deviations of a test stack (see harness/expectations.py for the format).
# A second line of the file's own comment.

[[deviation]]
case = "cases/a.py::test_rst"
observed = "received RST,ACK seq=0"
rfc = "RFC 9293 §3.10.7.1"
why = "always sets ACK"

[[deviation]]
case = "cases/a.py::test_probe"
step = "answered from CLOSED"
# the probe that follows the abort
observed = "; received RST,ACK"
rfc = "RFC 9293 §3.10.7.1"
why = """the RST from CLOSED
carries ACK"""

[[deviation]]
case = "cases/a.py::test_reopen"
observed = ["MAY-2 (1): the new ISS", "assert 'FIN-WAIT-1' == 'ESTABLISHED'"]
intermittent = true
rfc = "RFC 9293 §3.6.1"
why = "depends on how two hashed ISNs compare"
'''

RST_ACK = "expected RST seq=0 (no ACK); received RST,ACK seq=0 ack=1 win=0 len=0\non peer 198.18.0.1:40000"
PROBE_RST_ACK = ("expected RST seq=1 (from CLOSED: SEQ = SEG.ACK); received RST,ACK seq=1 ack=12 win=65407 len=0\n"
                 "data after the abort must get a RST")
REOPEN = "MAY-2 (1): the new ISS 0x00001000 lies below the old SND.NXT 0x00002000"


# -- building results documents ----------------------------------------------------------------
def step(name, verdict, message="", requirement="R9293-3.10.7.1", level="MUST"):
    out = {"step": name, "requirement": requirement, "level": level, "verdict": verdict}
    if message:
        out["message"] = message
        out["observed"] = message.split("\n")[0] if verdict in ("FAIL", "WARN", "EXPECTED") else None
    return out


def expected(message, rfc=RFC, why="always sets ACK"):
    """What the harness makes of a deviation seen as recorded."""
    return f"recorded deviation ({rfc}): {why}\n{message}"


def entry(observed, step_name=None, seen=True, why="always sets ACK", rfc=RFC, intermittent=False):
    return {"step": step_name, "observed": observed, "rfc": rfc, "why": why, "intermittent": intermittent,
            "seen": seen}


def record(case, body_verdict, body_message="", *, steps=(), target="lwip", recorded=()):
    """A record as a run writes it: the lab steps, then the case's body; the first failed step
    (else the first EXPECTED one, else the body) decides."""
    body = case.split("::")[-1].split("[")[0]
    all_steps = [*steps, step(body, body_verdict, body_message)]
    failed = [s for s in all_steps if s["verdict"] in ("FAIL", "WARN", "ERROR", "UNSUPPORTED")]
    decided = (failed or [s for s in all_steps if s["verdict"] == "EXPECTED"] or [all_steps[-1]])[0]
    message = decided.get("message", "")
    return {
        "case": case, "nodeid": f"{case}[{target}]", "target": target, "area": "reset",
        "requirement": decided["requirement"], "level": decided["level"], "verdict": decided["verdict"],
        "step": None if decided is all_steps[-1] else decided["step"],
        "case_requirement": "R9293-3.10.7.1", "case_level": "MUST", "message": message,
        "signature": decided.get("observed"), "steps": all_steps, "expectations": list(recorded),
        "expectation_met": decided["verdict"] not in ("FAIL", "ERROR"),
        "durations": {"call": 0.1, "wall": 0.2}, "rerun": f".venv/bin/pytest '{case}' --target={target}",
    }


def document(*records, targets=None):
    names = targets or sorted({r["target"] for r in records})
    return {
        "schema": "synfin-results/1", "synfin": {"version": "0.1.0", "commit": None},
        "started": STARTED, "finished": STARTED, "targets": {
            n: {"name": n, "stack": n, "version": "1", "runtime": "docker"} for n in names},
        "results": list(records),
    }


with open(SCHEMA_PATH, encoding="utf-8") as _f:
    SCHEMA = json.load(_f)


@pytest.fixture
def exp_dir(tmp_path):
    d = tmp_path / "expectations"
    d.mkdir()
    (d / "lwip.toml").write_text(LWIP, encoding="utf-8")
    return d


@pytest.fixture
def run(tmp_path, exp_dir, capsys):
    """run(*records, write=False) -> (exit status, stdout); the document is checked against the schema."""
    def go(*records, write=False, doc=None, directory=None):
        doc = doc or document(*records)
        jsonschema.validate(doc, SCHEMA)
        path = tmp_path / "results.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        argv = ["diff", str(path), "--expectations", str(directory or exp_dir)] + (["--write"] if write else [])
        status = main(argv)
        out, err = capsys.readouterr()
        assert err == ""
        return status, out
    return go


def as_recorded():
    """Every deviation of LWIP showing as recorded."""
    return [
        record("cases/a.py::test_rst", "EXPECTED", expected(RST_ACK), recorded=[entry("received RST,ACK seq=0")]),
        record("cases/a.py::test_probe", "PASS", steps=[
            step("answered from CLOSED", "EXPECTED", expected(PROBE_RST_ACK, why="the RST from CLOSED\ncarries ACK"))],
            recorded=[entry("; received RST,ACK", "answered from CLOSED", why="the RST from CLOSED\ncarries ACK")]),
        record("cases/a.py::test_reopen", "EXPECTED", expected(REOPEN, "RFC 9293 §3.6.1", "depends"),
               recorded=[entry(["MAY-2 (1): the new ISS", "assert 'FIN-WAIT-1' == 'ESTABLISHED'"], rfc="RFC 9293 §3.6.1",
                               why="depends", intermittent=True)]),
    ]


def replaced(records, case, new):
    return [new if r["case"] == case else r for r in records]


# -- what the run says -------------------------------------------------------------------------
def test_a_run_that_shows_every_deviation_as_recorded_shows_no_difference(run, exp_dir):
    status, out = run(*as_recorded())
    assert status == 0
    assert out == "lwip: 0 appeared, 0 disappeared, 0 changed\n"
    assert (exp_dir / "lwip.toml").read_text(encoding="utf-8") == LWIP


def test_a_new_deviation_appears_with_a_stable_observed_text_and_a_why_to_fill_in(run, exp_dir):
    new = record("cases/b.py::test_new", "FAIL",
                 "expected RST seq=3754285292 len=0 (SEQ = SEG.ACK, no ACK); "
                 "received RST,ACK seq=3754285292 ack=0 win=65407 len=0\non peer 198.18.0.1:55601")
    status, out = run(*as_recorded(), new)
    assert status == 1
    lines = out.splitlines()
    assert lines[0] == "# lwip: appeared    cases/b.py::test_new: " + new["steps"][-1]["observed"]
    assert lines[1].startswith("--- ") and lines[1].endswith("lwip.toml")
    assert lines[2] == f"+++ {lines[1][4:]} (from {exp_dir.parent / 'results.json'})"
    added = [line[1:] for line in out.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert added == [
        "", "[[deviation]]", 'case = "cases/b.py::test_new"',
        'observed = "(SEQ = SEG.ACK, no ACK); received RST,ACK seq="',
        'rfc = "RFC 9293 §3.10.7.1, §3.5.2; RFC 1122 4.2.2.x"',
        f'why = "UNEXPLAINED: seen in run {STARTED}; say why (the stack\'s source line)"',
    ]
    assert "lwip: 1 appeared, 0 disappeared, 0 changed" in out.splitlines()
    assert (exp_dir / "lwip.toml").read_text(encoding="utf-8") == LWIP  # nothing written without --write


@pytest.mark.parametrize("verdict", ["FAIL", "WARN"])
def test_a_new_deviation_at_a_step_is_recorded_for_that_step(run, verdict):
    new = record("cases/b.py::test_close", "NOT RUN", "the case stopped at step \"the target's FIN\"", steps=[
        step("passive open", "PASS"),
        step("the target's FIN", verdict, "expected FIN,ACK seq=1 ack=1 len=0 (FIN at SND.NXT); "
             "received nothing within 1.00 s", requirement="R9293-3.6")])
    status, out = run(*as_recorded(), new)
    assert status == 1
    assert "+step = \"the target's FIN\"" in out
    assert '+observed = "(FIN at SND.NXT); received nothing within "' in out
    assert '+rfc = "RFC 9293 §3.6 Fig. 12"' in out


@pytest.mark.parametrize("body", [("PASS", ""), ("FAIL", "the recorded deviation did not occur (RFC 9293 §3.10.7.1: "
                                                          "'received RST,ACK seq=0'); if the stack was fixed, remove it")])
def test_a_deviation_that_no_longer_shows_disappears(run, exp_dir, body):
    status, out = run(*replaced(as_recorded(), "cases/a.py::test_rst", record("cases/a.py::test_rst", *body)),
                      write=True)
    assert status == 1
    removed = [line[1:] for line in out.splitlines() if line.startswith("-") and not line.startswith("---")]
    assert sorted(removed) == sorted(["[[deviation]]", 'case = "cases/a.py::test_rst"', 'rfc = "RFC 9293 §3.10.7.1"',
                                      'observed = "received RST,ACK seq=0"', 'why = "always sets ACK"', ""])
    assert "lwip: 0 appeared, 1 disappeared, 0 changed" in out.splitlines()
    block = LWIP[LWIP.index("[[deviation]]"):LWIP.index("[[deviation]]", LWIP.index("[[deviation]]") + 1)]
    assert (exp_dir / "lwip.toml").read_text(encoding="utf-8") == LWIP.replace(block, "")


def test_a_record_for_a_step_the_case_does_not_have_disappears_with_its_comment(run, exp_dir):
    stale = record("cases/a.py::test_probe", "FAIL",
                   "a deviation is recorded for step 'answered from CLOSED', which this case does not have (steps: none)")
    status, out = run(*replaced(as_recorded(), "cases/a.py::test_probe", stale), write=True)
    assert status == 1
    text = (exp_dir / "lwip.toml").read_text(encoding="utf-8")
    assert "test_probe" not in text and "# the probe that follows the abort" not in text
    assert set(expectations.load("lwip", str(exp_dir))) == {"cases/a.py::test_rst", "cases/a.py::test_reopen"}


def test_a_deviation_that_shows_differently_gets_the_new_text(run, exp_dir):
    now = "expected RST seq=0 (no ACK); received FIN,ACK seq=0 ack=1 win=0 len=0"
    changed = record("cases/a.py::test_rst", "FAIL",
                     f"fails differently from the recorded deviation (expected to see 'received RST,ACK seq=0'):\n{now}",
                     recorded=[entry("received RST,ACK seq=0", seen=False)])
    status, out = run(*replaced(as_recorded(), "cases/a.py::test_rst", changed), write=True)
    assert status == 1
    assert '-observed = "received RST,ACK seq=0"' in out
    assert '+observed = "(no ACK); received FIN,ACK seq=0 ack=1 "' in out
    assert "lwip: 0 appeared, 0 disappeared, 1 changed" in out.splitlines()
    # Only that line changed: the why, the other blocks and every comment are as they were.
    assert (exp_dir / "lwip.toml").read_text(encoding="utf-8") == LWIP.replace(
        'observed = "received RST,ACK seq=0"', 'observed = "(no ACK); received FIN,ACK seq=0 ack=1 "')


def test_a_list_of_alternatives_gets_the_new_one_added(run, exp_dir):
    changed = record("cases/a.py::test_reopen", "FAIL", "fails differently from the recorded deviation (...):\n"
                     "assert 'CLOSE-WAIT' == 'ESTABLISHED'")
    status, _ = run(*replaced(as_recorded(), "cases/a.py::test_reopen", changed), write=True)
    assert status == 1
    deviation = expectations.load("lwip", str(exp_dir))["cases/a.py::test_reopen"][None]
    assert deviation.observed == ("MAY-2 (1): the new ISS", "assert 'FIN-WAIT-1' == 'ESTABLISHED'",
                                  "assert 'CLOSE-WAIT' == 'ESTABLISHED'")
    assert deviation.intermittent


def test_a_second_instance_of_a_step_that_shows_it_differently_keeps_both_texts(run, exp_dir):
    why = "the RST from CLOSED\ncarries ACK"
    twice = record("cases/a.py::test_probe", "PASS", steps=[
        step("answered from CLOSED", "EXPECTED", expected(PROBE_RST_ACK, why=why)),
        step("answered from CLOSED #2", "FAIL", "fails differently from the recorded deviation (...):\n"
             "expected RST seq=1 (from CLOSED); received nothing within 1.00 s")],
        recorded=[entry("; received RST,ACK", "answered from CLOSED", why=why)])
    status, _ = run(*replaced(as_recorded(), "cases/a.py::test_probe", twice), write=True)
    assert status == 1
    probe = expectations.load("lwip", str(exp_dir))["cases/a.py::test_probe"]
    assert probe["answered from CLOSED"].observed == ("; received RST,ACK", "(from CLOSED); received nothing within ")


def test_an_intermittent_deviation_that_did_not_show_is_left_alone(run, exp_dir):
    status, out = run(*replaced(as_recorded(), "cases/a.py::test_reopen", record("cases/a.py::test_reopen", "INFO")),
                      write=True)
    assert status == 0
    assert "lwip: 0 appeared, 0 disappeared, 0 changed (left alone: 1 intermittent not seen)" in out.splitlines()
    assert (exp_dir / "lwip.toml").read_text(encoding="utf-8") == LWIP


def test_the_deviations_of_cases_not_run_are_left_alone(run, exp_dir):
    only = record("cases/a.py::test_rst", "PASS")
    status, out = run(only, write=True)
    assert status == 1
    assert "lwip: 0 appeared, 1 disappeared, 0 changed (left alone: 2 in cases not run)" in out.splitlines()
    loaded = expectations.load("lwip", str(exp_dir))
    assert set(loaded) == {"cases/a.py::test_probe", "cases/a.py::test_reopen"}


def test_a_step_the_case_did_not_reach_is_left_alone(run, exp_dir):
    # A new deviation at the opening stops the case before the step with the recorded deviation.
    stopped = record("cases/a.py::test_probe", "NOT RUN", "the case stopped at step 'passive open'", steps=[
        step("passive open", "FAIL", "expected SYN,ACK ack=1 (SYN-ACK for our SYN); received nothing within 1.00 s",
             requirement="R9293-3.10.7.2/third")])
    status, out = run(*replaced(as_recorded(), "cases/a.py::test_probe", stopped), write=True)
    assert status == 1
    assert "lwip: 1 appeared, 0 disappeared, 0 changed (left alone: 1 at steps not reached)" in out.splitlines()
    probe = expectations.load("lwip", str(exp_dir))["cases/a.py::test_probe"]
    assert set(probe) == {"answered from CLOSED", "passive open"}
    assert probe["answered from CLOSED"].observed == "; received RST,ACK"


@pytest.mark.parametrize("verdict", ["ERROR", "UNSUPPORTED"])
def test_a_case_that_ended_in_error_or_unsupported_is_not_judged(run, exp_dir, verdict):
    broken = record("cases/a.py::test_rst", verdict, "AgentError: the agent did not answer")
    status, out = run(*replaced(as_recorded(), "cases/a.py::test_rst", broken), write=True)
    assert status == 0
    assert "(left alone: 1 in ERROR/UNSUPPORTED cases)" in out
    assert (exp_dir / "lwip.toml").read_text(encoding="utf-8") == LWIP


def test_a_target_that_did_not_start_is_left_alone(run, exp_dir):
    doc = document(*as_recorded(), targets=["lwip", "pytcp"])
    doc["targets"]["pytcp"]["error"] = "image build failed"
    status, out = run(doc=doc)
    assert status == 0
    assert "pytcp: not run (image build failed); left alone" in out.splitlines()


# -- writing -----------------------------------------------------------------------------------
def test_write_round_trip_keeps_comments_loads_and_leaves_nothing_to_diff(run, exp_dir):
    records = replaced(as_recorded(), "cases/a.py::test_rst", record("cases/a.py::test_rst", "PASS"))
    records.append(record("cases/b.py::test_new", "WARN", "recv() after the RST returned 100 bytes of unread data"))
    records.append(record("cases/b.py::test_silence", "FAIL",
                          "expected silence for 1.00 s on peer 198.18.0.1:46268 ⇄ target 198.18.0.2:42003, peer ISS "
                          "0xd47562e8, target ISS 0x95a391b6, but the target sent:\n    RST,ACK seq=5 ack=1 win=0 len=0"))
    status, out = run(*records, write=True)
    assert status == 1
    assert "wrote " in out.splitlines()[-1] and out.splitlines()[-1].endswith("lwip.toml")
    text = (exp_dir / "lwip.toml").read_text(encoding="utf-8")
    for comment in ("# Known deviations of a test stack", "# A second line of the file's own comment.",
                    "# the probe that follows the abort"):
        assert comment in text
    assert '"""the RST from CLOSED\ncarries ACK"""' in text  # a multi-line string stays one
    loaded = expectations.load("lwip", str(exp_dir))
    assert "cases/a.py::test_rst" not in loaded
    assert loaded["cases/b.py::test_new"][None].why.startswith("UNEXPLAINED: seen in run")
    assert loaded["cases/b.py::test_silence"][None].observed == "but the target sent:\n    RST,ACK seq=5 ack=1 "
    # The next run that shows the same: no difference left.
    again = [r for r in records if r["case"] != "cases/b.py::test_new"] + [
        record("cases/b.py::test_new", "EXPECTED", expected("recv() after the RST returned 100 bytes of unread data",
                                                             loaded["cases/b.py::test_new"][None].rfc, "UNEXPLAINED"))]
    status, out = run(*again)
    assert (status, out) == (0, "lwip: 0 appeared, 0 disappeared, 0 changed\n")


def test_the_same_results_diffed_again_after_write_show_nothing(run, exp_dir):
    changed = record("cases/a.py::test_rst", "FAIL", "fails differently from the recorded deviation (...):\n"
                     "expected RST seq=0 (no ACK); received nothing within 0.50 s")
    records = replaced(as_recorded(), "cases/a.py::test_rst", changed)
    assert run(*records, write=True)[0] == 1
    assert run(*records) == (0, "lwip: 0 appeared, 0 disappeared, 0 changed\n")


def test_the_projects_own_files_come_through_a_full_round_trip(tmp_path, run):
    """On a copy of expectations/: every deviation as recorded is no difference; every case
    passing removes all but the intermittent ones and keeps the files' opening comments."""
    copy = tmp_path / "copy"
    shutil.copytree(expectations.DEFAULT_DIR, copy)
    targets = sorted(f[:-5] for f in os.listdir(copy) if f.endswith(".toml"))
    shown, passing = [], []
    for target in targets:
        for case, steps in expectations.load(target, str(copy)).items():
            first = {n: d.observed if isinstance(d.observed, str) else d.observed[0] for n, d in steps.items()}
            shows = {n: expected(first[n], d.rfc, d.why) for n, d in steps.items()}
            lab_steps = [n for n in steps if n is not None]
            recorded = [entry(d.observed if isinstance(d.observed, str) else list(d.observed), n, rfc=d.rfc,
                              why=d.why, intermittent=d.intermittent) for n, d in steps.items()]
            body = ("EXPECTED", shows[None]) if None in steps else ("PASS",)
            shown.append(record(case, *body, steps=[step(n, "EXPECTED", shows[n]) for n in lab_steps],
                                target=target, recorded=recorded))
            passing.append(record(case, "PASS", steps=[step(n, "PASS") for n in lab_steps], target=target))
    before = {t: (copy / f"{t}.toml").read_text(encoding="utf-8") for t in targets}
    status, out = run(*shown, directory=copy)
    assert status == 0, out
    fixed = any(not d.intermittent for t in targets for steps in expectations.load(t, str(copy)).values()
                for d in steps.values())
    status, out = run(*passing, directory=copy, write=True)
    assert status == (1 if fixed else 0)
    for target in targets:
        text = (copy / f"{target}.toml").read_text(encoding="utf-8")
        opening = before[target].split("[[deviation]]")[0].strip()
        assert text.startswith(opening)
        left = expectations.load(target, str(copy))
        assert all(d.intermittent for steps in left.values() for d in steps.values())
    assert run(*passing, directory=copy)[0] == 0


# -- bad input ---------------------------------------------------------------------------------
def _bad(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("argv", [
    lambda t, e: ["diff", str(t / "missing.json"), "--expectations", e],
    lambda t, e: ["diff", _bad(t, "cut.json", json.dumps(document(*as_recorded()))[:300]), "--expectations", e],
    lambda t, e: ["diff", _bad(t, "v2.json", json.dumps({**document(), "schema": "synfin-results/2"})),
                  "--expectations", e],
    lambda t, e: ["diff", _bad(t, "bad.json", json.dumps({**document(), "results": [{"case": "x"}]})),
                  "--expectations", e],
    lambda t, e: ["diff", _bad(t, "list.json", "[]"), "--expectations", e],
    lambda t, e: ["diff", "--expectations", e],
    lambda t, e: [],
    lambda t, e: ["diff", _bad(t, "ok.json", json.dumps(document())), "--expectations", str(t / "nowhere")],
    lambda t, e: ["diff", _bad(t, "ok.json", json.dumps(document())), "--bogus"],
    lambda t, e: ["merge", "x.json"],
], ids=["unknown file", "truncated JSON", "schema version", "not the schema", "not an object", "no input",
        "no command", "no expectations dir", "unknown option", "unknown command"])
def test_bad_input_exits_4_with_one_line_and_no_traceback(tmp_path, exp_dir, capsys, argv):
    status = main(argv(tmp_path, str(exp_dir)))
    out, err = capsys.readouterr()
    assert status == 4
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("synfin-expectations: ") and "Traceback" not in err
    assert (exp_dir / "lwip.toml").read_text(encoding="utf-8") == LWIP


def test_an_expectations_file_that_does_not_load_is_bad_input(tmp_path, exp_dir, capsys):
    (exp_dir / "lwip.toml").write_text('[[deviation]]\ncase = "c"\n', encoding="utf-8")
    path = _bad(tmp_path, "r.json", json.dumps(document(*as_recorded())))
    assert main(["diff", path, "--expectations", str(exp_dir)]) == 4
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "lacks" in err


# -- the observed text ---------------------------------------------------------------------------
@pytest.mark.parametrize("message, text", [
    ("expected RST,ACK seq=0 ack=2 len=0 (ack = SEG.SEQ+2); received RST,ACK seq=0 ack=1 win=65407 len=0",
     "(ack = SEG.SEQ+2); received RST,ACK seq=0 ack=1 "),
    ("expected RST (±ACK) seq=2 (RST at SND.NXT (after the FIN)); received ACK seq=2 ack=101 win=65435 len=0",
     "(RST at SND.NXT (after the FIN)); received ACK seq=2 ack=101 "),
    ("expected SYN,ACK ack=1 (reopened) or ACK seq=1808195624 ack=-100000 len=0 (refused: TIME-WAIT's ACK); "
     "received nothing within 0.50 s", "(refused: TIME-WAIT's ACK); received nothing within "),
    ("expected SYN,ACK ack=1 (SYN-ACK); received SYN,ACK seq=0 ack=1 win=64240 len=0 [mss 1460, TS val=9 ecr=0] (+2 more)",
     "(SYN-ACK); received SYN,ACK seq=0 ack=1 "),
    ("expected RST seq=0; received RST,ACK seq=0 ack=1 win=0 len=0", "received RST,ACK seq=0 ack=1 "),
    ("expected ACK seq=1 ack=1 len=0 (final ACK of the handshake); received ACK seq=-5671 ack=1173459838 win=65535 "
     "len=0 [TS val=466910 ecr=1111241985] (+1 more)", "(final ACK of the handshake); received ACK seq="),
    ("recv() after the RST returned 100 bytes of unread data instead of failing\nassert not b'uu'",
     "recv() after the RST returned 100 bytes of unread data instead of failing"),
])
def test_the_observed_text_leaves_out_what_varies_between_runs(message, text):
    assert stable_text(message) == text
    assert text in message
