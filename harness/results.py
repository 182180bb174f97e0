"""Run results: one record per case × target, written as results.json and summarised in the
terminal; the run's exit code.

Runs in the controller (under pytest-xdist the workers' reports arrive here), so the file and the
summary cover every worker. Exit codes: 0 every result as expected, 1 a result nobody expected
(a FAIL, or a recorded deviation no longer met), 2 verdicts incomplete (an ERROR, an interrupted
run), 4 a usage error (pytest's own).
"""
import datetime
import json
import os
import sys

from . import identity

SCHEMA = "synfin-results/1"
STATUS = {  # verdict -> (pytest category, letter, word)
    "PASS": ("passed", ".", "PASS"),
    "INFO": ("info", "i", "INFO"),
    "WARN": ("warn", "W", "WARN"),
    "EXPECTED": ("expected", "x", "EXPECTED"),
    "FAIL": ("failed", "F", "FAIL"),
    "UNSUPPORTED": ("unsupported", "U", "UNSUPPORTED"),
    "ERROR": ("error", "E", "ERROR"),
}
EXIT_OK, EXIT_UNEXPECTED, EXIT_INCOMPLETE, EXIT_USAGE = 0, 1, 2, 4


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def exit_code(records: list[dict], pytest_status: int, unjudged: int = 0) -> int:
    """`unjudged`: failed reports that carry no verdict (a worker that crashed, a teardown error)."""
    if pytest_status == EXIT_USAGE:
        return EXIT_USAGE
    if pytest_status in (2, 3) or unjudged or any(r["verdict"] == "ERROR" for r in records):
        return EXIT_INCOMPLETE  # interrupted, internal error, or a harness/infrastructure ERROR
    if any(r["verdict"] == "FAIL" for r in records):
        return EXIT_UNEXPECTED
    if pytest_status == 1:
        return EXIT_INCOMPLETE if records else 1  # failed, but not by a verdict
    return pytest_status if not records else EXIT_OK


