"""Every bad input and every missing piece of infrastructure is told in one line before any case
runs, with the way out: exit 4 for a usage error, 2 for missing infrastructure."""
import os
import subprocess
import sys

import pytest
from suite import ROOT, passive_opens, run_cases

from harness import runtime

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="building labs needs root")
DOCKER = runtime.docker_client()[0] is not None
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent.sock"}

PASSING = passive_opens("test_one", "test_two")


def said(proc) -> list[str]:
    """What the run printed, blank lines left out."""
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


def one_line(proc, code: int, starts: str) -> str:
    lines = said(proc)
    assert proc.returncode == code, "\n".join(lines[-40:])
    assert len(lines) == 1, "\n".join(lines[-40:])
    assert lines[0].startswith(starts), lines[0]
    return lines[0]


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_runtime_docker_without_an_engine_is_one_line_exit_2(tmp_path, workers):
    proc, verdicts = run_cases(tmp_path, PASSING, "--runtime=docker", *workers, env=NO_ENGINE)
    line = one_line(proc, 2, "synfin: no Docker engine answers")
    assert "--runtime=netns" in line  # the way out
    assert verdicts == {}


@pytest.mark.parametrize("target", ["lwip", "smoltcp", "pytcp"])
def test_a_docker_only_target_without_an_engine_is_one_line_exit_2(tmp_path, target):
    proc, _ = run_cases(tmp_path, PASSING, f"--target={target}", env=NO_ENGINE)
    line = one_line(proc, 2, f"synfin: target {target} runs only in a Docker container, and no Docker engine answers")
    assert "start the engine" in line


@pytest.mark.parametrize("target", ["lwip", "all"])
def test_a_docker_only_target_on_runtime_netns_is_one_line_exit_4(tmp_path, target):
    proc, _ = run_cases(tmp_path, PASSING, f"--target={target}", "--runtime=netns", "-n", "2")
    line = one_line(proc, 4, "ERROR: --runtime=netns: target lwip runs only in a Docker container")
    assert "no Docker engine answers" not in line  # whether one answers is not the point


