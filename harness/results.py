"""Run results: one record per case, written as results.json and summarised in the terminal.

Runs in the controller (under pytest-xdist the workers' reports arrive here), so the file and the
summary cover every worker.
"""
import json
import os

STATUS = {  # verdict -> (pytest category, letter, word)
    "PASS": ("passed", ".", "PASS"),
    "INFO": ("info", "i", "INFO"),
    "WARN": ("warn", "W", "WARN"),
    "EXPECTED": ("expected", "x", "EXPECTED"),
    "FAIL": ("failed", "F", "FAIL"),
    "UNSUPPORTED": ("unsupported", "U", "UNSUPPORTED"),
    "ERROR": ("error", "E", "ERROR"),
}


class Results:
    def __init__(self, config):
        self.config = config
        self.records: list[dict] = []
        self._wall: dict[str, float] = {}  # setup + call + teardown, per case

    @property
    def path(self) -> str:
        return os.path.join(self.config.getoption("--results"), self.config.getoption("--target"), "results.json")

    def pytest_runtest_logreport(self, report):
        self._wall[report.nodeid] = self._wall.get(report.nodeid, 0.0) + report.duration
        props = dict(report.user_properties)
        verdict = props.get("synfin_verdict")
        if not verdict or (report.when != "call" and verdict != "ERROR"):
            return
        rid, level = props.get("synfin_requirement", [None, None])
        case_rid, case_level = props.get("synfin_case_requirement", [rid, level])
        self.records.append({
            "case": report.nodeid,
            # The requirement the verdict belongs to: the failed step's, or the case's own.
            "requirement": rid, "level": level, "verdict": verdict, "step": props.get("synfin_step"),
            "case_requirement": case_rid, "case_level": case_level,
            "message": props.get("synfin_message", ""),
            "choices": props.get("synfin_choices", {}), "notes": props.get("synfin_notes", {}),
            "settings": props.get("synfin_settings", {}),
            "steps": props.get("synfin_steps", []), "checks": props.get("synfin_checks", []),
            "duration": report.duration, "waited": props.get("synfin_waited", 0.0),
            "blocked": props.get("synfin_blocked", 0.0),
            "evidence": props.get("synfin_evidence"), "rerun": dict(report.sections).get("synfin rerun"),
        })

    def pytest_sessionfinish(self, session):
        if hasattr(self.config, "workerinput") or not self.records:
            return
        for r in self.records:
            r["wall"] = self._wall.get(r["case"], r["duration"])
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "w") as f:
            json.dump({"target": self.config.getoption("--target"),
                       "results": sorted(self.records, key=lambda r: r["case"])}, f, indent=1)

    def pytest_terminal_summary(self, terminalreporter):
        if not self.records:
            return
        tr = terminalreporter
        tr.section(f"synfin verdicts for target {self.config.getoption('--target')}")
        counts = {}
        for r in self.records:
            counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
        tr.write_line("  ".join(f"{v} {counts[v]}" for v in STATUS if v in counts))
        order = list(STATUS)
        for r in sorted(self.records, key=lambda r: (order.index(r["verdict"]), r["case"])):
            if r["verdict"] == "PASS":
                continue
            where = f" at step {r['step']!r}" if r.get("step") else ""
            tr.write_line(f"{r['verdict']:<11} {r['requirement']} ({r['level']}){where}  {r['case']}")
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
            if r["verdict"] in ("FAIL", "WARN", "ERROR", "EXPECTED") and r["evidence"]:
                tr.write_line(f"            evidence: {r['evidence']}/ (capture.pcap, ladder.txt, agent.log)")
            if r["verdict"] in ("FAIL", "WARN", "ERROR"):
                tr.write_line(f"            rerun: {r['rerun']}")
        tr.write_line(f"results: {self.path}")
