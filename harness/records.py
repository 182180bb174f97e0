"""One result record per case × target, as results.json keeps it (harness/schema/results-1.schema.json)."""
import inspect
import os
import time

from .requirements import lookup, rows


def _text(rid: str, row: str | None = None) -> str:
    """The catalogue's text for `rid`: that of `row` when the case names the row it checks (an id
    cited by several rows belongs to the first otherwise)."""
    if row in rows() and rid in rows()[row].ids:
        return rows()[row].text
    try:
        return lookup(rid).text
    except KeyError:
        return ""


def _area(case: str) -> str:
    parts = case.split("::", 1)[0].split("/")
    return parts[parts.index("cases") + 1] if "cases" in parts[:-1] else parts[-2] if len(parts) > 1 else ""


def _expectations(steps) -> list[dict]:
    out = []
    for step, deviation in steps.deviations.items():
        ran = [s for s in steps.steps if (s is steps.body if step is None else s.base == step and s is not steps.body)]
        observed = list(deviation.observed) if isinstance(deviation.observed, tuple) else deviation.observed
        out.append({"step": step, "observed": observed, "rfc": deviation.rfc, "why": deviation.why,
                    "intermittent": deviation.intermittent, "seen": any(s.verdict == "EXPECTED" for s in ran)})
    return out


def build(item, case: str, target: str, verdict: str, rid: str, level: str, message: str, steps,
          deciding, rerun: str, lab=None) -> dict:
    """`deciding`: the step whose requirement the verdict is charged to (None: the case's body)."""
    doc = inspect.cleandoc(getattr(item, "function", None).__doc__ or "") if hasattr(item, "function") else ""
    if lab is not None and lab.doc:
        doc = lab.doc
    marker = item.get_closest_marker("requirement")
    row = marker.kwargs.get("row") if marker is not None else None
    body = steps.body
    decided_by = deciding or body
    record = {
        "case": case, "nodeid": item.nodeid, "target": target, "area": _area(case),
        "title": doc.split("\n\n", 1)[0].replace("\n", " "), "doc": doc,
        "requirement": rid, "level": level, "requirement_text": _text(rid, row if rid == body.requirement else None),
        "case_requirement": body.requirement, "case_level": body.level,
        "case_requirement_text": _text(body.requirement, row),
        "verdict": verdict, "step": deciding.name if deciding is not None else None, "message": message,
        "signature": decided_by.observed,
        "expectations": _expectations(steps),
        "expectation_met": verdict not in ("FAIL", "ERROR"),
        "choices": {}, "notes": {}, "settings": {},
        "steps": steps.records(), "checks": steps.checks,
        "durations": {"call": 0.0, "wall": 0.0},
        "evidence": None, "rerun": rerun, "exchange": None,
    }
    if lab is not None:
        record.update(
            choices={k: str(v) for k, v in lab.choices.items()}, notes={k: str(v) for k, v in lab.notes.items()},
            settings=dict(lab.target.settings))
        record["durations"].update(call=time.monotonic() - lab.started, waited=lab.waited(), blocked=lab.blocked(),
                                   start=round(time.time() - (time.monotonic() - lab.started), 3))
    record["worker"] = os.environ.get("PYTEST_XDIST_WORKER")
    return record


def crashed(nodeid: str, static: dict | None, target: str, message: str) -> dict:
    """The record of a case whose pytest-xdist worker died while running it: ERROR, with what
    the worker told about the case at collection (`static`; None if it told nothing)."""
    static = static or {}
    case = static.get("case", nodeid)
    rid, level = static.get("requirement", "unknown"), static.get("level", "MUST")
    return {
        "case": case, "nodeid": nodeid, "target": static.get("target", target), "area": _area(case),
        "title": static.get("title", ""), "doc": static.get("title", ""),
        "requirement": rid, "level": level, "requirement_text": _text(rid),
        "case_requirement": rid, "case_level": level, "case_requirement_text": _text(rid),
        "verdict": "ERROR", "step": None, "message": message, "signature": None,
        "expectations": [], "expectation_met": False,
        "choices": {}, "notes": {}, "settings": {}, "steps": [], "checks": [],
        "durations": {"call": 0.0, "wall": 0.0},
        "evidence": None, "rerun": static.get("rerun", ""), "exchange": None, "worker": static.get("worker"),
    }
