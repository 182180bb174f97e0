"""The matrix of index.html as data: areas, then requirements, then one row per case; one cell
per target in every row (a case a target did not run gets an empty cell, never a missing one)."""
import re

from .words import anchor, case_file, case_label, fingerprint, gist, humanise

# Display order, as in the terminal summary (harness/results.py).
VERDICTS = ("PASS", "INFO", "EXPECTED", "WARN", "FAIL", "UNSUPPORTED", "ERROR")
LEVELS = ("MUST", "SHOULD", "MAY", "INFO")  # the schema's, strongest first
QUIET = {"PASS", "INFO"}  # rows of only these hide under "show only deviations"


def natural(text: str) -> list:
    """Sort key that puts R9293-3.10 after R9293-3.9."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text) if p]


def identity(info: dict) -> str:
    """A target's stack and version in a few words: 'lwIP 2.1.3', 'kernel 6.1.0-18-amd64'."""
    version, stack = info.get("version"), info.get("stack")
    if not version:
        return stack or ""
    described = re.match(rf"\s*(\S+(?: \S+)?) {re.escape(version)}\b", info.get("description") or "")
    if described:  # the description names the stack as its authors spell it
        return f"{described.group(1)} {version}"
    if version == info.get("kernel"):
        return f"kernel {version}"
    return f"{stack} {version}" if stack else version


def target_names(doc: dict) -> list[str]:
    names = list(doc["targets"])
    names += sorted({r["target"] for r in doc["results"]} - set(names))
    return names


def by_case(doc: dict) -> dict[str, dict[str, dict]]:
    cases: dict[str, dict[str, dict]] = {}
    for r in doc["results"]:
        cases.setdefault(r["case"], {})[r["target"]] = r
    return cases


def requirement_of(records: dict[str, dict]) -> dict:
    """The requirement the case itself checks (the verdict may be charged to a step's)."""
    r = next(iter(records.values()))
    text = r.get("case_requirement_text")
    if text is None and r["requirement"] == r["case_requirement"]:
        text = r.get("requirement_text")
    if text is None:
        text = next((x.get("requirement_text") for x in records.values()
                     if x["requirement"] == r["case_requirement"] and x.get("requirement_text")), "")
    return {"id": r["case_requirement"], "level": r["case_level"], "text": text or ""}


def _what_came(record: dict) -> str | None:
    """A deviation in a few words: what came instead, from 'expected X; received Y'."""
    text = record.get("signature") or record["message"].split("\n", 1)[0]
    if not text:
        return None
    if "; received " in text:
        text = "got " + text.split("; received ", 1)[1]
    # Cut on a word, not at a colon as a choice is: 'MAY-2 (1): the new ISS ...' needs what follows.
    return text if len(text) <= 60 else text[:60].rsplit(" ", 1)[0] + "…"


def cell_words(record: dict) -> list[dict]:
    """What the stack chose; for an INFO verdict without choices, what was measured; for a
    deviation, what came instead."""
    if record.get("choices"):
        return fingerprint(record["choices"])
    if record["verdict"] == "INFO" and record.get("notes"):
        return fingerprint(record["notes"], limit=2)
    if record["verdict"] in ("EXPECTED", "WARN", "FAIL", "ERROR", "UNSUPPORTED"):
        came = _what_came(record)
        return [{"key": "", "words": came, "full": came}] if came else []
    return []


def change_text(record: dict, change) -> list[str]:
    if change.new:
        return ["new"]
    out = []
    if change.was_verdict:
        out.append(f"was {change.was_verdict}")
    for key in change.changed_keys:
        old = change.was_choices.get(key)
        out.append(f"was: {humanise(key)} {gist(old)}" if old is not None else f"was: no {humanise(key)}")
    return out


def _tip(record: dict) -> str | None:
    """The cell's tooltip; none for a plain PASS (the page stays small)."""
    if record["verdict"] == "PASS" and not record.get("step") and not record.get("choices") and not record["message"]:
        return None
    lines = [f"{record['verdict']} on {record['target']}"]
    if record.get("step"):
        lines[0] += f" at step '{record['step']}' ({record['requirement']} {record['level']})"
    if record["message"]:
        lines.append(record["message"].splitlines()[0][:300])
    for key, value in {**(record.get("choices") or {}), **(record.get("notes") or {})}.items():
        lines.append(f"{humanise(key)}: {value}")
    return "\n".join(lines)


