"""Recorded deviations: strict by default, any-of texts, and chance-dependent ones."""
import pytest

from harness.expectations import Deviation, apply, for_case, load

MSG = "expected RST seq=0; received RST,ACK seq=0 ack=1 win=0 len=0\nmore lines"


def dev(observed, intermittent=False):
    return Deviation("cases/x.py::test_y", observed, "RFC 9293 §3.10.7.1", "why", intermittent)


@pytest.mark.parametrize("verdict", ["FAIL", "WARN"])
def test_seen_as_recorded_is_expected(verdict):
    v, m = apply(dev("received RST,ACK seq=0"), verdict, MSG)
    assert v == "EXPECTED" and "recorded deviation (RFC 9293 §3.10.7.1)" in m and MSG in m


def test_any_of_several_texts_counts():
    assert apply(dev(("received FIN", "received RST,ACK")), "FAIL", MSG)[0] == "EXPECTED"
    assert apply(dev(("received FIN", "received SYN")), "FAIL", MSG)[0] == "FAIL"


def test_failing_differently_is_a_fail():
    v, m = apply(dev("received FIN"), "WARN", MSG)
    assert v == "FAIL" and m.startswith("fails differently from the recorded deviation")


@pytest.mark.parametrize("verdict", ["PASS", "INFO"])
def test_a_deviation_that_did_not_occur_is_a_fail_unless_intermittent(verdict):
    assert apply(dev("received RST,ACK"), verdict, "")[0] == "FAIL"
    assert apply(dev("received RST,ACK", intermittent=True), verdict, "")[0] == verdict


@pytest.mark.parametrize("verdict", ["ERROR", "UNSUPPORTED"])
def test_errors_and_unsupported_are_never_excused(verdict):
    assert apply(dev("anything"), verdict, "boom") == (verdict, "boom")


def test_no_deviation_keeps_the_verdict():
    assert apply(None, "FAIL", MSG) == ("FAIL", MSG)


def test_load_rejects_an_entry_without_evidence(tmp_path):
    (tmp_path / "t.toml").write_text('[[deviation]]\ncase = "c"\nobserved = "o"\nrfc = "r"\n')
    with pytest.raises(ValueError, match="lacks why"):
        load("t", str(tmp_path))


def test_load_reads_lists_and_flags(tmp_path):
    (tmp_path / "t.toml").write_text('[[deviation]]\ncase = "c"\nobserved = ["a", "b"]\nrfc = "r"\n'
                                     'why = "w"\nintermittent = true\n')
    d = load("t", str(tmp_path))["c"][None]
    assert d.observed == ("a", "b") and d.intermittent and d.step is None


def test_load_keys_deviations_by_their_step(tmp_path):
    entry = 'case = "c"\nobserved = "o"\nrfc = "r"\nwhy = "w"\n'
    (tmp_path / "t.toml").write_text(f'[[deviation]]\n{entry}step = "probe"\n[[deviation]]\n{entry}')
    assert set(load("t", str(tmp_path))["c"]) == {"probe", None}
    (tmp_path / "t.toml").write_text(f'[[deviation]]\n{entry}step = "probe"\n[[deviation]]\n{entry}step = "probe"\n')
    with pytest.raises(ValueError, match="two deviations for c step probe"):
        load("t", str(tmp_path))


@pytest.mark.parametrize("target", ["linux", "lwip", "smoltcp", "pytcp", "slirp"])
def test_shipped_expectation_files_load(target):
    load(target)


def test_a_pattern_names_many_cases_and_a_case_s_own_entry_wins(tmp_path):
    (tmp_path / "lwip.toml").write_text(
        '[[deviation]]\ncase = "cases/m.py::test_cell[SYN-SENT-*]"\nobserved = "RST,ACK"\nrfc = "x"\nwhy = "all"\n\n'
        '[[deviation]]\ncase = "cases/m.py::test_cell[SYN-SENT-RST]"\nobserved = "own"\nrfc = "x"\nwhy = "one"\n\n'
        '[[deviation]]\ncase = "cases/m.py::test_cell[*]"\nstep = "answered from CLOSED"\nobserved = "ACK"\n'
        'rfc = "x"\nwhy = "step"\n')
    table = load("lwip", str(tmp_path))
    found = for_case(table, "cases/m.py::test_cell[SYN-SENT-ACK-ack_old]")
    assert found[None].why == "all" and found["answered from CLOSED"].why == "step"
    assert for_case(table, "cases/m.py::test_cell[SYN-SENT-RST]")[None].why == "one"
    # `[` and `]` are plain characters, not a glob's character class.
    assert None not in for_case(table, "cases/m.py::test_cell[ESTABLISHED-RST-inside]")
    assert for_case(table, "cases/other.py::test_x") is None
