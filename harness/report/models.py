"""The state-machines page (models.html): the Mealy machines synfin-learn learned, and their diffs.

`read(DIR)` takes what `synfin-learn` wrote into DIR: models (`<target>-<side>.json`,
synfin-model/1, with the `.svg` and `.dot` beside them) and diffs (`<a>-vs-<b>.json`, or any file
whose schema is synfin-model-diff/1). A file that claims to be one of these, by its name or its
schema, and cannot be read as one is refused with one line naming it; other JSON files are left
out (and listed on the page). Everything is read before the site is written, so a refusal leaves
the previous report as it was.

`page(...)` turns what was read into the data models.html.j2 shows; `copy(...)` puts the drawings
into the site.
"""
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from functools import lru_cache

import jsonschema

from .errors import BadInput
from .load import read_json
from .matrix import identity as identity_words, natural
from .words import target_dir

MODEL_SCHEMA = "synfin-model/1"
DIFF_SCHEMA = "synfin-model-diff/1"
_SCHEMAS = {MODEL_SCHEMA: "model-1.schema.json", DIFF_SCHEMA: "model-diff-1.schema.json"}
SIDES = ("server", "client")
_MODEL_NAME = re.compile(r".+-(?:server|client)\.json$")
_DIFF_NAME = re.compile(r".+-vs-.+\.json$")
PLACEHOLDER = "Graphviz (dot) is not installed"  # harness/learn/model.py's stand-in drawing says so
MARKS = {True: ("confirmed", "confirmed live", "the word replayed on both live stacks showed the same difference"),
         False: ("unconfirmed", "not confirmed", "the word replayed on both live stacks did not show this difference"),
         None: ("unreplayed", "not replayed", "the word was not replayed on the live stacks: this is what the models predict")}


@dataclass
class ModelFile:
    path: str
    stem: str
    data: dict


@dataclass
class DiffFile:
    path: str
    stem: str
    data: dict


@dataclass
class ModelDir:
    """What --models DIR holds, read and checked."""
    path: str
    models: list[ModelFile] = field(default_factory=list)
    diffs: list[DiffFile] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # JSON files that are neither (by name and schema)
    redrawn: set[str] = field(default_factory=set)    # stems whose stand-in drawing copy() redrew


# -- reading --------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _validator(schema_id: str):
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schema", _SCHEMAS[schema_id])
    try:
        with open(here, encoding="utf-8") as f:
            return jsonschema.Draft202012Validator(json.load(f))
    except FileNotFoundError:
        return None  # checked by _check_* alone


