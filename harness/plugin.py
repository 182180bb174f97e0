"""The pytest plugin: options, fixtures, the requirement marker, verdicts and evidence.

A case's verdict belongs to the requirement of the step that decided it (harness/steps.py): the
first step that failed, else the first recorded deviation seen, else the case's own marker.

Verdicts: PASS; FAIL (a MUST violated); WARN (a SHOULD not met: reported, the run still passes);
INFO (a MAY or a choice the RFC leaves open: what the stack chose is recorded); EXPECTED (a
deviation recorded in expectations/<target>.toml, seen as recorded); UNSUPPORTED (the target cannot
express the case); ERROR (the harness or the target broke: never a deviation).
"""
import contextlib
import gc
import json
import os
import pathlib
import shlex
import signal
import sys
import tempfile
import threading

import pytest

from . import expectations, identity, records, targets
from .cleanup import REGISTRY
from .errors import HarnessError
from .notices import notice
from .requirements import LEVELS, lookup
from .results import EXIT_INCOMPLETE, EXIT_USAGE, STATUS, Results

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


class synfin(pytest.exit.Exception):  # noqa: N801 - pytest prints the class name before the message
    """Ends the run before any case, with one line: "synfin: <what is missing; the way out>"."""


synfin.__module__ = "builtins"  # shown as "synfin: ...", not "harness.plugin.synfin: ..."


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
    config._synfin_runs_cases = _runs_cases(config)
    # As the user asked it (the rerun line repeats it), before _preflight settles "auto".
    config._synfin_runtime_asked = getattr(config, "workerinput", {}).get(
        "synfin_runtime_asked", config.getoption("--runtime"))
    if config._synfin_runs_cases and not hasattr(config, "workerinput"):
        unknown = [f"expectations/{n}.toml: {u}" for n, table in config._synfin_expected.items()
                   for u in expectations.unknown_cases(table, str(config.rootpath))]
        if unknown:
            raise pytest.UsageError("recorded deviations name no existing case:\n  " + "\n  ".join(unknown))
        _preflight(config, names)
    for option in ("--results", "--report-dir", "--export-packetdrill"):
        where = config.getoption(option)
        if where:
            problem = _unwritable(where) or (_unusable_results(where, names) if option == "--results" else None)
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
    _stop_on_sigterm(config)
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


def _runs_cases(config) -> bool:
    """The run includes conformance cases (a path under a cases/ folder, or a folder holding
    one): the checks a lab needs are made before it starts, not for synfin's own tests."""
    for arg in config.args or [str(config.rootpath)]:
        path = pathlib.Path(config.invocation_params.dir, arg.split("::", 1)[0]).resolve()
        if "cases" in path.parts or (path / "cases").is_dir():
            return True
    return False


def _preflight(config, names: list[str]) -> None:
    """What a run needs before its first case, each missing thing told in one line: the
    capabilities (exit 4), a runtime every target can run on (exit 4), an engine (exit 2)."""
    if config.option.collectonly or config.option.help or config.option.version:
        return
    missing = missing_capabilities()
    if missing:
        raise synfin(f"needs {' and '.join(missing)} to build its labs and send raw segments; "
                     "run it as root", returncode=EXIT_USAGE)
    for name in names:
        sandbox = targets.get(name).sandbox
        if sandbox:
            from . import sandbox as runsc, uml
            why = {"runsc": runsc, "uml": uml}[sandbox].available()
            if why:
                raise synfin(f"target {name}: {why}", returncode=EXIT_INCOMPLETE)
    requested = config.getoption("--runtime")
    docker_only = [n for n in names if "netns" not in targets.get(n).runtimes]
    if requested == "netns" and docker_only:
        raise pytest.UsageError(f"--runtime=netns: target {docker_only[0]} runs only in a Docker container; "
                                "drop --runtime=netns (or use --target=linux)")
    if requested == "docker" or (requested == "auto" and docker_only):
        from .engine import docker_client
        client, why = docker_client()
        if client is None:
            if requested == "docker":
                raise synfin(f"no Docker engine answers ({why}): start it, or use --runtime=netns "
                             "(the linux target runs in a bare network namespace)", returncode=EXIT_INCOMPLETE)
            raise synfin(f"target {docker_only[0]} runs only in a Docker container, and no Docker engine "
                         f"answers ({why}): start the engine", returncode=EXIT_INCOMPLETE)
        config.option.runtime = "docker"  # settled here: pytest-xdist's workers inherit it


