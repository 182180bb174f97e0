"""The pytest plugin: options, fixtures, the requirement marker, verdicts and evidence.

A case's verdict belongs to the requirement of the step that decided it (harness/steps.py): the
first step that failed, else the first recorded deviation seen, else the case's own marker.

Verdicts: PASS; FAIL (a MUST violated); WARN (a SHOULD not met: reported, the run still passes);
INFO (a MAY or a choice the RFC leaves open: what the stack chose is recorded); EXPECTED (a
deviation recorded in expectations/<target>.toml, seen as recorded); UNSUPPORTED (the target cannot
express the case); ERROR (the harness or the target broke: never a deviation).
"""
import gc
import os
import shlex
import sys
import tempfile

import pytest

from . import expectations, identity, records, targets
from .cleanup import REGISTRY
from .errors import HarnessError
from .notices import notice
from .requirements import LEVELS, lookup
from .results import STATUS, Results

# The lab, the peer and the agent client (scapy, pyroute2, the Docker SDK: about 0.3 s of imports)
# are imported where a case first needs them: pytest-xdist's controller, which runs no case, and
# --help or a usage error never pay for them.


def pytest_addoption(parser):
    group = parser.getgroup("synfin", "synfin: TCP conformance")
    group.addoption("--target", default="linux",
                    help="stack(s) under test: a name, a comma-separated list (each case runs once per "
                         "target, ids test_x[lwip]) or all (default: linux)")
    group.addoption("--runtime", default="auto", choices=("auto", "docker", "netns"),
                    help="where the target runs: a Docker container, or a bare network namespace; "
                         "auto picks docker when an engine answers")
    group.addoption("--evidence", default="failures", choices=("failures", "all"),
                    help="keep pcap, ladder and agent log for failures only (default) or every case")
    group.addoption("--results", default="results", help="directory for evidence and results.json")
    group.addoption("--report-dir", default=None, metavar="DIR",
                    help="write the cross-stack report (a static site) to DIR; implies --evidence=all")
    group.addoption("--export-packetdrill", default=None, metavar="DIR",
                    help="write a packetdrill script replaying each case run on a Linux target to DIR; "
                         "implies --evidence=all")
    group.addoption("--expectations", default=expectations.DEFAULT_DIR,
                    help="directory of <target>.toml files recording known deviations (default: expectations/)")


def pytest_configure(config):
    config.addinivalue_line("markers", "requirement(id, level): the catalogue requirement a case checks "
                                       "(docs/requirements.md) and its level: MUST, SHOULD, MAY or INFO")
    config.addinivalue_line("markers", "slow: a case that waits for a real protocol timer (minutes)")
    try:
        names = targets.parse_list(config.getoption("--target"))
        config._synfin_targets = names
        config._synfin_expected = {n: expectations.load(n, config.getoption("--expectations")) for n in names}
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("--runtime") == "netns":
        docker_only = [n for n in names if "netns" not in targets.get(n).runtimes]
        if docker_only:
            raise pytest.UsageError(f"--runtime=netns: target {docker_only[0]} runs only in Docker")
    for option in ("--results", "--report-dir", "--export-packetdrill"):
        where = config.getoption(option)
        if where:
            problem = _unwritable(where)
            if problem:
                raise pytest.UsageError(f"{option} {where}: {problem}")
            if option != "--results":
                config.option.evidence = "all"  # every cell of the report links to its ladder
    if config.getoption("--report-dir"):
        from .report import BadInput
        from .report.site import check_out
        try:  # refused before the run, not after it
            check_out(config.getoption("--report-dir"))
        except BadInput as exc:
            raise pytest.UsageError(f"--report-dir: {exc}") from None
    config.pluginmanager.register(Results(config), "synfin-results")
    REGISTRY.install()
    # The modules' objects (scapy's layers above all) live as long as the run: the collector
    # need not walk them again in every full collection.
    gc.freeze()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    sessions = getattr(config, "_synfin_sessions", None)
    if sessions is not None:  # targets started ahead for cases that were then deselected
        sessions.close()
    if "harness.session" in sys.modules:
        sys.modules["harness.session"].wait_for_closes()  # nothing of the run's outlives its process
    # pytest's cleanup collects garbage several times and the interpreter once more at exit:
    # walking everything the run made costs about 0.1 s of a run's end, and it is all freed anyway.
    gc.freeze()


