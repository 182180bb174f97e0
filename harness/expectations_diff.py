"""synfin-expectations: bring expectations/<target>.toml up to date with what a run saw.

    synfin-expectations diff RESULTS.json... [--expectations DIR] [--write]

Every step of every record in the results is judged again against the deviations recorded now
(so a file already brought up to date shows no difference), the way harness/steps.py judges it:

- appeared: a step deviated (FAIL or WARN) and nothing is recorded for it: a new [[deviation]]
  with a stable part of its first line as `observed` and a `why` that says it is not explained yet;
- changed: a step deviated, but not as recorded: `observed` is replaced (a list of alternatives,
  or a text that still matched another instance of the step, gets the new text added);
- disappeared: the step passed, or the case went through without the step the record names.

Left alone: an intermittent deviation that did not show, the records of a case the results do
not hold, of a step the case did not reach, and of a case that ended in ERROR or UNSUPPORTED
(a broken target or an inexpressible case says nothing about the stack).

The files are edited block by block (a [[deviation]] and the comments right above it), so every
other line, comment and blank line stays as it was. Without --write nothing is written.
Exit status: 0 no difference, 1 differences (shown or written), 4 bad input.
"""
import argparse
import difflib
import json
import os
import re
import sys
import tomllib
from dataclasses import dataclass

import jsonschema
import tomlkit

from . import expectations
from .requirements import lookup

SCHEMA_ID = "synfin-results/1"
SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema", "results-1.schema.json")
USAGE_ERROR = 4

# The texts harness/expectations.py and harness/steps.py put in front of, or in place of, a deviation.
DIFFERENTLY = "fails differently from the recorded deviation"
DID_NOT_OCCUR = "the recorded deviation did not occur"
STALE = "a deviation is recorded for step "
NOT_JUDGED = ("ERROR", "UNSUPPORTED")

# What changes from run to run in a deviation's first line, and so must stay out of `observed`.
VARYING = re.compile(
    r"win=\d+"                               # the window follows the buffers' state
    r"|\s*\[[^\]\n]*\]"                      # options: timestamp values, mss
    r"|\(\+\d+ more\)"                       # how many further segments came
    r"|\d+(?:\.\d+)? s\b"                    # a wait: set by the target's timing
    r"|0x[0-9a-fA-F]+"                       # ISNs
    r"|\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?"     # addresses and ports
    r"|(?<![\w.])-?\d{8,}(?![\w.])"          # absolute sequence numbers (an ISN not known)
)
BEFORE_ISN = re.compile(r"(?<==)-\d+")