def _stop_on_sigterm(config) -> None:
    """SIGTERM ends a run as Ctrl-C does: the case in progress stops, the targets are closed,
    the partial summary and results.json are written. A second SIGTERM cleans up and dies."""
    if threading.current_thread() is not threading.main_thread():
        return
    second = signal.getsignal(signal.SIGTERM)  # the registry's: clean up, then die by the signal

    def interrupt(signum, frame):
        signal.signal(signal.SIGTERM, second)
        capture = config.pluginmanager.getplugin("capturemanager")
        line = (f"\nsynfin: {signal.Signals(signum).name} received: stopping the run "
                "(as after Ctrl-C: what ran is summarised and written)\n")
        try:  # past pytest's capture of the case in progress, to the terminal
            with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
                sys.stderr.write(line)
                sys.stderr.flush()
        except Exception:
            os.write(2, line.encode())
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _unusable_results(where: str, names: list[str]) -> str | None:
    """What is in the way of results.json or of a target's evidence folder, or None."""
    for name in ("results.json", *names):
        path = os.path.join(where, name)
        if os.path.exists(path) and os.path.isdir(path) == (name == "results.json"):
            return f"{path} is {'a directory' if name == 'results.json' else 'not a directory'}"
    return None


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


@pytest.hookimpl(tryfirst=True)  # before -k and -m deselect: every collected case counts
def pytest_collection_modifyitems(session, config, items):
    if not hasattr(config, "workerinput"):  # a worker's collection is checked by its controller
        unknown = _deviations_without_a_case(config, [case_id(item) for item in items])
        if unknown:
            raise pytest.UsageError("recorded deviations name no case:\n  " + "\n  ".join(unknown))
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


def _deviations_without_a_case(config, collected: list[str]) -> list[str]:
    """Recorded deviations whose case id (or pattern) no collected case of its file matches."""
    if not getattr(config, "_synfin_runs_cases", False) or any("::" in a for a in config.args):
        return []  # a run of chosen node ids collects only part of a file
    problems = []
    for name, table in config._synfin_expected.items():
        problems += [f"expectations/{name}.toml: {u}"
                     for u in expectations.unknown_cases(table, str(config.rootpath), set(collected))]
    return problems


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """The controller's check of what its first worker collected (the workers all collect the same)."""
    config = node.config
    if getattr(config, "_synfin_collection_checked", False) or config.option.markexpr or config.option.keyword:
        return  # what a worker sends is what -m or -k left: a deselected case would look unknown
    config._synfin_collection_checked = True

    def without_target(nodeid: str) -> str:
        for name in config._synfin_targets if len(config._synfin_targets) > 1 else ():
            if nodeid.endswith(f"-{name}]"):
                return nodeid[:-len(name) - 2] + "]"
            if nodeid.endswith(f"[{name}]"):
                return nodeid[:-len(name) - 2]
        return nodeid

    problems = _deviations_without_a_case(config, [without_target(i) for i in ids])
    if problems:
        raise synfin("recorded deviations name no case:\n  " + "\n  ".join(problems), returncode=EXIT_USAGE)


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


@pytest.hookimpl(trylast=True, specname="pytest_configure")  # once every plugin has registered its markers
def pytest_configure_markexpr(config) -> None:
    """-m names markers only: one no case can carry (a typo: "slwo") would select nothing,
    silently."""
    expr = config.option.markexpr
    if not expr or hasattr(config, "workerinput"):
        return
    from _pytest.mark.expression import Expression
    try:
        compiled = Expression.compile(expr)
    except SyntaxError:
        return  # pytest's own -m handling says what is wrong with it
    names: set[str] = set()
    compiled.evaluate(lambda name, **kw: names.add(name) or False)
    known = {line.split(":", 1)[0].split("(", 1)[0].strip() for line in config.getini("markers")}
    unknown = sorted(names - known)
    if unknown:
        raise pytest.UsageError(f"-m {expr!r}: unknown marker {unknown[0]!r}; the cases' markers are "
                                f"{', '.join(sorted(known & {'slow', 'requirement'}))} (pytest --markers lists all)")


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


# -- a pytest-xdist worker that dies ----------------------------------------------------------
# A worker killed mid-case sends nothing more: its controller knows only the node id. Each
# worker tells, at collection, what a record of each of its cases needs; the controller
# records a crashed case from that (Results).
@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    config = node.config
    if not hasattr(config, "_synfin_cases_file"):
        from .cleanup import RUN_ROOT, owner_prefix
        os.makedirs(RUN_ROOT, exist_ok=True)
        where = tempfile.mkdtemp(prefix=f"{owner_prefix()}-cases-", dir=RUN_ROOT)
        REGISTRY.add(f"dir {where}", lambda: __import__("shutil").rmtree(where, ignore_errors=True))
        config._synfin_cases_file = os.path.join(where, "cases.json")
    node.workerinput["synfin_cases_file"] = config._synfin_cases_file
    node.workerinput["synfin_runtime_asked"] = config._synfin_runtime_asked