def _unwritable(path: str) -> str | None:
    """Why `path` cannot become an output directory, or None. Probed by making (and removing) a
    directory in it or in its nearest existing parent: as root, access() says yes to /proc."""
    path = os.path.abspath(path)
    probe_in = path
    while not os.path.exists(probe_in):
        probe_in = os.path.dirname(probe_in)
    if not os.path.isdir(probe_in):
        return f"{probe_in} is not a directory"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".synfin-probe-", dir=probe_in))
    except OSError as exc:
        return f"{'not writable' if probe_in == path else f'cannot be created in {probe_in}'} ({exc.strerror})"
    return None


@pytest.hookimpl(trylast=True)  # after the cases' own parametrize marks: the target comes last in the id
def pytest_generate_tests(metafunc):
    names = metafunc.config._synfin_targets
    # A case: it carries a requirement (on itself, or on each of its params) or uses the lab.
    if len(names) > 1 and (metafunc.definition.get_closest_marker("requirement") is not None
                           or "lab" in metafunc.fixturenames):
        metafunc.parametrize("synfin_target", names, ids=names)


def target_of(item) -> str:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "synfin_target" in callspec.params:
        return callspec.params["synfin_target"]
    return item.config._synfin_targets[0]


def case_id(item) -> str:
    """The node id without the target: the same case on every target (expectations use it)."""
    callspec = getattr(item, "callspec", None)
    if callspec is None or "synfin_target" not in callspec.params:
        return item.nodeid
    name = callspec.params["synfin_target"]
    if item.nodeid.endswith(f"[{name}]"):
        return item.nodeid[:-len(name) - 2]
    return item.nodeid[:-len(name) - 2] + "]"  # "test_x[rst-lwip]" -> "test_x[rst]"


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


@pytest.hookimpl(wrapper=True)
def pytest_sessionstart(session):
    """Settle --runtime=auto once, where the notice reaches the terminal (not a captured fixture).
    After pytest-xdist has started its workers (they settle it for themselves): they need not
    wait for the controller's question to the engine."""
    yield
    config = session.config
    if config.getoption("--runtime") != "auto":
        return
    from .engine import docker_client

    client, why = docker_client()
    if client is None:
        config.option.runtime = "netns"
        if not hasattr(config, "workerinput"):
            notice(f"no Docker engine answers ({why}); using --runtime=netns")


@pytest.hookimpl(trylast=True)  # after --runtime=auto is settled
def pytest_collectstart(collector):
    config = collector.config
    if isinstance(collector, pytest.Session) and not hasattr(config, "_synfin_sessions") and _can_prestart(config):
        config._synfin_sessions = Sessions(config)


def missing_capabilities() -> list[str]:
    """The capabilities a run needs that this process lacks (from /proc/self/status CapEff)."""
    with open("/proc/self/status") as f:
        eff = next((int(line.split()[1], 16) for line in f if line.startswith("CapEff:")), 0)
    needed = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_SYS_ADMIN": 21}  # SYS_ADMIN: setns, netns mounts
    return [name for name, bit in needed.items() if not eff & (1 << bit)]


# -- fixtures -------------------------------------------------------------------------------
class Sessions:
    """A worker's targets, each started the first time a case needs it (or ahead of it, while
    pytest collects: prestart) and kept for the run."""

    def __init__(self, config):
        self.config = config
        self._notice = None  # until the cases run, notices wait (pytest would swallow them)
        self._pending: list[str] = []
        self._starting: dict = {}  # name -> session.Background
        self.open: dict = {}  # name -> session.Session
        self.failed: dict[str, HarnessError] = {}

    def notice(self, line: str) -> None:
        if self._notice is None:
            self._pending.append(line)
        else:
            self._notice(line)

    def tell_with(self, notice) -> None:
        self._notice = notice
        for line in self._pending:
            notice(line)
        self._pending.clear()

    def prestart(self, name: str) -> None:
        """Start target `name` in a thread while pytest goes on collecting: Docker's container
        start (about 0.25 s, spent in Docker's own processes) overlaps the collection. Only an
        image already built is started so: a build is told as it happens, by the first case."""
        if name in self._starting or name in self.open or name in self.failed:
            return

        from .session import Background

        def start() -> None:
            from .images import target_image_built
            session = self._open(name)
            if session.client is None or target_image_built(session.client, name):
                session.ensure()

        self._starting[name] = Background(start)

    def get(self, name: str):
        starting = self._starting.pop(name, None)
        if starting is not None:
            try:
                starting.result()
            except HarnessError:
                pass  # remembered (a failed start, or self.failed): raised again, case by case
        return self._open(name)

    def _open(self, name: str):
        from .session import Session, worker_index

        if name in self.failed:
            raise self.failed[name]
        if name not in self.open:
            names = self.config._synfin_targets
            slot = worker_index() * len(names) + names.index(name)
            try:
                self.open[name] = Session(name, self.config.getoption("--runtime"), notice=self.notice,
                                          slot=slot, sweep=not self.open and not self.failed)
            except HarnessError as exc:  # e.g. --runtime=docker and no engine: told once per case, tried once
                self.failed[name] = exc
                raise
        return self.open[name]

    def identity(self, name: str) -> dict | None:
        if name in self.open:
            return self.open[name].identity
        if name in self.failed:
            return identity.target(targets.get(name), self.config.getoption("--runtime"), None,
                                   error=str(self.failed[name]).splitlines()[0])
        return None

    def close(self) -> None:
        for starting in self._starting.values():
            try:
                starting.result()
            except Exception:
                pass  # closed below all the same
        self._starting.clear()
        for session in self.open.values():
            session.close(wait=False)  # in parallel, while the run writes its results
        self.open.clear()


