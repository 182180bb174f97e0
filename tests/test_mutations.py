"""The mutation suite: synfin must notice a broken stack, exactly where it is broken.

The Linux target is broken on purpose, one fault at a time, inside its own namespace
(tests/stack_faults.py): its outbound RSTs dropped, its FINs dropped, its pure ACKs dropped,
tcp_rfc1337=1, tcp_timestamps=0. Which cases must change is derived from what each case checked
in a run without the fault (the target segments its checks matched, the settings it read), not
from a list copied from one run. For each fault: every case that must change changes, none of
them ends PASS or ERROR, and no other case changes (a verdict, the requirement it is charged to,
or what the stack chose).
"""
import os

import pytest
from suite import run_suite

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="building labs needs root")


def _checked(record, segment) -> bool:
    """Some check of the case was satisfied by a target segment for which `segment(got, check)`."""
    return any("got" in c and segment(c["got"], c) for c in record["checks"])


def _read(record, name: str, unless: str) -> bool:
    """The case read the setting (rather than setting it itself) and saw another value."""
    value = record["settings"].get(name)
    return value is not None and "set by the case" not in value and value != unless


# fault -> which cases it must change, judged on the case's record from a run without it
MUST_CHANGE = {
    "drop-rst": lambda r: _checked(r, lambda got, c: "R" in got["flags"]),
    "drop-fin": lambda r: _checked(r, lambda got, c: "F" in got["flags"]),
    # A pure ACK the case waited for while the target had unacknowledged data or FIN out may
    # arrive piggybacked on the retransmission instead (allowed: segments.Seg.piggybacked).
    "drop-pure-ack": lambda r: _checked(r, lambda got, c: got["flags"] == "A" and got["len"] == 0
                                        and not c["retransmission_may_carry_it"]),
    "rfc1337": lambda r: _read(r, "net.ipv4.tcp_rfc1337", unless="1"),
    # Negotiated timestamps: a segment after the SYNs carries the option (RFC 7323 §3.2).
    # Or the case read tcp_timestamps as it found it (whether the target offers the option at all).
    "no-timestamps": lambda r: (_checked(r, lambda got, c: got["timestamps"] and "S" not in got["flags"])
                                or _read(r, "net.ipv4.tcp_timestamps", unless="0")),
}


# fault -> the cases it may change besides: a pure ACK a retransmission may carry instead can be
# carried (same verdict) or not; which answer the case then records (its choice) may differ, and a
# case that allows no such choice can fail.
MAY_CHANGE = {
    "drop-pure-ack": lambda r: _checked(r, lambda got, c: got["flags"] == "A" and got["len"] == 0
                                        and c["retransmission_may_carry_it"]),
}


def outcome(record) -> tuple:
    return record["verdict"], record["requirement"], record.get("step"), sorted(record["choices"].items())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs of the not-slow cases on linux (two workers), one per fault (None: unbroken), made once per module."""
    made, runs_made = {}, {}

    def run(fault=None):
        if fault not in made:
            results = tmp_path_factory.mktemp(fault or "unbroken")
            proc, got = run_suite(results, "-m", "not slow", "-n", "2", fault=fault)
            assert got, f"the run with {fault} wrote no results:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            made[fault], runs_made[fault] = got, (proc, results)
        return made[fault]

    def process(fault=None):
        """The run's process (its exit code, its output) and its results directory."""
        run(fault)
        return runs_made[fault]

    run.process = process
    return run


@pytest.mark.parametrize("fault", list(MUST_CHANGE))
def test_each_fault_changes_exactly_the_cases_that_check_what_it_breaks(runs, fault):
    before, after = runs(None), runs(fault)
    assert set(after) == set(before), "cases went missing or appeared under the fault"
    should = {case for case, record in before.items() if MUST_CHANGE[fault](record)}
    may = {case for case, record in before.items() if MAY_CHANGE.get(fault, lambda r: False)(record)} - should
    changed = {case for case in before if outcome(before[case]) != outcome(after[case])}
    killed = should & changed
    print(f"\n{fault}: kill rate {len(killed)}/{len(should)}, collateral {len(changed - should - may)}, "
          f"allowed to change {len(changed & may)}/{len(may)}")
    assert should, f"no case checks what {fault} breaks: the derivation is wrong"

    def show(cases):
        return "\n  ".join(f"{c}: {outcome(before[c])} -> {outcome(after[c])}" for c in sorted(cases))

    assert not should - changed, f"{fault} went unnoticed by:\n  {show(should - changed)}"
    assert not changed - should - may, \
        f"{fault} changed cases that do not check what it breaks:\n  {show(changed - should - may)}"
    # tcp_rfc1337 = 1 breaks nothing: it switches between two answers the RFCs allow (RFC 9293's reset,
    # RFC 1337's F1), so a case that allows both stays PASS and records the other choice.
    allowed = ("ERROR",) if fault == "rfc1337" else ("PASS", "ERROR")
    wrong = {c for c in should if after[c]["verdict"] in allowed}
    assert not wrong, f"under {fault} these ended {' or '.join(allowed)}:\n  {show(wrong)}"