def pytest_collection_finish(session):
    where = getattr(session.config, "workerinput", {}).get("synfin_cases_file")
    if not where or os.path.exists(where):
        return  # every worker collects the same cases: one of them tells
    static = {}
    for item in session.items:
        mark = item.get_closest_marker("requirement")
        if mark is not None:
            rid, level = _requirement(mark)
            doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
            static[item.nodeid] = {"case": case_id(item), "target": target_of(item), "requirement": rid,
                                   "level": level, "rerun": _rerun(item),
                                   "title": " ".join(doc.strip().split("\n\n", 1)[0].split())}
    tmp = f"{where}.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(static, f)
    os.replace(tmp, where)


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
    missing = missing_capabilities()  # told before the run (_preflight) unless no case path was named
    if missing:
        raise HarnessError(f"synfin needs {' and '.join(missing)} to build its labs and send raw segments; "
                           "run it as root")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    terminal = request.config.pluginmanager.getplugin("terminalreporter")
    worker = hasattr(request.config, "workerinput")

    def visible_notice(line: str) -> None:
        # Image builds and restarts happen inside fixtures, whose output pytest would swallow.
        # On a line of its own: not glued into the progress dots (a worker's stderr reaches the
        # controller's terminal, whose column it cannot know: it starts a new line).
        with capture.global_and_fixture_disabled():
            if worker:
                sys.stderr.write("\n")
            elif terminal is not None and terminal._tw.width_of_current_line:  # mid progress line
                terminal._tw.line()
                terminal.flush()
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
    if not target.instance.alive():
        return  # died during the case (its verdict says so): nothing to put back, the next case restarts it
    try:
        target.reset()
    except HarnessError:
        pass  # the case already reports the broken target


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """After a case's body has returned, its target is fenced (Target.fence): a death during
    the case is then this case's error (_died), never the next one's."""
    result = yield
    case = getattr(item, "_synfin_lab", None)
    if case is not None and case.target.instance is case.session.instance:
        case.target.fence()
    return result


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
        exc = call.excinfo.value if call.excinfo is not None else None
        if exc is not None and case is not None:
            died = _died(case, grace=isinstance(exc, (HarnessError, OSError)))
            if died is not None:
                exc = item._synfin_died = died
        item._synfin_outcome = (steps, steps.finish(exc))
    return item._synfin_outcome


def _died(case, grace: bool = False) -> HarnessError | None:
    """What the case raised, when its target died meanwhile, is a consequence (a peer that
    waited in vain, a link gone down, a broken agent channel): the death is the error. `grace`:
    what it raised says the target is going (its link or channel closed): its end is waited for."""
    from .errors import TargetError

    instance = case.session.instance
    if instance is None or instance is not case.target.instance:
        return None
    how = instance.death(grace=grace)
    if how is None:
        return None
    log = instance.log_tail(20).rstrip("\n")
    calls = case.target.calls
    if calls:
        how += f"; the case's last call to it: {calls[-1]['op']}"
    return TargetError(f"target {case.session.spec.name} died during the case: {how}"
                       + (f"\nits log:\n{log}" if log else "\n(its log is empty)"))


@pytest.hookimpl(tryfirst=True, specname="pytest_runtest_makereport")
def pytest_runtest_makereport_quiet(item, call):
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
        report.longrepr = message  # what broke, not the fixtures' traceback
    if report.when != "call":
        return report
    case = getattr(item, "_synfin_lab", None)
    steps, outcome = _settled(item, call)
    exc = call.excinfo.value if call.excinfo is not None else None
    verdict, message = outcome.verdict, outcome.message
    died = getattr(item, "_synfin_died", None)
    if verdict == "ERROR" and died is not None:
        message = outcome.message = f"{type(died).__name__}: {died}"
    elif verdict == "ERROR" and call.excinfo is not None:
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
    asked = cfg._synfin_runtime_asked
    if asked != "auto":
        cmd.append(f"--runtime={asked}")
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
    if report.when == "???" and report.failed:  # pytest-xdist: the worker died mid-case (Results)
        return STATUS["ERROR"]
    return None