def pytest_itemcollected(item):
    """The first case of a target to be collected starts that target (Sessions.prestart)."""
    sessions = getattr(item.config, "_synfin_sessions", None)
    if sessions is not None and "lab" in getattr(item, "fixturenames", ()):
        sessions.prestart(target_of(item))


def _can_prestart(config) -> bool:
    """In a process that runs cases (not pytest-xdist's controller, not --collect-only) with
    the capabilities a lab needs (else the first case says what is missing)."""
    xdist_controller = getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput")
    return not (xdist_controller or config.option.collectonly or missing_capabilities())


@pytest.fixture(scope="session")
def synfin_sessions(request):
    missing = missing_capabilities()
    if missing:
        pytest.exit(f"synfin needs {' and '.join(missing)} to build its labs and send raw segments; "
                    "run it as root", returncode=4)
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def visible_notice(line: str) -> None:
        # Image builds and restarts happen inside fixtures, whose output pytest would swallow.
        with capture.global_and_fixture_disabled():
            notice(line)

    sessions = getattr(request.config, "_synfin_sessions", None) or Sessions(request.config)
    request.config._synfin_sessions = sessions
    sessions.tell_with(visible_notice)
    yield sessions
    sessions.close()


@pytest.fixture(autouse=True)  # every case has a target, with the lab fixture or without
def synfin_target(request) -> str:
    """The target a case runs on (parametrized when the run has several)."""
    return request.config._synfin_targets[0]


@pytest.fixture
def synfin_session(synfin_sessions, synfin_target, request):
    request.node._synfin_sessions = synfin_sessions  # the target's identity, even if it fails to start
    session = synfin_sessions.get(synfin_target)
    return session


@pytest.fixture
def lab(synfin_session, synfin_target, request):
    from .caselab import CaseLab
    from .steps import StepLog

    peer, target = synfin_session.new_case()
    rid, level = _requirement(request.node.get_closest_marker("requirement"))
    steps = StepLog(request.node.originalname, rid, level,
                    expectations.for_case(request.config._synfin_expected[synfin_target], case_id(request.node)))
    case = CaseLab(synfin_session, peer, target, steps)
    request.node._synfin_lab = case
    yield case
    try:
        target.reset()
    except HarnessError:
        pass  # the case already reports the broken target


# -- verdicts ---------------------------------------------------------------------------------
def _settled(item, call):
    """The case's steps and the step its verdict belongs to (StepLog.finish), settled once."""
    from .steps import StepLog

    if not hasattr(item, "_synfin_outcome"):
        rid, level = _requirement(item.get_closest_marker("requirement"))
        case = getattr(item, "_synfin_lab", None)
        deviations = expectations.for_case(item.config._synfin_expected[target_of(item)], case_id(item))
        # A case without the lab fixture has no steps of its own: only its body can be judged.
        steps = case.steps if case is not None else StepLog(item.originalname, rid, level, deviations)
        item._synfin_outcome = (steps, steps.finish(call.excinfo.value if call.excinfo is not None else None))
    return item._synfin_outcome


