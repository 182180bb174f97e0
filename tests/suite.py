"""Running synfin as a user does (pytest in a subprocess) and reading its results.json."""
import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HEADER = """
import os, signal, docker
from harness.markers import requirement
from harness.segments import Seg
"""


def passive_opens(*names: str) -> str:
    """Case source: one case per name, each a passive open that passes on every stack."""
    return "".join(f"""

@requirement("R9293-3.10.7.2/third", "MUST")
def {name}(lab):
    port = lab.port()
    lab.target.listen(port)
    lab.peer.connect(port)
""" for name in names)


def records(results, target: str = "linux") -> dict[str, dict]:
    """One target's records of a run's results.json, by case id (empty if the run wrote none)."""
    path = os.path.join(str(results), "results.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {r["case"]: r for r in json.load(f)["results"] if r["target"] == target}


def run_suite(results, *args, cases=("cases/",), target: str = "linux", fault: str | None = None,
              timeout: float = 600):
    """The shipped cases (or the node ids in `cases`), optionally with a stack fault from
    tests/stack_faults.py applied to the target: (process, records by node id)."""
    cmd = [sys.executable, "-m", "pytest", *cases, f"--target={target}", "-p", "no:cacheprovider",
           "-p", "tests.stack_faults", f"--results={results}", "-q", *args]
    env = {**os.environ, "SYNFIN_FAULT": fault or ""}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    return proc, records(results, target)


def run_cases(tmp_path, body: str, *args, env=None, timeout=120, extra="", target: str = "linux"):
    """A small case file written for the test, run through pytest: (process, records by test name)."""
    cases = tmp_path / "cases"
    cases.mkdir(exist_ok=True)
    (cases / "test_fault.py").write_text(HEADER + textwrap.dedent(body) + extra)
    results = tmp_path / "results"
    # No recorded deviations unless the test gives its own (the shipped ones name the shipped cases).
    none = tmp_path / "no-expectations"
    none.mkdir(exist_ok=True)
    # An explicit rootdir: node ids (and so expectations) must not depend on where the repo lives.
    cmd = [sys.executable, "-m", "pytest", str(cases), "-p", "harness.plugin", "-p", "no:cacheprovider",
           f"--rootdir={tmp_path}", f"--results={results}", f"--expectations={none}", "-q", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    return proc, {case.rsplit("::", 1)[1]: r for case, r in records(results, target).items()}