def _where(error: jsonschema.ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return path.lstrip(".") or "the top level"


def _json(path: str):
    return read_json(path, "a model or diff JSON file")


def _schema_check(path: str, data: dict, schema_id: str, what: str) -> None:
    validator = _validator(schema_id)
    if validator is None:
        return
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        message = error.message if len(error.message) < 160 else error.message[:157] + "..."
        raise BadInput(f"{path}: not a valid {what} ({schema_id}) at {_where(error)}: {message}")


def _check_model(path: str, data: dict) -> None:
    """What the page relies on beyond the schema: a complete machine whose states all exist."""
    _schema_check(path, data, MODEL_SCHEMA, "learned model")
    states = [s["id"] for s in data["states"]]
    if data["initial"] not in states:
        raise BadInput(f"{path}: not a usable model: the initial state {data['initial']!r} is not among its states")
    seen = set()
    for i, t in enumerate(data["transitions"]):
        if t["from"] not in states or t["to"] not in states:
            bad = t["from"] if t["from"] not in states else t["to"]
            raise BadInput(f"{path}: not a usable model: transitions[{i}] names state {bad!r}, which it does not list")
        seen.add((t["from"], t["input"]))
    for s in states:
        for letter in data["alphabet"]:
            if (s, letter) not in seen:
                raise BadInput(f"{path}: not a usable model: no transition from {s} on input {letter}")
    check = data.get("settings_check")
    if check is not None:
        dependent = check.get("dependent", [])
        if not isinstance(dependent, list) or not all(
                isinstance(x, dict) and all(isinstance(x.get(k, []), list) for k in ("word", "learned", "default"))
                for x in dependent):
            raise BadInput(f"{path}: not a usable model: settings_check.dependent is not a list of "
                           "{word, learned, default} (each a list of names)")


def _check_diff(path: str, data: dict) -> None:
    _schema_check(path, data, DIFF_SCHEMA, "model diff")
    for i, d in enumerate(data["differences"]):
        for key in ("a", "b"):
            if len(d[key]) != len(d["word"]):
                raise BadInput(f"{path}: not a usable model diff: differences[{i}] has {len(d[key])} outputs "
                               f"of {key} for a word of {len(d['word'])} inputs")


def read(path: str) -> ModelDir:
    """The models and diffs in directory `path`; BadInput (one line, naming the file) for one that
    cannot be used, or for a directory without any."""
    if not os.path.isdir(path):
        raise BadInput(f"{path}: no such directory (--models names the directory synfin-learn wrote)"
                       if not os.path.exists(path) else f"{path}: not a directory (--models names a directory)")
    out = ModelDir(os.path.abspath(path))
    try:
        names = sorted(os.listdir(path), key=natural)
    except OSError as exc:
        raise BadInput(f"{path}: cannot read ({exc.strerror})") from None
    for name in names:
        full = os.path.join(path, name)
        if not name.endswith(".json") or not os.path.isfile(full):
            continue
        stem = name[: -len(".json")]
        by_name = "diff" if _DIFF_NAME.match(name) else "model" if _MODEL_NAME.match(name) else None
        data = _json(full) if by_name else _peek(full)
        if data is None:
            out.ignored.append(name)
            continue
        schema = data.get("schema") if isinstance(data, dict) else None
        kind = {MODEL_SCHEMA: "model", DIFF_SCHEMA: "diff"}.get(schema) if isinstance(schema, str) else None
        if kind is None and by_name is None:
            out.ignored.append(name)
            continue
        kind = kind or by_name
        if not isinstance(data, dict):
            raise BadInput(f"{full}: not a synfin {kind} (a JSON {type(data).__name__}, not an object)")
        want = MODEL_SCHEMA if kind == "model" else DIFF_SCHEMA
        if schema != want:
            found = f"schema {schema!r}" if "schema" in data else "no 'schema' field"
            raise BadInput(f"{full}: named like a {'model diff' if kind == 'diff' else 'learned model'} "
                           f"but not {want} ({found})")
        if kind == "model":
            _check_model(full, data)
            out.models.append(ModelFile(full, stem, data))
        else:
            _check_diff(full, data)
            out.diffs.append(DiffFile(full, stem, data))
    if not out.models and not out.diffs:
        raise BadInput(f"{path}: no learned model (<target>-<side>.json) or model diff in it")
    return out


def _peek(path: str):
    """A JSON file named like neither: its content if it says it is a model or a diff, else None
    (another tool's file; not ours to refuse)."""
    try:
        data = _json(path)
    except BadInput:
        return None
    if isinstance(data, dict) and data.get("schema") in (MODEL_SCHEMA, DIFF_SCHEMA):
        return data
    return None


# -- the page's data ------------------------------------------------------------------------------
def slug(stem: str) -> str:
    return target_dir(stem)


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _text(value)
    if isinstance(value, int):
        return f"{value:,}".replace(",", "\u202f")  # a thin space between thousands
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}".replace(",", "\u202f")


def _text(value) -> str:
    """Any JSON value in a few words: 'k=v, k=v' for an object, 'a, b' for a list."""
    if value is None:
        return "—"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items()) or "—"
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value) or "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return _number(value)
    return str(value)