def test_missing_capabilities_are_one_line_exit_4_without_pytest_internals(tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "test_x.py").write_text("from harness.markers import requirement\n" + PASSING)
    (tmp_path / "none").mkdir()
    cmd = ["setpriv", "--bounding-set=-net_admin,-net_raw", "--inh-caps=-all", sys.executable, "-m", "pytest",
           str(cases), "-p", "harness.plugin", "-p", "no:cacheprovider", f"--rootdir={tmp_path}", "-q",
           "--runtime=netns", f"--results={tmp_path / 'results'}", f"--expectations={tmp_path / 'none'}", "-n", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    line = one_line(proc, 4, "synfin: needs CAP_NET_ADMIN and CAP_NET_RAW")
    assert "run it as root" in line and "_pytest" not in line


@pytest.mark.parametrize("option", ["--results", "--report-dir"])
def test_an_output_directory_that_cannot_be_written_is_refused_before_the_first_case(tmp_path, option):
    blocked = tmp_path / "out"
    blocked.mkdir()
    subprocess.run(["chattr", "+i", str(blocked)], check=True)  # not even root may write in it
    try:
        proc, _ = run_cases(tmp_path, PASSING, f"{option}={blocked}", "--runtime=netns")
    finally:
        subprocess.run(["chattr", "-i", str(blocked)], check=True)
    one_line(proc, 4, f"ERROR: {option} {blocked}: not writable")


def test_a_results_directory_whose_evidence_cannot_be_written_is_refused_before_the_first_case(tmp_path):
    results = tmp_path / "out"
    results.mkdir()
    (results / "linux").write_text("a file where the target's evidence folder goes")
    proc, _ = run_cases(tmp_path, PASSING, f"--results={results}", "--evidence=all", "--runtime=netns")
    one_line(proc, 4, f"ERROR: --results {results}: {results / 'linux'} is not a directory")


def test_a_malformed_expectations_file_is_named(tmp_path):
    directory = tmp_path / "expect"
    directory.mkdir()
    (directory / "linux.toml").write_text("[[deviation]\ncase = 1\n")
    proc, _ = run_cases(tmp_path, PASSING, f"--expectations={directory}", "--runtime=netns")
    one_line(proc, 4, f"ERROR: {directory / 'linux.toml'}: not valid TOML")


def test_an_expectations_folder_that_does_not_exist_is_an_error(tmp_path):
    proc, _ = run_cases(tmp_path, PASSING, f"--expectations={tmp_path / 'nosuch'}", "--runtime=netns")
    one_line(proc, 4, f"ERROR: --expectations {tmp_path / 'nosuch'}: no such directory")


@pytest.mark.parametrize("case,why", [
    ("cases/test_fault.py::test_onw", "no function test_onw"),
    ("cases/test_nosuch.py::test_one", "no file cases/test_nosuch.py"),
    ("cases/test_fault.py::test_one[nosuch]", "no such case in cases/test_fault.py"),
])
def test_a_deviation_that_names_no_case_is_an_error(tmp_path, case, why):
    directory = tmp_path / "expect"
    directory.mkdir()
    (directory / "linux.toml").write_text(f'[[deviation]]\ncase = "{case}"\nobserved = "x"\nrfc = "RFC 9293"\n'
                                          'why = "a typo must not turn this into a WARN"\n')
    proc, _ = run_cases(tmp_path, PASSING, f"--expectations={directory}", "--runtime=netns")
    lines = said(proc)
    assert proc.returncode == 4, "\n".join(lines)
    assert any(case in line and why in line for line in lines), "\n".join(lines)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_an_unknown_marker_in_m_is_an_error(tmp_path, workers):
    proc, _ = run_cases(tmp_path, PASSING, "-m", "not slwo", "--runtime=netns", *workers)
    line = one_line(proc, 4, "ERROR: -m 'not slwo': unknown marker 'slwo'")
    assert "slow" in line


def test_a_known_marker_in_m_still_selects(tmp_path):
    proc, verdicts = run_cases(tmp_path, PASSING, "-m", "not slow", "--runtime=netns")
    assert proc.returncode == 0 and set(verdicts) == {"test_one", "test_two"}, proc.stdout[-2000:]


def test_a_notice_starts_a_line_of_its_own(tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "test_x.py").write_text("import os, signal\nfrom harness.markers import requirement\n" + PASSING + """

@requirement("R9293-3.10.7.2/third", "MUST")
def test_three_kills(lab):
    os.kill(lab.session.instance.proc.pid, signal.SIGKILL)
    lab.session.instance.proc.wait()
""" + passive_opens("test_four", "test_five"))
    none = tmp_path / "none"
    none.mkdir()
    # stdout and stderr on one terminal, as a user sees them
    proc = subprocess.run([sys.executable, "-m", "pytest", str(cases), "-p", "harness.plugin", "-p",
                           "no:cacheprovider", f"--rootdir={tmp_path}", "-q", "--runtime=netns",
                           f"--expectations={none}", f"--results={tmp_path / 'results'}"],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    notices = [line for line in proc.stdout.splitlines() if "synfin: target linux died" in line]
    assert notices and all(line.startswith("synfin: ") for line in notices), proc.stdout


@pytest.mark.skipif(not DOCKER, reason="needs a Docker engine")
def test_an_error_at_case_setup_is_its_message_not_a_traceback(tmp_path):
    proc, verdicts = run_cases(tmp_path, PASSING, "--runtime=docker", env={"SYNFIN_BASE_IMAGE": "synfin-no-such-base:1"})
    assert verdicts["test_one"]["verdict"] == "ERROR"
    assert "synfin-no-such-base:1" in proc.stdout
    for internal in ("def lab(", "def synfin_session(", "harness/plugin.py", "Traceback"):
        assert internal not in proc.stdout, proc.stdout[-3000:]


def test_a_deviation_naming_no_parametrized_case_is_an_error_under_xdist_too(tmp_path):
    directory = tmp_path / "expect"
    directory.mkdir()
    (directory / "linux.toml").write_text('[[deviation]]\ncase = "cases/test_fault.py::test_one[nosuch]"\n'
                                          'observed = "x"\nrfc = "RFC 9293"\nwhy = "a typo"\n')
    proc, verdicts = run_cases(tmp_path, PASSING, f"--expectations={directory}", "--runtime=netns", "-n", "2")
    assert proc.returncode == 4, "\n".join(said(proc))
    assert "cases/test_fault.py::test_one[nosuch] (no such case in cases/test_fault.py)" in proc.stdout + proc.stderr
    assert "INTERNALERROR" not in proc.stdout + proc.stderr and verdicts == {}