# -- what the careful run saw go wrong, each shown by one fault ---------------------------
STEP_CASES = [
    "cases/close/test_data_lost_at_close.py::test_data_after_full_close_gets_rst",
    "cases/time_wait/test_reopen.py::test_syn_with_newer_timestamp_reopens_time_wait",
    "cases/time_wait/test_time_wait.py::test_rst_in_time_wait_is_ignored_when_rfc1337_is_on",
]


@pytest.mark.parametrize("case", STEP_CASES)
def test_a_broken_must_on_the_way_is_charged_to_that_must_not_to_the_cases_should(runs, case):
    record = runs("drop-fin")[case]
    assert (record["verdict"], record["requirement"], record["level"]) == ("FAIL", "R9293-3.6", "MUST"), record
    assert record["step"] == "the target's FIN"
    assert record["case_level"] == "SHOULD"
    assert record["message"].startswith("expected FIN,ACK seq=1 ack=1 len=0 (FIN at SND.NXT); received nothing")
    steps = {s["step"]: s["verdict"] for s in record["steps"]}
    assert steps["passive open"] == "PASS" and steps["the target's FIN"] == "FAIL"


TIMESTAMP_CASES = [
    "cases/time_wait/test_reopen.py::test_syn_with_newer_timestamp_reopens_time_wait",
    "cases/time_wait/test_reopen.py::test_target_reconnects_from_its_bound_time_wait_port_with_timestamps",
    "cases/time_wait/test_reopen.py::test_target_reuses_a_time_wait_port_as_ephemeral_port_with_tcp_tw_reuse",
]


@pytest.mark.parametrize("case", TIMESTAMP_CASES)
def test_timestamps_switched_off_is_a_missing_precondition_not_a_deviation(runs, case):
    record = runs("no-timestamps")[case]
    assert record["verdict"] == "UNSUPPORTED", record
    assert record["message"].startswith("precondition not met:") and "timestamp" in record["message"].lower()
    assert record["settings"]["net.ipv4.tcp_timestamps"] == "0"
    assert "net.ipv4.tcp_timestamps = 0" in record["message"]


def test_silence_after_a_rst_in_time_wait_is_a_failure_not_an_assassination(runs):
    record = runs("drop-rst")["cases/time_wait/test_time_wait.py::test_rst_in_time_wait_policy"]
    assert record["verdict"] == "FAIL", record
    assert record["requirement"] == "R9293-3.10.7.2/second"
    assert record["step"] == "the old FIN is answered"
    assert "received nothing" in record["message"].splitlines()[0]
    assert not record["choices"], "no policy may be recorded from silence"


def test_an_ack_piggybacked_on_the_fin_retransmission_is_accepted(runs):
    # Pure ACKs dropped: the ACK of the peer's FIN in CLOSING arrives on the FIN's retransmission.
    after = runs("drop-pure-ack")
    closing = after["cases/close/test_simultaneous_close.py::test_fin_not_acking_ours_leads_to_closing_then_time_wait"]
    assert closing["verdict"] == "PASS", closing["message"]
    piggybacked = [c for c in closing["checks"] if c["step"] != "passive open" and c.get("got", {}).get("flags") == "FA"]
    assert any("ACK of the peer's FIN" in c["expected"][0] for c in piggybacked), closing["checks"]
    # In FIN-WAIT-1 the ACK of the data rides on the FIN's retransmission too; the case then fails
    # only where no retransmission can carry the ACK (FIN-WAIT-2).
    half = after["cases/close/test_half_close.py::test_after_shutdown_wr_the_target_still_receives_and_acks"]
    assert half["verdict"] == "FAIL"
    assert "(ACK of 100 bytes in FIN-WAIT-2); received nothing" in half["message"].splitlines()[0]


def test_dropped_rsts_turn_exactly_the_rst_cases_red_exit_1_and_marked_against_the_baseline(runs, tmp_path):
    from harness.report import cli as report_cli
    from test_report import cells_of

    before, after = runs(None), runs("drop-rst")
    should = {case for case, record in before.items() if MUST_CHANGE["drop-rst"](record)}
    # Red where a MUST expects the RST; a SHOULD that expects one is a WARN (orange), as levels say.
    red = {case for case, record in after.items() if record["verdict"] == "FAIL"}
    must = {case for case in should if after[case]["level"] == "MUST"}
    assert red == must, f"red but no RST expected: {red - should}; RST expected by a MUST, not red: {must - red}"
    assert {case for case in should - must if after[case]["verdict"] == "WARN"} == should - must
    proc, results = runs.process("drop-rst")
    assert proc.returncode == 1
    assert proc.stdout.rstrip().splitlines()[-1].startswith("synfin: exit 1, unexpected results (FAIL)")
    _, baseline = runs.process(None)
    site = tmp_path / "site"
    assert report_cli.main([str(results / "results.json"), "--baseline", str(baseline / "results.json"),
                            "--out", str(site)]) == 0
    cells = cells_of(open(site / "index.html", encoding="utf-8").read())
    assert len(cells) == len(before)
    assert {c["case"] for c in cells if "v-FAIL" in c["class"].split()} == must
    assert {c["case"] for c in cells if "delta" in c["class"].split()} == should