def duration(seconds) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return _text(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 120:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


_LEARNING = (("algorithm", "algorithm"), ("oracle", "equivalence oracle"), ("queries", "queries"),
             ("steps", "steps (inputs sent)"), ("wall_s", "wall time"), ("rounds", "rounds"), ("lanes", "lanes"))


def learning_facts(learning: dict) -> list[tuple[str, str]]:
    out = []
    for key, label in _LEARNING:
        if key not in learning:
            continue
        value = learning[key]
        if key == "oracle" and isinstance(value, dict):
            text = str(value.get("name", "?"))
            effort = value.get("effort")
            if effort:
                text += f" (effort: {_text(effort)})"
            rest = {k: v for k, v in value.items() if k not in ("name", "effort")}
            if rest:
                text += f"; {_text(rest)}"
        elif key == "wall_s":
            text = duration(value)
        elif key == "lanes" and isinstance(value, int):
            text = f"{value} (stack instances queried in parallel)"
        else:
            text = _number(value)
        out.append((label, text))
    for key, value in learning.items():  # whatever else the learner recorded, as it wrote it
        if key == "contradictions" and isinstance(value, list):
            out.append(("contradictions settled by a majority", _contradictions(value)))
        elif key not in dict(_LEARNING):
            out.append((key.replace("_", " "), _text(value)))
    return out


def _contradictions(settled: list) -> str:
    """'SYN ACK: SA A (3×), SA TIMEOUT (1×); …': each word, then every answer it got and how often."""
    parts = []
    for c in settled:
        try:
            answers = ", ".join(f"{' '.join(out)} ({n}×)" for out, n in c["answers"])
            parts.append(f"{' '.join(c['word'])}: {answers}")
        except (KeyError, TypeError, ValueError):
            parts.append(_text(c))
    return "; ".join(parts) or "none"


def identity_facts(info: dict) -> tuple[str, list[tuple[str, str]]]:
    words = identity_words(info) if info else ""
    facts = [(k, _text(v)) for k, v in info.items() if v not in (None, "", {}, [])]
    return words, facts


def _outputs_row(mine: list[str], theirs: list[str]) -> list[dict]:
    """One cell per input: the output, and whether it differs from the other sequence's."""
    return [{"output": o, "differs": i < len(theirs) and o != theirs[i]} for i, o in enumerate(mine)]


def first_difference(a: list[str], b: list[str]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _requirement(rid: str | None, links: dict[str, str], texts) -> dict | None:
    if not rid:
        return None
    return {"id": rid, "href": links.get(rid), "text": texts(rid)}


def catalogue_text(rid: str) -> str:
    """The requirement's sentence from docs/requirements*.md, where the checkout has them."""
    try:
        from harness.requirements import lookup
        req = lookup(rid)
    except Exception:  # no catalogue beside the package, or an id it does not list: the id alone
        return ""
    return f"{req.level} {req.section}: {req.text}"


MATRIX_CELL = "cases/matrix/test_cells.py::test_cell["
SHOWN_BY_CELL = ("EXPECTED", "FAIL", "WARN")  # the cell, too, sees the stack part from the RFC


def matrix_cells(cases: dict[str, dict[str, dict]], slugs: dict[str, str]) -> dict[tuple[str, str], dict]:
    """(target, oracle row) -> the verdict of the matrix's cell for that row on that target and
    the cell's page: a finding of a learned model is the same (state, segment) as that cell."""
    out = {}
    for case, records in cases.items():
        if case.startswith(MATRIX_CELL) and case.endswith("]"):
            row = case[len(MATRIX_CELL):-1]
            for target, r in records.items():
                out[(target, row)] = {"row": row, "verdict": r["verdict"], "href": f"cases/{slugs[case]}.html"}
    return out


def _conformance(entries: list[dict], links, texts, target: str, cells: dict | None,
                 access: dict[str, list]) -> dict:
    forbidden, conforming, other = [], [], []
    for e in entries:
        row = {"state": e.get("state"), "tcp_state": e.get("tcp_state"), "input": e.get("input"),
               "output": e.get("output"), "allowed": [_text(a) for a in (e.get("allowed") or [])],
               "requirement": _requirement(e.get("requirement"), links, texts), "step": e.get("step"),
               "verdict": e.get("verdict"), "why": e.get("why") or "", "rfc": e.get("rfc") or "",
               "level": e.get("level"), "next_tcp_state": e.get("next_tcp_state"), "row": e.get("row"),
               "cell": (cells or {}).get((target, e.get("row"))), "access": access.get(e.get("state")) or []}
        {"forbidden": forbidden, "conforms": conforming}.get(e.get("verdict"), other).append(row)
    shown = sum(1 for f in forbidden if f["cell"] and f["cell"]["verdict"] in SHOWN_BY_CELL)
    return {"forbidden": forbidden, "conforming": conforming, "other": other, "total": len(entries),
            "with_results": cells is not None, "shown_by_cells": shown}


def _settings_check(check: dict | None) -> dict | None:
    if check is None:
        return None
    dependent = []
    for d in check.get("dependent") or []:
        learned, default = list(d.get("learned") or []), list(d.get("default") or [])
        dependent.append({"word": list(d.get("word") or []), "learned": _outputs_row(learned, default),
                          "default": _outputs_row(default, learned),
                          "state": d.get("state"), "input": d.get("input")})
    return {"sampled": check.get("sampled"), "words": check.get("words"), "dependent": dependent}


def _drawing(m: ModelFile, redrawn: set[str] = frozenset()) -> dict:
    """Where the model's SVG and DOT are, and what to say about the drawing."""
    base = os.path.join(os.path.dirname(m.path), m.stem)
    svg = base + ".svg" if os.path.isfile(base + ".svg") else None
    dot = base + ".dot" if os.path.isfile(base + ".dot") else None
    placeholder = False
    if svg:
        try:
            with open(svg, encoding="utf-8", errors="replace") as f:
                placeholder = PLACEHOLDER in f.read(4096)
        except OSError:
            svg = None
    return {"svg_src": svg, "dot_src": dot, "placeholder": placeholder and m.stem not in redrawn,
            "redrawn": m.stem in redrawn,
            "svg": f"models/{slug(m.stem)}.svg" if svg else None,
            "dot": f"models/{slug(m.stem)}.dot" if dot else None,
            "svg_name": m.stem + ".svg", "dot_name": m.stem + ".dot"}


def model_page(m: ModelFile, links: dict[str, str], texts, redrawn: set[str] = frozenset(),
               cells: dict | None = None) -> dict:
    d = m.data
    access = {s["id"]: s["access"] for s in d["states"]}
    tcp = {s["id"]: s.get("tcp_state") for s in d["states"]}
    words, facts = identity_facts(d.get("identity") or {})
    order = {s["id"]: i for i, s in enumerate(d["states"])}
    letters = {a: i for i, a in enumerate(d["alphabet"])}
    transitions = sorted(d["transitions"], key=lambda t: (order[t["from"]], letters.get(t["input"], len(letters))))
    loops = sum(1 for t in transitions if t["from"] == t["to"])
    return {
        "anchor": "m-" + slug(m.stem), "file": os.path.basename(m.path), "stem": m.stem,
        "target": d["target"], "side": d["side"], "identity": words, "identity_facts": facts,
        "alphabet": d["alphabet"], "outputs": d["outputs"],
        "states_n": len(d["states"]), "transitions_n": len(d["transitions"]), "self_loops": loops,
        "tcp_states_known": any(tcp.values()),
        "learning": learning_facts(d.get("learning") or {}),
        "settings": [{"name": s.get("name"), "value": s.get("value"), "default": s.get("default"), "why": s.get("why")}
                     for s in d.get("settings") or []],
        "settings_check": _settings_check(d.get("settings_check")),
        "conformance": _conformance(d.get("conformance") or [], links, texts, d["target"], cells, access),
        "drawing": _drawing(m, redrawn),
        "states": [{"id": s["id"], "access": access[s["id"]], "tcp_state": tcp[s["id"]],
                    "initial": s["id"] == d["initial"]} for s in d["states"]],
        "transitions": [{**t, "tcp_from": tcp.get(t["from"]), "tcp_to": tcp.get(t["to"])} for t in transitions],
    }


def _labels(a: dict, b: dict) -> tuple[str, str]:
    """Short names for a diff's two models, longer only as far as needed to tell them apart."""
    for make in (lambda s: s["target"] or s["side"], lambda s: f"{s['target']} {s['side']}".strip(),
                 lambda s: os.path.basename(s.get("file") or "") or s["target"]):
        la, lb = make(a), make(b)
        if la != lb:
            return la, lb
    return "a", "b"


def _model_anchor(side: dict, models: list[dict]) -> str | None:
    """The section of the model a diff names: by its file's name, else by target and side."""
    name = os.path.basename(side.get("file") or "")
    for m in models:
        if name and m["file"] == name:
            return m["anchor"]
    same = [m for m in models if m["target"] == side["target"] and m["side"] == side["side"]]
    return same[0]["anchor"] if len(same) == 1 else None


def diff_page(f: DiffFile, models: list[dict], links: dict[str, str], texts) -> dict:
    d = f.data
    la, lb = _labels(d["a"], d["b"])
    sides = {}
    for key, label in (("a", la), ("b", lb)):
        s = d[key]
        sides[key] = {"label": label, "target": s["target"], "side": s["side"], "file": s.get("file"),
                      "href": _model_anchor(s, models)}
    counts = {"confirmed": 0, "unconfirmed": 0, "unreplayed": 0}
    differences = []
    for n, x in enumerate(d["differences"], 1):
        mark, mark_text, mark_why = MARKS[x.get("confirmed")]
        counts[mark] += 1
        at = first_difference(x["a"], x["b"])
        live = x.get("live") or None
        rows = [("a", la, x["a"], x["b"], False), ("b", lb, x["b"], x["a"], False)]
        if isinstance(live, dict):
            for key, label, model_out in (("a", la, x["a"]), ("b", lb, x["b"])):
                seen = live.get(key)
                if isinstance(seen, list):
                    rows.append((key, f"{label}, live", [str(o) for o in seen], model_out, True))
        table = []
        for key, label, mine, other, is_live in rows:
            cells = []
            for i in range(len(x["word"])):
                out = mine[i] if i < len(mine) else None
                # A model's output is marked where it parts from the other model's; a live output
                # where it parts from what its own model predicted.
                ref = other[i] if i < len(other) else None
                cells.append({"output": out, "differs": out is not None and out != ref,
                              "at": i == at})
            table.append({"key": key, "label": label, "live": is_live, "cells": cells})
        differences.append({
            "n": n, "word": x["word"], "at": at, "mark": mark, "mark_text": mark_text, "mark_why": mark_why,
            "a_out": x["a"][at] if at is not None and at < len(x["a"]) else None,
            "b_out": x["b"][at] if at is not None and at < len(x["b"]) else None,
            "input_at": x["word"][at] if at is not None and at < len(x["word"]) else None,
            "state_a": x.get("state_a"), "state_b": x.get("state_b"),
            "tcp_state_a": x.get("tcp_state_a"), "tcp_state_b": x.get("tcp_state_b"),
            "requirement": _requirement(x.get("requirement"), links, texts),
            "table": table, "live_extra": {k: v for k, v in live.items() if k not in ("a", "b")} if isinstance(live, dict) else {},
        })
    return {"anchor": "d-" + slug(f.stem), "file": os.path.basename(f.path), "a": sides["a"], "b": sides["b"],
            "alphabet": d["alphabet"], "left_out": d["left_out"], "differences": differences, "counts": counts}


def page(md: ModelDir, requirement_links: dict[str, str] | None = None, texts=catalogue_text,
         cells: dict | None = None) -> dict:
    """models.html's data. `requirement_links`: requirement id -> href of its place in the report;
    `cells`: the matrix's cells in the report's results (matrix_cells), None without results."""
    links = requirement_links or {}
    models = [model_page(m, links, texts, md.redrawn, cells) for m in md.models]
    models.sort(key=lambda m: (natural(m["target"]), SIDES.index(m["side"]) if m["side"] in SIDES else 9, m["file"]))
    diffs = [diff_page(f, models, links, texts) for f in md.diffs]
    return {"dir": md.path, "models": models, "diffs": diffs, "ignored": md.ignored,
            "forbidden": sum(len(m["conformance"]["forbidden"]) for m in models),
            "differences": sum(len(d["differences"]) for d in diffs)}


def copy(md: ModelDir, site: str) -> None:
    """Each model's drawing and DOT into site/models/; a stand-in drawing (learned without
    Graphviz) is redrawn from the DOT when Graphviz is here now (noted in md.redrawn). Call it
    before page()."""
    dest = os.path.join(site, "models")
    os.makedirs(dest, exist_ok=True)
    for m in md.models:
        drawing = _drawing(m)
        if drawing["dot_src"]:
            shutil.copyfile(drawing["dot_src"], os.path.join(site, *drawing["dot"].split("/")))
        if drawing["svg_src"]:
            target = os.path.join(site, *drawing["svg"].split("/"))
            if drawing["placeholder"] and drawing["dot_src"] and shutil.which("dot"):
                if _redraw(drawing["dot_src"], target):
                    md.redrawn.add(m.stem)
                    continue
            shutil.copyfile(drawing["svg_src"], target)


def _redraw(dot_path: str, target: str) -> bool:
    import subprocess
    try:
        done = subprocess.run([shutil.which("dot"), "-Tsvg", "-o", target, dot_path], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and os.path.isfile(target)