@pytest.hookimpl(tryfirst=True, specname="pytest_runtest_makereport")
def _report_without_traceback(item, call):
    """A case that raised but whose verdict passes the run or skips it (EXPECTED, INFO, WARN,
    UNSUPPORTED): pytest would render the traceback (reading and parsing the case's source,
    25-55 ms a case) only for the verdict to drop it. FAIL and ERROR keep pytest's report."""
    if call.when != "call" or call.excinfo is None or item.get_closest_marker("requirement") is None:
        return None
    _, outcome = _settled(item, call)
    if outcome.verdict in ("FAIL", "ERROR"):
        return None
    quiet = pytest.CallInfo(None, None, start=call.start, stop=call.stop, duration=call.duration,
                            when=call.when, _ispytest=True)
    return pytest.TestReport.from_item_and_call(item, quiet)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    mark = item.get_closest_marker("requirement")
    if mark is None:
        return report
    rid, level = _requirement(mark)
    name = target_of(item)
    if report.when == "setup" and report.failed:
        message = _error_text(call.excinfo)
        _set(report, item, "ERROR", rid, level)
        from .steps import StepLog
        steps = StepLog(item.originalname, rid, level)
        steps.body.verdict, steps.body.message = "ERROR", message
        report.synfin = records.build(item, case_id(item), name, "ERROR", rid, level, message, steps, None,
                                      _rerun(item))
        report.synfin_identity = _identity(item)
        report.sections.append(("synfin rerun", report.synfin["rerun"]))
    if report.when != "call":
        return report
    case = getattr(item, "_synfin_lab", None)
    steps, outcome = _settled(item, call)
    exc = call.excinfo.value if call.excinfo is not None else None
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
    _set(report, item, verdict, outcome.requirement, outcome.level, outcome.name if outcome is not steps.body else None)
    record = records.build(item, case_id(item), name, verdict, outcome.requirement, outcome.level, recorded,
                           steps, outcome if outcome is not steps.body else None, _rerun(item), case)
    keep = verdict in ("FAIL", "WARN", "ERROR", "EXPECTED") or item.config.getoption("--evidence") == "all"
    if case is not None and keep:
        _write_evidence(item, report, case, record, outcome.failure or exc)
    report.synfin = record
    report.synfin_identity = _identity(item)
    report.sections.append(("synfin rerun", record["rerun"]))
    return report


def _identity(item) -> dict | None:
    sessions = getattr(item, "_synfin_sessions", None)
    return sessions.identity(target_of(item)) if sessions is not None else None


def _set(report, item, verdict, rid, level, step=None) -> None:
    """What JUnit XML carries per testcase (pytest writes user_properties as <property>)."""
    report.synfin_verdict = verdict
    props = [("synfin_verdict", verdict), ("synfin_requirement", rid), ("synfin_level", level),
             ("synfin_target", target_of(item)), ("synfin_rerun", _rerun(item))] + (
        [("synfin_step", step)] if step else [])
    report.user_properties.extend(props)
    item.user_properties.extend(props)  # JUnit XML writes the properties of the teardown report


def _error_text(excinfo) -> str:
    exc = excinfo.value
    if isinstance(exc, HarnessError):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__} in the case or harness (not a stack deviation): {exc}\n" + str(
        excinfo.getrepr(style="short"))


def _rerun(item) -> str:
    """The command that runs this case alone on this target."""
    cfg = item.config
    cmd = [".venv/bin/pytest", case_id(item), f"--target={target_of(item)}"]
    if cfg.getoption("--runtime") != "auto":
        cmd.append(f"--runtime={cfg.getoption('--runtime')}")
    return shlex.join(cmd)


def _write_evidence(item, report, case, record, failure) -> None:
    from . import evidence, exchange

    session = case.session
    results = item.config.getoption("--results")
    where = evidence.case_dir(os.path.join(results, session.spec.name), record["case"])
    frames = list(session.wire.trace)
    evidence.write_pcap(os.path.join(where, "capture.pcap"), frames, evidence.wall_offset())
    addr = session.lab.addr
    record["exchange"] = exchange.build(frames, case.peer.views(), case.target.calls, case.started, failure)
    record["exchange"].update(peer_ip=addr.peer_ip, target_ip=addr.target_ip)
    diagram = exchange.ladder_text(record["exchange"], addr.peer_ip, addr.target_ip)
    log = session.instance.log_since(case.log_marker) if session.instance else "(target gone)"
    with open(os.path.join(where, "ladder.txt"), "w") as f:
        f.write(diagram + "\n")
    with open(os.path.join(where, "agent.log"), "w") as f:
        f.write(log)
    with open(os.path.join(where, "rerun.sh"), "w") as f:
        f.write(record["rerun"] + "\n")
    rel = os.path.relpath(where, results)
    record["evidence"] = {"dir": rel, "pcap": f"{rel}/capture.pcap", "ladder": f"{rel}/ladder.txt",
                          "agent_log": f"{rel}/agent.log"}
    report.sections.append(("synfin exchange (ms from the case's start, numbers relative to the ISNs)", diagram))
    report.sections.append(("synfin evidence", f"{where}/capture.pcap, ladder.txt, agent.log\n"
                                               f"agent log of this case:\n{log[-3000:]}"))


def pytest_report_teststatus(report, config):
    verdict = getattr(report, "synfin_verdict", None)
    if verdict and (report.when == "call" or verdict == "ERROR"):
        return STATUS[verdict]
    return None
