"""synfin-coverage: every catalogue row with the cases that check it; uncovered rows fail it."""
import textwrap

from harness import coverage
from harness.requirements import rows

CASE = '''
from harness.markers import requirement

@requirement("MUST-10", "MUST")
def test_simultaneous_open(lab):
    with lab.step("the listener's RST", "R9293-3.10.7.2/second"):
        pass

@requirement("R9293-3.10.7.2/third", "MUST", row="A15")
def test_queued_for_later(lab):
    lab.passive_open()
'''


def _setup(tmp_path, explained: set[str]):
    (tmp_path / "cases").mkdir()
    (tmp_path / "cases" / "test_x.py").write_text(CASE)
    lines = [f'[[row]]\nrow = "{r}"\nwhy = "cannot be seen from outside"\n' for r in sorted(explained)]
    (tmp_path / "uncovered.toml").write_text("\n".join(lines))
    return ["--cases", str(tmp_path / "cases"), "--reasons", str(tmp_path / "uncovered.toml")]


def test_rows_are_covered_by_markers_steps_openings_and_explicit_rows(tmp_path, capsys):
    args = _setup(tmp_path, set())
    assert coverage.main(args) == 1
    out = "\n" + capsys.readouterr().out
    case = "cases/test_x.py::test_simultaneous_open"
    # A6 (MUST-10) by the marker, A2 by the step, A15 by row=, A1 by the opening passive_open().
    for row, who in (("A6", case), ("A2", case), ("A15", "test_queued_for_later"), ("A1", "test_queued_for_later")):
        block = out.split(f"\n{row} ", 1)[1].split("\n", 1)
        assert "1 case(s)" in block[0] and who in block[1].split("\n", 1)[0], (row, block)
    assert "A3   R9293-3.10.7.2/first" in out and "UNCOVERED" in out.split("\nA3 ", 1)[1].split("\n", 1)[0]
    assert out.rstrip().splitlines()[-1].startswith(f"4 of {len([r for r in rows() if r[0] in 'ABCDEF'])} rows")


def test_a_row_with_a_reason_is_not_uncovered_and_all_explained_exits_0(tmp_path, capsys):
    covered = {"A1", "A2", "A6", "A15"}
    others = {r for r in rows() if r[0] in "ABCDEF"} - covered
    assert coverage.main(_setup(tmp_path, others)) == 0
    out = capsys.readouterr().out
    assert "not checked black-box: cannot be seen from outside" in out and "UNCOVERED" not in out
    (tmp_path / "two").mkdir()
    assert coverage.main(_setup(tmp_path / "two", others - {"F2"})) == 1
    assert "F2   " in capsys.readouterr().out


def test_bad_input_exits_4_with_one_line(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text('[[row]]\nrow = "A1"\n')
    assert coverage.main(["--reasons", str(tmp_path / "bad.toml")]) == 4
    assert coverage.main(["--cases", str(tmp_path / "nowhere")]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "without row or why" in err[0] and "no such folder" in err[1]


def test_every_catalogue_row_is_covered_by_the_shipped_cases_or_explained(capsys):
    status = coverage.main(["--uncovered"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert out.rstrip().endswith("; 0 uncovered")
