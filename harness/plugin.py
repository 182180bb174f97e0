"""The pytest plugin: options, fixtures, the requirement marker, verdicts and evidence.

A case's verdict belongs to the requirement of the step that decided it (harness/steps.py): the
first step that failed, else the first recorded deviation seen, else the case's own marker.

Verdicts: PASS; FAIL (a MUST violated); WARN (a SHOULD not met: reported, the run still passes);
INFO (a MAY or a choice the RFC leaves open: what the stack chose is recorded); EXPECTED (a
deviation recorded in expectations/<target>.toml, seen as recorded); UNSUPPORTED (the target cannot
express the case); ERROR (the harness or the target broke: never a deviation).
"""
import os
import shlex
import time

import pytest

from . import evidence, expectations, targets
from .caselab import CaseLab
from .cleanup import REGISTRY
from .errors import HarnessError
from .requirements import LEVELS, lookup
from .results import STATUS, Results
from .steps import StepLog
from .runtime import docker_client
from .session import Session, notice


def pytest_addoption(parser):
    group = parser.getgroup("synfin", "synfin: TCP conformance")
    group.addoption("--target", default="linux", help="stack under test (default: linux)")
    group.addoption("--runtime", default="auto", choices=("auto", "docker", "netns"),
                    help="where the target runs: a Docker container, or a bare network namespace; "
                         "auto picks docker when an engine answers")
    group.addoption("--evidence", default="failures", choices=("failures", "all"),
                    help="keep pcap, ladder and agent log for failures only (default) or every case")
    group.addoption("--results", default="results", help="directory for evidence and results.json")
    group.addoption("--expectations", default=expectations.DEFAULT_DIR,
                    help="directory of <target>.toml files recording known deviations (default: expectations/)")


def pytest_configure(config):
    config.addinivalue_line("markers", "requirement(id, level): the catalogue requirement a case checks "
                                       "(docs/requirements.md) and its level: MUST, SHOULD, MAY or INFO")
    config.addinivalue_line("markers", "slow: a case that waits for a real protocol timer (minutes)")
    name = config.getoption("--target")
    try:
        targets.get(name)
        config._synfin_expected = expectations.load(name, config.getoption("--expectations"))
    except KeyError as exc:
        raise pytest.UsageError(str(exc).strip('"')) from None
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(Results(config), "synfin-results")
    REGISTRY.install()


def pytest_collection_modifyitems(session, config, items):
    problems = []
    for item in items:
        mark = item.get_closest_marker("requirement")
        if mark is None:
            if "cases" in item.path.parts:
                problems.append(f"{item.nodeid}: a case must carry @requirement(id, level)")
            continue
        rid, level = _requirement(mark)
        try:
            lookup(rid)
        except KeyError as exc:
            problems.append(f"{item.nodeid}: {exc.args[0]}")
        if level not in LEVELS:
            problems.append(f"{item.nodeid}: level {level!r} is not one of {', '.join(LEVELS)}")
    if problems:
        raise pytest.UsageError("bad requirement markers:\n  " + "\n  ".join(problems))


def _requirement(mark) -> tuple[str, str]:
    rid = mark.args[0] if mark.args else mark.kwargs.get("id")
    level = mark.args[1] if len(mark.args) > 1 else mark.kwargs.get("level", "MUST")
    return rid, level


def pytest_sessionstart(session):
    """Settle --runtime=auto once, where the notice reaches the terminal (not a captured fixture)."""
    config = session.config
    if config.getoption("--runtime") != "auto":
        return
    client, why = docker_client()
    if client is None:
        config.option.runtime = "netns"
        if not hasattr(config, "workerinput"):
            notice(f"no Docker engine answers ({why}); using --runtime=netns")


def missing_capabilities() -> list[str]:
    """The capabilities a run needs that this process lacks (from /proc/self/status CapEff)."""
    with open("/proc/self/status") as f:
        eff = next((int(line.split()[1], 16) for line in f if line.startswith("CapEff:")), 0)
    needed = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_SYS_ADMIN": 21}  # SYS_ADMIN: setns, netns mounts
    return [name for name, bit in needed.items() if not eff & (1 << bit)]


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def synfin_session(request):
    missing = missing_capabilities()
    if missing:
        pytest.exit(f"synfin needs {' and '.join(missing)} to build its labs and send raw segments; "
                    "run it as root", returncode=4)
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def visible_notice(line: str) -> None:
        # Image builds and restarts happen inside fixtures, whose output pytest would swallow.
        with capture.global_and_fixture_disabled():
            notice(line)

    session = Session(request.config.getoption("--target"), request.config.getoption("--runtime"),
                      notice=visible_notice)
    yield session
    session.close()


@pytest.fixture
def lab(synfin_session, request):
    peer, target = synfin_session.new_case()
    rid, level = _requirement(request.node.get_closest_marker("requirement"))
    steps = StepLog(request.node.originalname, rid, level,
                    request.config._synfin_expected.get(request.node.nodeid))
    case = CaseLab(synfin_session, peer, target, steps)
    request.node._synfin_lab = case
    yield case
    try:
        target.reset()
    except HarnessError:
        pass  # the case already reports the broken target


