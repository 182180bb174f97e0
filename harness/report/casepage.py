"""One case page as data: the case, its requirement, and one column per target."""
import re

from . import ladder
from .matrix import change_text, identity, requirement_of
from .words import anchor, case_file, case_label, humanise

HEAD_LINES = 3  # of a message, shown before the <details> with all of it


def _facts(values: dict | None, names=humanise) -> list[tuple[str, str]]:
    return [(names(k), str(v)) for k, v in (values or {}).items()]


def paragraphs(doc: str) -> list[str]:
    """A docstring's paragraphs, its hard line breaks undone."""
    return [" ".join(p.split()) for p in doc.split("\n\n") if p.strip()]


def _message(text: str) -> dict:
    lines = text.splitlines()
    head = "\n".join(lines[:HEAD_LINES])
    long = len(lines) > HEAD_LINES or len(head) > 400
    return {"head": head if len(head) <= 400 else head[:400] + "…", "full": text if long else None}


def _charged(record: dict) -> dict | None:
    """The requirement the verdict went to, when it is not the case's own."""
    if record["requirement"] == record["case_requirement"]:
        return None
    return {"id": record["requirement"], "level": record["level"], "text": record.get("requirement_text", "")}


def _expected_observed(record: dict) -> tuple[list[str], str]:
    """What the deciding step expected and what came, from the failure and the signature
    ('expected X; received Y')."""
    failure = (record.get("exchange") or {}).get("failure")
    expected = list(failure["expected"]) if failure else []
    observed = record.get("signature") or ""
    split = re.match(r"expected (.*?); received (.*)$", observed)
    if split:
        expected = expected or [split.group(1)]
        observed = "received " + split.group(2)
    return expected, observed


def _duration(d: dict) -> str:
    text = f"{d['wall']:.2f} s"
    if d.get("waited"):
        text += f", of which {d['waited']:.2f} s waiting on purpose"
    return text


def column(target: str, info: dict, record: dict | None, links: list[dict], change) -> dict:
    base = {"target": target, "anchor": anchor(target), "identity": identity(info), "record": record is not None}
    if record is None:
        return base
    expected, observed = _expected_observed(record)
    return {**base,
            "verdict": record["verdict"], "step": record.get("step"), "charged": _charged(record),
            "expected": expected, "observed": observed, "message": _message(record["message"]),
            "unexpected": not record["expectation_met"], "expectations": record["expectations"],
            "choices": _facts(record.get("choices")), "notes": _facts(record.get("notes")),
            "settings": _facts(record.get("settings"), names=str),  # sysctl names stay as they are
            "steps": record.get("steps") or [], "duration": _duration(record["durations"]),
            "ladder": ladder.svg(record), "links": links, "rerun": record["rerun"],
            "change": {"new": change.new, "lines": change_text(record, change)} if change else None}


def build(case: str, records: dict[str, dict], doc: dict, targets: list[str],
          links: dict[str, list[dict]], changes: dict) -> dict:
    first = next(iter(records.values()))
    return {"case": case, "label": case_label(case), "file": case_file(case), "area": first["area"],
            "title": next((r.get("title") for r in records.values() if r.get("title")), ""),
            "doc": paragraphs(next((r.get("doc") or r.get("title") or "" for r in records.values()
                                    if r.get("doc") or r.get("title")), "")),
            "requirement": requirement_of(records),
            "columns": [column(t, doc["targets"].get(t, {}), records.get(t), links.get(t, []),
                               changes.get((case, t))) for t in targets]}
