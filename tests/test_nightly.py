"""The nightly workflow (.github/workflows/nightly.yml): it lints clean, its jobs run the README's
commands, its recorded durations name the node ids its jobs collect, and its commands, run here
for linux, give three shards that together run each case once, with the verdicts of one
unsharded run, merged into one report and one results.json."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest
import yaml
from suite import ROOT
from test_report import cells_of

from harness.report import load

WORKFLOW = os.path.join(ROOT, ".github", "workflows", "nightly.yml")
TARGETS = ["linux", "lwip", "smoltcp", "pytcp", "slirp", "linux-6.1", "gvisor"]
BIN = os.path.dirname(sys.executable)  # the .venv's bin: bin/setup installs the linter there
SPLIT_OPTIONS = {"--splits", "--group", "--splitting-algorithm", "--durations-path"}  # each takes a value


def workflow() -> dict:
    with open(WORKFLOW, encoding="utf-8") as f:
        return yaml.safe_load(f)


def readme_commands() -> tuple[str, str]:
    """The README's first command line, `bin/setup && .venv/bin/pytest cases/ --target=linux`, in its
    two commands."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        first_block = re.search(r"```sh\n(.*?)```", f.read(), re.S).group(1)
    line = first_block.splitlines()[0].split("#", 1)[0]
    setup, cases = (part.strip() for part in line.split("&&"))
    return setup, cases


def matrix_values(text: str, values: dict) -> str:
    return re.sub(r"\$\{\{\s*matrix\.(\w+)\s*\}\}", lambda m: str(values[m.group(1)]), str(text))


def run_of(step: dict) -> str:
    return step.get("run", "")


def shard_step(job: dict) -> dict:
    return next(s for s in job["steps"] if run_of(s).startswith(".venv/bin/pytest "))


def shard_command(target: str, group: int) -> list[str]:
    """The shard's pytest command line as the runner's shell gives it to pytest."""
    job = workflow()["jobs"]["cases"]
    env = {k: matrix_values(v, {"target": target, "group": group}) for k, v in job.get("env", {}).items()}
    return [re.sub(r"\$(\w+)", lambda m: env[m.group(1)], word) for word in shlex.split(run_of(shard_step(job)))]