# -- verdicts ---------------------------------------------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    mark = item.get_closest_marker("requirement")
    if mark is None:
        return report
    rid, level = _requirement(mark)
    if report.when == "setup" and report.failed:
        _set(report, "ERROR", rid, level, _error_text(call.excinfo))
        report.sections.append(("synfin rerun", _rerun(item)))
    if report.when != "call":
        return report
    case = getattr(item, "_synfin_lab", None)
    # A case without the lab fixture has no steps of its own: only its body can be judged.
    steps = case.steps if case is not None else StepLog(
        item.originalname, rid, level, item.config._synfin_expected.get(item.nodeid))
    exc = call.excinfo.value if call.excinfo is not None else None
    outcome = steps.finish(exc)
    verdict, message = outcome.verdict, outcome.message
    if verdict == "ERROR" and call.excinfo is not None:
        message = outcome.message = _error_text(call.excinfo)
    rewritten = exc is None or message != str(exc)  # a verdict the expectations (or a step) decided
    recorded = message  # results.json keeps the step apart from the message
    if outcome is not steps.body and verdict != "PASS":
        where = f"step {outcome.name!r} ({outcome.requirement}, {outcome.level})"
        message = f"{where}: {message}"
        report.sections.append(("synfin verdict", f"{verdict} at {where}; the case checks {rid} ({level})"))
    if verdict == "FAIL":
        report.outcome = "failed"
        if rewritten:
            report.longrepr = message
    elif verdict == "UNSUPPORTED":
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1], f"UNSUPPORTED: {message}")
    elif verdict == "ERROR":
        report.outcome = "failed"
        report.longrepr = message
    else:  # PASS, INFO, WARN, EXPECTED: the run passes
        report.outcome = "passed"
        report.longrepr = None
    _set(report, verdict, outcome.requirement, outcome.level, recorded)
    report.user_properties.append(("synfin_case_requirement", [rid, level]))
    report.user_properties.append(("synfin_step", outcome.name if outcome is not steps.body else None))
    report.user_properties.append(("synfin_steps", steps.records()))
    report.user_properties.append(("synfin_checks", steps.checks))
    if case is not None:
        report.user_properties.append(("synfin_notes", {k: str(v) for k, v in case.notes.items()}))
        report.user_properties.append(("synfin_choices", {k: str(v) for k, v in case.choices.items()}))
        report.user_properties.append(("synfin_settings", dict(case.target.settings)))
        report.user_properties.append(("synfin_waited", case.waited()))
        report.user_properties.append(("synfin_blocked", case.blocked()))
        report.user_properties.append(("synfin_wall", time.monotonic() - case.started))
        keep = verdict in ("FAIL", "WARN", "ERROR", "EXPECTED") or item.config.getoption("--evidence") == "all"
        if keep:
            _write_evidence(item, report, case)
    report.sections.append(("synfin rerun", _rerun(item)))
    return report


def _set(report, verdict, rid, level, message) -> None:
    report.synfin_verdict = verdict
    report.user_properties.append(("synfin_verdict", verdict))
    report.user_properties.append(("synfin_requirement", [rid, level]))
    report.user_properties.append(("synfin_message", message))


def _error_text(excinfo) -> str:
    exc = excinfo.value
    if isinstance(exc, HarnessError):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__} in the case or harness (not a stack deviation): {exc}\n" + str(
        excinfo.getrepr(style="short"))


def _rerun(item) -> str:
    cfg = item.config
    cmd = [".venv/bin/pytest", item.nodeid, f"--target={cfg.getoption('--target')}"]
    if cfg.getoption("--runtime") != "auto":
        cmd.append(f"--runtime={cfg.getoption('--runtime')}")
    return shlex.join(cmd)


def _write_evidence(item, report, case) -> None:
    session = case.session
    root = os.path.join(item.config.getoption("--results"), session.spec.name)
    where = evidence.case_dir(root, item.nodeid)
    frames = list(session.wire.trace)
    evidence.write_pcap(os.path.join(where, "capture.pcap"), frames, evidence.wall_offset())
    views = case.peer.views()
    diagram = evidence.ladder(frames, views, session.lab.addr.peer_ip, session.lab.addr.target_ip)
    log = session.instance.log_since(case.log_marker) if session.instance else "(target gone)"
    with open(os.path.join(where, "ladder.txt"), "w") as f:
        f.write(diagram + "\n")
    with open(os.path.join(where, "agent.log"), "w") as f:
        f.write(log)
    with open(os.path.join(where, "rerun.sh"), "w") as f:
        f.write(_rerun(item) + "\n")
    report.user_properties.append(("synfin_evidence", where))
    report.sections.append(("synfin exchange (ms, numbers relative to the ISNs)", diagram))
    report.sections.append(("synfin evidence", f"{where}/capture.pcap, ladder.txt, agent.log\n"
                                               f"agent log of this case:\n{log[-3000:]}"))


def pytest_report_teststatus(report, config):
    props = dict(getattr(report, "user_properties", ()))  # a CollectReport has none
    verdict = getattr(report, "synfin_verdict", None) or props.get("synfin_verdict")
    if verdict and (report.when == "call" or verdict == "ERROR"):
        return STATUS[verdict]
    return None