class UsageError(Exception):
    """Bad input: reported in one line, exit status 4."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


@dataclass
class Change:
    kind: str                 # "appeared", "disappeared" or "changed"
    case: str
    step: str | None
    detail: str               # one line for the reader: what the run showed
    observed: str = ""        # appeared, changed: the new text
    keep_old: bool = False    # changed: the old text still matched another instance of the step
    entry: dict | None = None  # appeared: the new [[deviation]]


@dataclass
class Outcome:
    """One step of one run: it passed, or it deviated with `message` (the deviation's own text)."""
    deviated: bool
    message: str
    step: dict
    run_entry: dict | None    # the deviation the run had recorded for the step, if any


# -- reading ---------------------------------------------------------------------------------
def read_results(paths: list[str]) -> tuple[dict, dict]:
    """target -> case -> (record, started of its run); target -> its identity (from `targets`).
    A case × target given in several files: the last file's record counts."""
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        schema = json.load(f)
    validator = jsonschema.validators.validator_for(schema)(schema)
    records, targets = {}, {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file") from None
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: not complete JSON ({exc}); was the run cut short?") from None
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_ID:
            found = doc.get("schema") if isinstance(doc, dict) else None
            raise UsageError(f"{path}: schema {found!r} is not {SCHEMA_ID!r}")
        error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "the top level"
            raise UsageError(f"{path}: does not follow {SCHEMA_ID} at {where}: {_short(error.message)}")
        for name, identity in doc["targets"].items():
            targets[name] = identity
        for record in doc["results"]:
            records.setdefault(record["target"], {})[record["case"]] = (record, doc["started"])
    for name in set(records) | set(targets):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise UsageError(f"target name {name!r} cannot name an expectations file")
    return records, targets


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def outcomes(record: dict) -> tuple[dict, set, bool]:
    """Step name as recorded (None: the case's body) -> its outcomes; every step name the case
    has; whether the body went through (so a record naming a step it lacks is stale)."""
    body_name = record["case"].split("::")[-1].split("[")[0]
    steps = record.get("steps") or []
    if not steps and record.get("step") is None:  # no step list: the record is the body's
        steps = [{"step": body_name, "requirement": record["case_requirement"], "level": record["case_level"],
                  "verdict": record["verdict"], "message": record["message"]}]
    if body_name not in {s["step"] for s in steps} and steps:
        body_name = steps[-1]["step"]  # the body is listed after the steps it contains
    run_entries = {e["step"]: e for e in record["expectations"]}
    out, names, body_passed = {}, set(), False
    for step in steps:
        is_body = step["step"] == body_name
        # "passive open #2" is the second "passive open": deviations are recorded by the first name.
        name = None if is_body else re.sub(r" #\d+$", "", step["step"])
        if not is_body:
            names.add(name)
        verdict, message = step["verdict"], step.get("message", "")
        run_entry = run_entries.get(name)
        passed = verdict in ("PASS", "INFO") or (verdict == "FAIL" and message.startswith(DID_NOT_OCCUR)) or (
            is_body and verdict == "FAIL" and message.startswith(STALE))
        if is_body:
            body_passed = passed
        if passed:
            out.setdefault(name, []).append(Outcome(False, "", step, run_entry))
        elif verdict in ("FAIL", "WARN"):
            if message.startswith(DIFFERENTLY):  # "...(expected to see '...'):\n<the deviation>"
                message = message.partition("\n")[2]
            out.setdefault(name, []).append(Outcome(True, message or step.get("observed") or "", step, run_entry))
        elif verdict == "EXPECTED":
            prefix = f"recorded deviation ({run_entry['rfc']}): {run_entry['why']}\n" if run_entry else ""
            if prefix and message.startswith(prefix):
                message = message[len(prefix):]
            out.setdefault(name, []).append(Outcome(True, message, step, run_entry))
        # NOT RUN, RUNNING: nothing to learn from the step
    return out, names, body_passed


# -- judging ---------------------------------------------------------------------------------
def judge(record: dict, recorded: dict, started: str, tally: dict) -> list[Change]:
    """What has to change in the recorded deviations of one case (`recorded`: step -> Deviation)
    for this record to come out as recorded."""
    case = record["case"]
    steps = record.get("steps") or []
    if record["verdict"] in NOT_JUDGED or any(s["verdict"] in NOT_JUDGED for s in steps):
        tally["in ERROR/UNSUPPORTED cases"] += len(recorded)
        return []
    seen, names, body_passed = outcomes(record)
    changes = []
    for name in sorted(set(seen) | set(recorded), key=lambda n: (n is None, n or "")):
        deviation, runs = recorded.get(name), seen.get(name, [])
        deviated = [o for o in runs if o.deviated]
        where = "" if name is None else f", step {name!r}"
        if deviation is None:
            if deviated:
                first = deviated[0]
                line = first_line(first.message)
                entry = {"case": case}
                if name is not None:
                    entry["step"] = name
                observed = stable_text(first.message) or first.step.get("observed") or line
                entry.update(observed=observed, rfc=section(first.step["requirement"]),
                             why=f"UNEXPLAINED: seen in run {started}; say why (the stack's source line)")
                changes.append(Change("appeared", case, name, f"{case}{where}: {line}", entry=entry))
            continue
        if deviated:
            unmatched = [o for o in deviated if not shows(deviation, o)]
            if unmatched:
                line = first_line(unmatched[0].message)
                changes.append(Change("changed", case, name, f"{case}{where}: now {line}",
                                      observed=stable_text(unmatched[0].message) or line,
                                      keep_old=len(unmatched) < len(deviated)))
        elif runs:
            if deviation.intermittent:
                tally["intermittent not seen"] += 1
            else:
                changes.append(Change("disappeared", case, name, f"{case}{where}: passed (a fixed bug?)"))
        elif name is not None and name not in names and body_passed:
            changes.append(Change("disappeared", case, name, f"{case}{where}: the case has no such step"))
        else:
            tally["at steps not reached"] += 1
    return changes


def shows(deviation: expectations.Deviation, outcome: Outcome) -> bool:
    """The deviation, as recorded now, is seen in this outcome (harness/expectations.apply)."""
    if outcome.run_entry is not None and outcome.step["verdict"] == "EXPECTED":
        run_observed = outcome.run_entry["observed"]
        run_observed = tuple(run_observed) if isinstance(run_observed, list) else run_observed
        if run_observed == deviation.observed:
            return True
    texts = (deviation.observed,) if isinstance(deviation.observed, str) else deviation.observed
    return any(text in outcome.message for text in texts)


def first_line(message: str) -> str:
    return message.split("\n", 1)[0]


def stable_text(message: str) -> str:
    """A part of the deviation's first line that the next run will show too: what came, with the
    note of what was expected just before it, and nothing that depends on ISNs, ports, windows,
    options or timing."""
    lines = message.split("\n")
    text = lines[0]
    if text.endswith(":") and len(lines) > 1:  # "... but the target sent:" names it on the next line
        text += "\n" + lines[1]
    spans = [m.span() for m in VARYING.finditer(text)]
    # A negative number in what came is counted from an ISN the segment does not belong to
    # (an older incarnation's): it moves with both ISNs.
    received = text.find("; received ")
    received = text.find("received ") if received < 0 else received
    if received >= 0:
        spans += [m.span() for m in BEFORE_ISN.finditer(text, received)]
    pieces, at = [], 0
    for start, end in sorted(spans):
        if start >= at:
            pieces.append((text[at:start], True))
        at = max(at, end)
    pieces.append((text[at:], False))
    pieces = [(p, cut) for p, cut in pieces if p.strip()]
    if not pieces:
        return text.strip()
    telling = [p for p in pieces if "received " in p[0] or "sent:" in p[0]]
    piece, cut = telling[-1] if telling else max(pieces, key=lambda p: len(p[0].strip()))
    i = piece.rfind("; received ")
    if i >= 0:
        start = _note_start(piece, i)
        piece = piece[start:] if start is not None else piece[i + 2:]
    piece = piece.lstrip(" ,;:\n")
    # A cut one keeps its trailing space: "ack=1 " does not match "ack=10".
    return piece if cut else piece.rstrip()


def _note_start(text: str, end: int) -> int | None:
    """Where the parenthesised note ending at text[end-1] opens (notes nest: "(RST (after FIN))")."""
    if end == 0 or text[end - 1] != ")":
        return None
    depth = 0
    for i in range(end - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return None


def section(rid: str) -> str:
    """The RFC section of a requirement, without the catalogue's evidence tags ("[R]")."""
    try:
        text = lookup(rid).section
    except KeyError:
        return rid
    return re.sub(r"(\s*\[[^\]]*\])+\s*$", "", text) or rid


# -- editing ---------------------------------------------------------------------------------
HEADER = re.compile(r"\s*\[\[\s*deviation\s*\]\]\s*(#.*)?$")


def split_blocks(text: str) -> tuple[str, list[str]]:
    """The text before the first [[deviation]], and each [[deviation]] with the comment lines
    right above it (those of the first stay with the file's opening text)."""
    lines = text.splitlines(keepends=True)
    heads = [i for i, line in enumerate(lines) if HEADER.match(line)]
    starts = []
    for n, h in enumerate(heads):
        start = h
        while n > 0 and start - 1 > heads[n - 1] and lines[start - 1].lstrip().startswith("#"):
            start -= 1
        starts.append(start)
    preamble = "".join(lines[:starts[0]]) if starts else text
    blocks = ["".join(lines[s:e]) for s, e in zip(starts, starts[1:] + [len(lines)])]
    return preamble, blocks


def _key(entry: dict) -> tuple:
    return entry.get("case"), entry.get("step")


def edit(text: str, changes: list[Change], target: str) -> str:
    """`text` with the changes made to its blocks; every other line as it was."""
    preamble, blocks = split_blocks(text)
    entries = [tomllib.loads(b).get("deviation", [{}])[0] for b in blocks]
    if len(blocks) != len(tomllib.loads(text).get("deviation", [])):
        raise UsageError(f"{target}.toml: cannot tell its [[deviation]] blocks apart; edit it by hand")
    index = {_key(e): i for i, e in enumerate(entries)}
    for change in changes:
        if change.kind == "appeared":
            continue
        i = index[(change.case, change.step)]
        if change.kind == "disappeared":
            blocks[i] = ""
            continue
        doc = tomlkit.parse(blocks[i])
        table = doc["deviation"][0]
        new = new_observed(table["observed"], change)
        if isinstance(table["observed"], list):
            table["observed"].append(change.observed)  # in place: the array keeps its layout
        else:
            table["observed"] = _array(new) if isinstance(new, list) else new
        blocks[i] = tomlkit.dumps(doc)
    out = preamble + "".join(blocks)
    if not out.strip():
        out = f"# Known deviations of {target} (see harness/expectations.py for the format).\n"
    out = out.rstrip("\n") + "\n"
    for change in changes:
        if change.kind == "appeared":
            doc = tomlkit.document()
            aot = tomlkit.aot()
            aot.append(tomlkit.item(change.entry))
            doc.append("deviation", aot)
            out += "\n" + tomlkit.dumps(doc)
    return out


def _array(texts: list[str]):
    array = tomlkit.array()
    array.extend(texts)
    return array


def new_observed(old, change: Change):
    """A list of alternatives gets one more; a text is replaced, unless another instance of the
    step still showed it."""
    if isinstance(old, list):
        return [str(o) for o in old] + [change.observed]
    return [str(old), change.observed] if change.keep_old else change.observed


def check_edit(new_text: str, old_text: str, changes: list[Change], target: str) -> None:
    """The edited file loads, and holds exactly the old deviations with the changes made."""
    old = {_key(e): e["observed"] for e in tomllib.loads(old_text).get("deviation", [])}
    wanted = dict(old)
    for c in changes:
        if c.kind == "appeared":
            wanted[(c.case, c.step)] = c.entry["observed"]
        elif c.kind == "disappeared":
            del wanted[(c.case, c.step)]
        else:
            wanted[(c.case, c.step)] = new_observed(old[(c.case, c.step)], c)
    got = {_key(e): e["observed"] for e in tomllib.loads(new_text).get("deviation", [])}
    if got != wanted:
        raise UsageError(f"{target}.toml: the edit did not come out as intended; edit it by hand")


# -- the command -----------------------------------------------------------------------------
def _label(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def diff(paths: list[str], directory: str, write: bool, out=None) -> int:
    out = out or sys.stdout
    if not os.path.isdir(directory):
        raise UsageError(f"--expectations {directory}: no such directory")
    records, targets = read_results(paths)
    summaries, pending, differences = [], [], False
    for target in sorted(set(records) | set(targets)):
        path = os.path.join(directory, f"{target}.toml")
        try:
            recorded = expectations.load(target, directory)
        except (ValueError, tomllib.TOMLDecodeError) as exc:  # TOMLDecodeError is a ValueError too
            raise UsageError(f"{path}: {_short(str(exc))}") from None
        cases = records.get(target, {})
        if not cases:
            why = (targets.get(target) or {}).get("error")
            summaries.append(f"{target}: not run{f' ({_short(why, 100)})' if why else ''}; left alone")
            continue
        tally = {"intermittent not seen": 0, "in cases not run": 0, "at steps not reached": 0, "in ERROR/UNSUPPORTED cases": 0}
        changes = []
        for case, steps in recorded.items():
            if case in cases:
                record, started = cases[case]
                changes += judge(record, steps, started, tally)
            else:
                tally["in cases not run"] += len(steps)
        for case in sorted(set(cases) - set(recorded)):
            record, started = cases[case]
            changes += judge(record, {}, started, tally)
        counts = {k: sum(c.kind == k for c in changes) for k in ("appeared", "disappeared", "changed")}
        line = f"{target}: " + ", ".join(f"{n} {k}" for k, n in counts.items())
        alone = [f"{n} {k}" for k, n in tally.items() if n]
        summaries.append(line + (f" (left alone: {', '.join(alone)})" if alone else ""))
        if not changes:
            continue
        differences = True
        old = open(path, encoding="utf-8", newline="").read() if os.path.exists(path) else ""
        new = edit(old, changes, target)
        check_edit(new, old, changes, target)
        for c in changes:
            out.write(f"# {target}: {c.kind:<11} {c.detail}\n")
        label = _label(path)
        out.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True), label,
                                            f"{label} (from {', '.join(paths)})"))
        out.write("\n")
        pending.append((path, new))
    for line in summaries:
        out.write(line + "\n")
    if write:
        for path, new in pending:
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(new)
            out.write(f"wrote {_label(path)}\n")
    elif pending:
        out.write("nothing written; --write applies the diff above\n")
    return 1 if differences else 0


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="synfin-expectations",
                     description="Compare a run's results.json with expectations/<target>.toml.")
    commands = parser.add_subparsers(dest="command", metavar="diff")
    p = commands.add_parser("diff", help="show (and with --write apply) what the run says should change")
    p.add_argument("results", nargs="*", metavar="RESULTS.json")
    p.add_argument("--expectations", default=expectations.DEFAULT_DIR, metavar="DIR",
                   help="directory of <target>.toml files (default: expectations/)")
    p.add_argument("--write", action="store_true", help="apply the diff to the files")
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError("no command; use: synfin-expectations diff RESULTS.json...")
        if not args.results:
            raise UsageError("no results given; use: synfin-expectations diff RESULTS.json...")
        return diff(args.results, args.expectations, args.write)
    except UsageError as exc:
        print(f"synfin-expectations: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