def cell(record: dict | None, target: str, href: str, change) -> dict:
    if record is None:
        return {"target": target, "verdict": None, "href": href, "words": [], "flag": False,
                "change": None, "tip": f"not run on {target}"}
    return {"target": target, "verdict": record["verdict"], "href": href, "words": cell_words(record),
            "flag": not record["expectation_met"], "tip": _tip(record),
            "change": {"new": change.new, "lines": change_text(record, change)} if change else None}


def build(doc: dict, slugs: dict[str, str], comparison=None) -> dict:
    targets = target_names(doc)
    changes = comparison.changes if comparison else {}
    areas: dict[str, dict[str, dict]] = {}
    for case, records in by_case(doc).items():
        area = next(iter(records.values()))["area"]
        req = requirement_of(records)
        # Keyed by id, level and text: the same requirement can be checked as a MUST and recorded as
        # INFO, and an id cited by several catalogue rows stands for each row's own sentence.
        group = areas.setdefault(area, {}).setdefault((req["id"], req["level"], req["text"]), {**req, "rows": []})
        cells = [cell(records.get(t), t, f"cases/{slugs[case]}.html#{anchor(t)}", changes.get((case, t)))
                 for t in targets]
        present = [c for c in cells if c["verdict"]]
        group["rows"].append({
            "case": case, "label": case_label(case), "file": case_file(case), "href": f"cases/{slugs[case]}.html",
            "title": next((r.get("title") for r in records.values() if r.get("title")), ""), "cells": cells,
            "quiet": all(c["verdict"] in QUIET for c in present),
            "changed": any(c["change"] for c in cells)})
    out = []
    for area in sorted(areas, key=natural):
        groups = sorted(areas[area].values(), key=lambda g: (natural(g["id"]), LEVELS.index(g["level"]), g["text"]))
        for g in groups:
            g["rows"].sort(key=lambda row: natural(row["case"]))
            g["quiet"] = all(row["quiet"] for row in g["rows"])
            g["changed"] = any(row["changed"] for row in g["rows"])
        rows = [row for g in groups for row in g["rows"]]
        out.append({"name": area, "requirements": groups, "cases": len(rows), "counts": _area_counts(rows, targets),
                    "deviating": sum(1 for row in rows if not row["quiet"]),
                    "changed": sum(1 for row in rows if row["changed"])})
    return {"targets": [column(doc, t) for t in targets], "areas": out,
            "cells": sum(len(g["rows"]) for a in out for g in a["requirements"]) * len(targets)}


def _area_counts(rows: list[dict], targets: list[str]) -> list[list[tuple[str, int]]]:
    """Per target (in column order), the verdicts of the area's cells worth a look."""
    out = []
    for i, _ in enumerate(targets):
        counts: dict[str, int] = {}
        for row in rows:
            verdict = row["cells"][i]["verdict"]
            if verdict and verdict not in QUIET:
                counts[verdict] = counts.get(verdict, 0) + 1
        out.append(sorted(counts.items(), key=lambda vn: VERDICTS.index(vn[0])))
    return out


def column(doc: dict, target: str) -> dict:
    info = doc["targets"].get(target, {})
    counts = {v: 0 for v in VERDICTS}
    for r in doc["results"]:
        if r["target"] == target:
            counts[r["verdict"]] += 1
    facts = [f"{k}: {v}" for k, v in (("description", info.get("description")), ("runtime", info.get("runtime")),
                                      ("kernel", info.get("kernel")),
                                      ("image", (info.get("image") or {}).get("tag")),
                                      ("expectations", info.get("expectations"))) if v]
    facts += [f"{k} = {v}" for k, v in (info.get("sysctls") or {}).items()]
    return {"name": target, "identity": identity(info), "description": info.get("description"),
            "error": info.get("error"), "facts": "\n".join(facts),
            "counts": [(v, n) for v, n in counts.items() if n]}