def option(argv: list[str], name: str) -> str | None:
    for i, word in enumerate(argv):
        if word == name:
            return argv[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


# -- the workflow as written ----------------------------------------------------------------------
def test_the_workflow_lints_clean(tmp_path):
    linter = os.path.join(BIN, "jactionlint")
    assert os.path.exists(linter), f"{linter} is missing: bin/setup installs it (pyproject.toml)"
    # A user-wide config file would change the rules: none is read here.
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    proc = subprocess.run([linter, "--no-color", "--no-online", WORKFLOW], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "shellcheck was not found" not in output, "bin/setup installs shellcheck: " + output


def test_it_runs_every_night_and_by_hand():
    wf = workflow()
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert set(on) == {"schedule", "workflow_dispatch"} and on["schedule"][0]["cron"]


def test_each_shard_runs_the_readmes_commands_for_its_target_and_group():
    job = workflow()["jobs"]["cases"]
    matrix = job["strategy"]["matrix"]
    assert matrix["target"] == TARGETS and matrix["group"] == [1, 2, 3]
    assert job["strategy"]["fail-fast"] is False
    setup, cases = readme_commands()
    assert (setup, cases) == ("bin/setup", ".venv/bin/pytest cases/ --target=linux")
    runs = [run_of(s) for s in job["steps"] if "run" in s]
    assert runs == [setup, run_of(shard_step(job))]

    results_dirs = set()
    for target in TARGETS:
        for group in matrix["group"]:
            argv = shard_command(target, group)
            readme = shlex.split(cases.replace("--target=linux", f"--target={target}"))
            assert argv[:len(readme)] == readme, argv
            assert option(argv, "--splits") == str(len(matrix["group"])) and option(argv, "--group") == str(group)
            assert option(argv, "--durations-path") == f".github/durations/{target}.json"
            assert os.path.exists(os.path.join(ROOT, option(argv, "--durations-path")))
            assert option(argv, "-m") is None, "the slow cases run nightly"
            results_dirs.add(option(argv, "--results"))
            upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
            assert upload["if"] == "always()"
            values = {"target": target, "group": group}
            assert matrix_values(upload["with"]["path"], values).rstrip("/") == option(argv, "--results")
            assert matrix_values(upload["with"]["name"], values) == f"results-{target}-{group}"
    assert len(results_dirs) == 3 * len(TARGETS)  # a results directory of its own per shard


def test_the_report_job_merges_every_shard_with_the_previous_nights_results():
    jobs = workflow()["jobs"]
    report = jobs["report"]
    assert set(report["needs"]) == {"cases", "models-diff"} and report["if"] == "${{ !cancelled() }}"
    steps = report["steps"]
    assert run_of(steps[1]) == readme_commands()[0]
    download = next(s for s in steps if s.get("uses", "").startswith("actions/download-artifact@"))
    assert download["with"]["pattern"] == "results-*" and download["with"]["path"] == "shards"
    previous = next(run_of(s) for s in steps if "gh run download" in run_of(s))
    assert "--name merged-results --dir baseline" in previous
    script = next(run_of(s) for s in steps if "synfin-report" in run_of(s))
    assert "set -- shards/*/results.json" in script and "--baseline baseline/results.json" in script
    assert '.venv/bin/synfin-report "$@" --out report --merged merged/results.json' in script
    uploads = {s["with"]["name"]: s["with"]["path"] for s in steps
               if s.get("uses", "").startswith("actions/upload-artifact@")}
    assert uploads == {"report": "report/", "merged-results": "merged/results.json"}


def test_every_landed_stack_is_learned_and_the_report_shows_the_models():
    from harness import targets
    jobs = workflow()["jobs"]
    models = jobs["models"]
    matrix = models["strategy"]["matrix"]
    assert set(matrix["target"]) == set(targets.known()) and matrix["side"] == ["server"]
    assert matrix["include"] == [{"target": "linux", "side": "client"}]
    assert models["strategy"]["fail-fast"] is False
    runs = [run_of(s) for s in models["steps"] if "run" in s]
    assert runs[0] == readme_commands()[0]
    argv = shlex.split(runs[1])
    assert argv[0] == ".venv/bin/synfin-learn" and option(argv, "--target") == "$TARGET" \
        and option(argv, "--side") == "$SIDE"
    upload = next(s for s in models["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert option(argv, "--out") == "models/$TARGET-$SIDE"  # what the upload takes
    assert upload["with"]["path"] == "models/${{ matrix.target }}-${{ matrix.side }}/"
    diff = jobs["models-diff"]
    assert diff["needs"] in ("models", ["models"]) and diff["if"] == "${{ !cancelled() }}"
    download = next(s for s in diff["steps"] if s.get("uses", "").startswith("actions/download-artifact@"))
    assert download["with"] == {"pattern": "model-*", "path": "models", "merge-multiple": True}
    script = next(run_of(s) for s in diff["steps"] if "synfin-learn diff" in run_of(s))
    assert ".venv/bin/synfin-learn diff models/linux-server.json models/smoltcp-server.json --out models" in script
    assert "--no-replay" not in script  # the differences are confirmed live
    report = next(run_of(s) for s in jobs["report"]["steps"] if "synfin-report" in run_of(s))
    assert 'set -- "$@" --models models' in report
    fetched = [s["with"] for s in jobs["report"]["steps"] if s.get("uses", "").startswith("actions/download-artifact@")]
    assert {"name": "models", "path": "models"} in fetched


def collected(target: str, *args: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "cases/", f"--target={target}", "--collect-only", "-q",
                           "-p", "no:cacheprovider", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {line for line in proc.stdout.splitlines() if line.startswith("cases/")}


@pytest.mark.parametrize("target", TARGETS)
def test_the_recorded_durations_name_the_node_ids_of_a_run_of_that_target(target):
    """A run of one target names its cases without the target in brackets: the ids of a
    multi-target run (`test_x[lwip]`), or of cases since renamed, would each count as unknown and
    be given the average duration."""
    with open(os.path.join(ROOT, ".github", "durations", f"{target}.json")) as f:
        durations = json.load(f)
    ids = collected(target)
    assert not set(durations) - ids, sorted(set(durations) - ids)[:5]
    # A slow case given the average (well under a second) would put minutes into one shard
    # unplanned: each is recorded, from a run that waited for the timers (a slow case the target
    # cannot run, as gVisor's 2MSL without connection states, takes no time).
    slow = collected(target, "-m", "slow")
    assert slow and slow <= set(durations) and any(durations[s] > 60 for s in slow)
    missing = ids - set(durations)  # new cases: the file wants refreshing (README, "Nightly CI")
    assert len(missing) <= len(ids) // 10, sorted(missing)


# -- the workflow's commands, run here for linux --------------------------------------------------
def run(argv: list[str], results: str, tell: str) -> tuple[subprocess.CompletedProcess, float]:
    """`argv` as the workflow runs it, less the slow cases (minutes of timers) and with `results`
    for its --results; the .venv's pytest is this interpreter's."""
    assert argv[0] == ".venv/bin/pytest"
    argv = [sys.executable, "-m", "pytest", *(f"--results={results}" if w.startswith("--results=") else w
                                              for w in argv[1:]), "-m", "not slow", "-p", "no:cacheprovider"]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    took = time.monotonic() - start
    print(f"{tell}: exit {proc.returncode} in {took:.1f} s")
    assert proc.returncode == 0, f"{tell}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    return proc, took


def verdicts(results_dir) -> dict[tuple[str, str], str]:
    return {(r["case"], r["target"]): r["verdict"] for r in load(os.path.join(results_dir, "results.json"))["results"]}


def report_step(night) -> subprocess.CompletedProcess:
    """The report job's report step, in a directory laid out as the runner's workspace."""
    steps = workflow()["jobs"]["report"]["steps"]
    script = next(run_of(s) for s in steps if "synfin-report" in run_of(s))
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=night,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_the_linux_shards_run_each_case_once_and_merge_into_the_verdicts_of_one_run(tmp_path):
    whole_argv = shard_command("linux", 1)
    whole_argv = [w for i, w in enumerate(whole_argv) if w not in SPLIT_OPTIONS and whole_argv[i - 1] not in SPLIT_OPTIONS]
    whole_dir = tmp_path / "whole"
    run(whole_argv, str(whole_dir), "unsharded")
    whole = verdicts(whole_dir)
    assert len(whole) > 200

    night = tmp_path / "night"  # the report job's workspace: the shards' artifacts under shards/
    (night / "shards").mkdir(parents=True)
    os.symlink(os.path.join(ROOT, ".venv"), night / ".venv")
    shards, estimates = {}, {}
    for group in (1, 2, 3):
        shard_dir = night / "shards" / f"results-linux-{group}"
        proc, _ = run(shard_command("linux", group), str(shard_dir), f"shard {group}/3")
        assert "No test durations found" not in proc.stdout
        estimate = re.search(rf"\[pytest-split\] Running group {group}/3 \(estimated duration: ([0-9.]+)s\)", proc.stdout)
        assert estimate, proc.stdout[-2000:]
        estimates[group] = float(estimate.group(1))
        shards[group] = verdicts(shard_dir)

    ran = [set(s) for s in shards.values()]
    assert all(ran), "a shard ran nothing"
    assert not (ran[0] & ran[1] or ran[0] & ran[2] or ran[1] & ran[2]), "a case ran in two shards"
    assert set().union(*ran) == set(whole), "the shards together did not run the unsharded run's cases"
    assert {pair: v for s in shards.values() for pair, v in s.items()} == whole
    # Balanced by the recorded durations (pytest-split's estimate from them, not this machine's load).
    assert max(estimates.values()) < 1.5 * min(estimates.values()), estimates

    # First night: no baseline. The merged document holds every shard's record and finds its evidence.
    report_step(night)
    merged = load(str(night / "merged" / "results.json"))
    assert {(r["case"], r["target"]): r["verdict"] for r in merged["results"]} == whole
    for r in merged["results"]:
        assert os.path.isfile(night / "merged" / r["evidence"]["pcap"]), r["evidence"]
    cells = cells_of((night / "report" / "index.html").read_text(encoding="utf-8"))
    assert {(c["case"], c["target"]): c["verdict"] for c in cells} == whole

    # The next night, with the unsharded run as its baseline: nothing changed, nothing new.
    (night / "baseline").mkdir()
    shutil.copy(whole_dir / "results.json", night / "baseline" / "results.json")
    report_step(night)
    page = (night / "report" / "index.html").read_text(encoding="utf-8")
    assert "0 changed since baseline" in page
    assert not [c for c in cells_of(page) if {"delta", "isnew"} & set(c["class"].split())]
