"""Reading results.json documents: validated against the schema, merged, rebased.

The schema (harness/schema/results-1.schema.json) is the contract between the run and the
report; a document that does not satisfy it is refused here, with one line saying why, so the
rest of the report can trust every field the schema requires.
"""
import copy
import json
import os
from functools import lru_cache
from importlib import resources

import jsonschema

from .errors import BadInput

SCHEMA_ID = "synfin-results/1"
EVIDENCE_KEYS = ("dir", "pcap", "ladder", "agent_log", "packetdrill")


@lru_cache(maxsize=1)
def schema() -> dict:
    text = resources.files("harness").joinpath("schema", "results-1.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def _where(error: jsonschema.ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return path.lstrip(".") or "the top level"


def validate(doc, name: str = "results.json") -> dict:
    """`doc` itself if it is a synfin-results/1 document, else BadInput naming the first problem."""
    if not isinstance(doc, dict):
        raise BadInput(f"{name}: not a synfin results document (a JSON {type(doc).__name__}, not an object)")
    if "schema" not in doc:
        raise BadInput(f"{name}: not {SCHEMA_ID} (no 'schema' field)")
    if doc["schema"] != SCHEMA_ID:
        raise BadInput(f"{name}: not {SCHEMA_ID} (schema {doc['schema']!r})")
    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        message = error.message if len(error.message) < 160 else error.message[:157] + "..."
        raise BadInput(f"{name}: invalid {SCHEMA_ID} at {_where(error)}: {message}")
    return doc


def read_json(path: str, what: str = "a results.json"):
    """The JSON document at `path`; BadInput (one line) if it is missing, not text, empty or cut short."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory, not {what}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not a JSON text file (not UTF-8)") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read ({exc.strerror})") from None
    if not text.strip():
        raise BadInput(f"{path}: empty file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # A run killed while writing leaves a prefix: the parser runs out of text, at the very
        # end or inside a string that never closes.
        end = len(text.rstrip())
        if exc.pos >= end or exc.msg.startswith("Unterminated string"):
            raise BadInput(f"{path}: truncated JSON at line {text.count(chr(10), 0, end) + 1}") from None
        raise BadInput(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})") from None


def load(path: str) -> dict:
    """The document at `path`, validated; BadInput (one line) if it is missing, cut short or not ours."""
    return validate(read_json(path), path)


def rebase(doc: dict, from_dir: str, to_dir: str) -> dict:
    """A copy of `doc` whose evidence paths, relative to `from_dir`, are made relative to `to_dir`
    (so documents from several directories can be merged and read from one)."""
    out = copy.deepcopy(doc)
    for record in out["results"]:
        evidence = record.get("evidence") or {}
        for key in EVIDENCE_KEYS:
            if isinstance(evidence.get(key), str):
                evidence[key] = os.path.relpath(os.path.join(from_dir, evidence[key]), to_dir)
    return out


def merge(docs: list[dict]) -> dict:
    """One document from several runs, shards or single-target runs: the targets united, records
    keyed by (case, target), a later document's record replacing an earlier one's."""
    if not docs:
        raise BadInput("no results.json to report on")
    if len(docs) == 1:
        return docs[0]
    targets: dict = {}
    records: dict[tuple[str, str], dict] = {}
    for doc in docs:
        targets.update(doc["targets"])
        for record in doc["results"]:
            records[(record["case"], record["target"])] = record
    last = docs[-1]
    merged = {
        "schema": SCHEMA_ID,
        "synfin": last["synfin"],
        "started": min(d["started"] for d in docs),
        "finished": max((d["finished"] for d in docs if d.get("finished")), default=None),
        "targets": targets,
        "results": sorted(records.values(), key=lambda r: (r["case"], r["target"])),
    }
    commands = {tuple(d["command"]) for d in docs if "command" in d}
    if len(commands) == 1:
        merged["command"] = list(commands.pop())
    codes = [d["exit_code"] for d in docs if d.get("exit_code") is not None]
    if codes:
        merged["exit_code"] = max(codes)  # 0 only if every part passed
    return merged