class Results:
    def __init__(self, config):
        self.config = config
        self.records: list[dict] = []
        self.identities: dict[str, dict] = {}
        self.started = _now()
        self.exit = None
        self.interrupted = False
        self._wall: dict[str, float] = {}  # setup + call + teardown, per node id
        self.unjudged: list[str] = []  # failed reports without a verdict: a teardown error
        self.crashed: list[str] = []  # pytest-xdist workers that died mid-case
        # Only the process that writes results.json asks who synfin is.
        self.synfin = None if hasattr(config, "workerinput") else identity.SynfinIdentity()

    @property
    def directory(self) -> str:
        return self.config.getoption("--results")

    @property
    def path(self) -> str:
        return os.path.join(self.directory, "results.json")

    def pytest_runtest_logreport(self, report):
        self._wall[report.nodeid] = self._wall.get(report.nodeid, 0.0) + report.duration
        record = getattr(report, "synfin", None)
        if record is None and report.when == "???" and report.failed:  # pytest-xdist: the worker died
            record = self._crashed(report)
        if record is None:
            if report.failed and "cases" in report.nodeid.split("::", 1)[0].split("/")[:-1]:
                self.unjudged.append(f"{report.nodeid} ({report.when})")
            return
        if report.when == "call":
            record["durations"]["call"] = report.duration
        ident = getattr(report, "synfin_identity", None)
        known = self.identities.get(record["target"])
        # Several workers start the same target: one start that worked says what it is.
        if ident and (known is None or known.get("error") or not ident.get("error")):
            self.identities[record["target"]] = ident
        self.records.append(record)

    def _crashed(self, report) -> dict | None:
        from . import records
        where = getattr(self.config, "_synfin_cases_file", None)
        try:
            with open(where) as f:
                static = json.load(f).get(report.nodeid)
        except (OSError, TypeError, ValueError):
            static = None
        if static is None and "cases" not in report.nodeid.split("::", 1)[0].split("/")[:-1]:
            return None  # not a case: synfin's own tests under -n
        worker = getattr(getattr(report, "node", None), "gateway", None)
        name = getattr(worker, "id", "?")
        self.crashed.append(name)
        names = self.config._synfin_targets
        target = next((n for n in names if report.nodeid.endswith(f"{n}]")), names[0])
        return records.crashed(report.nodeid, static, target,
                               f"worker crashed: pytest-xdist's worker {name} died while running this case "
                               "(its process ended: no verdict; what it had made was swept)")

    def document(self) -> dict:
        for r in self.records:
            r["durations"]["wall"] = self._wall.get(r["nodeid"], r["durations"]["call"])
        names = self.config._synfin_targets
        targets = {}
        for name in names:
            ident = self.identities.get(name)
            if ident is None:  # no case reached it (all deselected, or the run stopped before)
                from .targets import get
                ident = identity.target(get(name), None, None)
            ident = dict(ident)
            path = os.path.join(self.config.getoption("--expectations"), f"{name}.toml")
            ident["expectations"] = os.path.relpath(path) if os.path.exists(path) else None
            targets[name] = ident
        return {
            "schema": SCHEMA, "synfin": (self.synfin or identity.SynfinIdentity()).result(), "started": self.started, "finished": _now(),
            "command": list(sys.argv), "exit_code": self.exit, "targets": targets,
            "results": sorted(self.records, key=lambda r: (r["case"], names.index(r["target"])
                                                           if r["target"] in names else 99)),
        }

    def pytest_sessionfinish(self, session):
        if hasattr(self.config, "workerinput"):
            return
        self.exit = exit_code(self.records, int(session.exitstatus), len(self.unjudged))
        session.exitstatus = self.exit
        if self.crashed:
            self._sweep()
        # An interrupted run (Ctrl-C, SIGTERM) writes what it has, even before its first verdict.
        self.interrupted = int(session.exitstatus) == EXIT_INCOMPLETE and getattr(
            self.config, "_synfin_runs_cases", False)
        if not self.records and not self.interrupted:
            return
        os.makedirs(self.directory, exist_ok=True)
        doc = self.document()
        try:
            exported = self.config.getoption("--export-packetdrill")
            if exported:
                self._export_packetdrill(doc, exported)
            report = self.config.getoption("--report-dir")
            if report:
                self._write_report(doc, report)
        finally:
            # Written last, whatever failed before: the verdicts are never lost to a broken extra.
            session.exitstatus = doc["exit_code"] = self.exit
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                # Compact: json's C encoder is three times faster than its indenting one.
                f.write(json.dumps(doc, separators=(",", ":")) + "\n")
            os.replace(tmp, self.path)  # never a truncated results.json

    def _sweep(self) -> None:
        """A dead worker's labs and containers (their owner is gone): removed now, not by the next run."""
        from . import runtime
        runtime.sweep(runtime.docker_client()[0])

    def _write_report(self, doc: dict, where: str) -> None:
        from .report import BadInput, write_site
        try:
            write_site(doc, where, results_dir=self.directory)
            self.report = os.path.join(where, "index.html")
        except (BadInput, OSError) as exc:
            self.report = f"not written: {exc}"
            self.exit = max(self.exit, EXIT_INCOMPLETE)
        except Exception as exc:  # a report bug must not cost the run its results.json
            self.report = f"not written: {type(exc).__name__} in the report: {exc}"
            self.exit = max(self.exit, EXIT_INCOMPLETE)

    def _export_packetdrill(self, doc: dict, where: str) -> None:
        """A .pkt per case run on a Linux target (harness/packetdrill.py); other targets have none."""
        from . import packetdrill
        self.exported, self.not_exported = [], []
        for r in doc["results"]:
            if r["target"] != "linux" or not r.get("exchange"):
                continue
            try:
                path = packetdrill.write(r, where)
            except packetdrill.NotExportable as exc:
                self.not_exported.append((r["nodeid"], str(exc)))
                continue
            except Exception as exc:  # an exchange the exporter cannot read: told, not fatal
                self.not_exported.append((r["nodeid"], f"{type(exc).__name__} in the exporter: {exc}"))
                continue
            self.exported.append(path)
            r["evidence"]["packetdrill"] = os.path.relpath(path, self.directory)

    def pytest_terminal_summary(self, terminalreporter):
        if not self.records and not self.interrupted:
            return
        tr = terminalreporter
        names = self.config._synfin_targets
        for name in names:
            mine = [r for r in self.records if r["target"] == name]
            if mine:
                self._summary(tr, name, mine)
        tr.write_line(f"results: {self.path}")
        if getattr(self, "report", None):
            tr.write_line(f"report: {self.report}")
        if getattr(self, "exported", None) is not None:
            tr.write_line(f"packetdrill: {len(self.exported)} scripts in {self.config.getoption('--export-packetdrill')}"
                          + (f"; not exportable: {len(self.not_exported)}" if self.not_exported else ""))
            for nodeid, why in self.not_exported:
                tr.write_line(f"    {nodeid}: {why}")

    def _summary(self, tr, name: str, records: list[dict]) -> None:
        tr.section(f"synfin verdicts for target {name}")
        tr.write_line(_counts(records))
        order = list(STATUS)
        for r in sorted(records, key=lambda r: (order.index(r["verdict"]), r["case"])):
            if r["verdict"] == "PASS":
                continue
            where = f" at step {r['step']!r}" if r.get("step") else ""
            tr.write_line(f"{r['verdict']:<11} {r['requirement']} ({r['level']}){where}  {r['nodeid']}")
            if where:
                tr.write_line(f"            (the case checks {r['case_requirement']} ({r['case_level']}))")
            facts = {**r.get("settings", {}), **r.get("choices", {}), **r["notes"]}
            if facts:
                tr.write_line("            " + "; ".join(f"{k}: {v}" for k, v in facts.items()))
            if r["verdict"] == "EXPECTED" and r["message"]:
                tr.write_line("            " + r["message"].splitlines()[0])
            elif r["verdict"] == "WARN" and r["message"]:
                # A WARN passes, so pytest shows no failure section: the deviation is told here.
                for line in r["message"].splitlines():
                    tr.write_line("            " + line)
            elif r["verdict"] != "INFO" and r["message"]:
                lines = r["message"].splitlines()
                # "fails differently from the recorded deviation (...):" is followed by what came.
                for line in lines[:2] if lines[0].endswith(":") else lines[:1]:
                    tr.write_line("            " + line)
            if r["verdict"] in ("FAIL", "WARN", "ERROR", "EXPECTED") and r.get("evidence"):
                tr.write_line(f"            evidence: {os.path.join(self.directory, r['evidence']['dir'])}/ "
                              "(capture.pcap, ladder.txt, agent.log)")
            if r["verdict"] in ("FAIL", "WARN", "ERROR"):
                tr.write_line(f"            rerun: {r['rerun']}")

    def pytest_unconfigure(self, config):
        """The last line of the run: what the exit code says."""
        if hasattr(config, "workerinput") or self.exit is None or not (self.records or self.interrupted):
            return
        tr = config.pluginmanager.getplugin("terminalreporter")
        meaning = {EXIT_OK: "every result as expected", EXIT_UNEXPECTED: "unexpected results (FAIL)",
                   EXIT_INCOMPLETE: "verdicts incomplete (ERROR or interrupted)"}.get(self.exit, "")
        per = "; ".join(f"{n}: {_counts([r for r in self.records if r['target'] == n])}"
                        for n in config._synfin_targets if any(r["target"] == n for r in self.records))
        line = f"synfin: exit {self.exit}, {meaning} — {per or 'no case finished'}"
        if self.unjudged:
            line += f"; {len(self.unjudged)} without a verdict: {', '.join(self.unjudged[:3])}"
        if tr is not None:
            tr.write_line(line)
        else:
            print(line)


def _counts(records: list[dict]) -> str:
    counts = {}
    for r in records:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    return "  ".join(f"{v} {counts[v]}" for v in STATUS if v in counts)
