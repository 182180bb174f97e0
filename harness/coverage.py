"""`synfin-coverage`: every row of the requirement catalogue (docs/requirements.md, families A–F)
with the cases that check it, and the rows no case checks.

A case checks a row when it cites one of the row's ids: in its @requirement marker, or in a step
it opens (`lab.step(name, id)`, or an opening of harness/caselab.py it calls); a matrix cell
(generated from harness/oracle.py) checks its row's id. An id cited by
several rows belongs to its first row (harness/requirements.py); a case that checks a later one
says so with `@requirement(id, level, row="A15")`. A row that cannot be checked black-box is
listed in docs/uncovered.toml with the reason:

    [[row]]
    row = "A14"
    why = "broadcast and multicast SYNs need a second link layer ..."

Exit status: 0 every row covered or explained, 1 a row neither, 4 bad input.
"""
import argparse
import ast
import os
import sys
import tomllib

from .requirements import _DOCS, lookup, rows as catalogue_rows

ROOT = os.path.dirname(_DOCS)
FAMILIES = "ABCDEF"
OPENINGS = os.path.join(ROOT, "harness", "caselab.py")


def _ids_of_steps(tree) -> dict[str, set[str]]:
    """function name -> the requirement ids its `.step(name, id, ...)` calls cite."""
    out: dict[str, set[str]] = {}
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        for node in ast.walk(fn):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "step"
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
                out.setdefault(fn.name, set()).add(node.args[1].value)
    return out


def _uses_oracle(tree) -> bool:
    return any(isinstance(n, ast.ImportFrom) and n.module == "harness" and any(a.name == "oracle" for a in n.names)
               for n in ast.walk(tree))


def _called(fn: ast.FunctionDef) -> set[str]:
    return {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
            for n in ast.walk(fn) if isinstance(n, ast.Call)}


def _marker(fn: ast.FunctionDef) -> tuple[str | None, str | None]:
    for dec in fn.decorator_list:
        if isinstance(dec, ast.Call) and getattr(dec.func, "id", getattr(dec.func, "attr", "")) == "requirement":
            rid = dec.args[0].value if dec.args and isinstance(dec.args[0], ast.Constant) else None
            row = next((k.value.value for k in dec.keywords if k.arg == "row"), None)
            return rid, row
    return None, None


def cases_by_row(cases_dir: str) -> dict[str, set[str]]:
    """catalogue row -> the cases (file::function) that check it."""
    with open(OPENINGS) as f:
        openings = _ids_of_steps(ast.parse(f.read()))
    out: dict[str, set[str]] = {}
    base = os.path.dirname(os.path.abspath(cases_dir))  # node ids start at the cases folder

    def add(rid: str, row: str | None, case: str) -> None:
        try:
            row = row or lookup(rid).row
        except KeyError:
            return
        out.setdefault(row, set()).add(case)

    for folder, _, files in sorted(os.walk(cases_dir)):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            with open(path) as f:
                tree = ast.parse(f.read(), path)
            helpers = _ids_of_steps(tree)
            if _uses_oracle(tree):  # the matrix: one generated case per row of the oracle's table
                from .oracle import TABLE
                for row in TABLE:
                    add(row.requirement, row.catalogue_row, f"{os.path.relpath(path, base)}::test_cell[{row.id}]")
            for fn in tree.body:
                if not isinstance(fn, ast.FunctionDef) or not fn.name.startswith("test_"):
                    continue
                case = f"{os.path.relpath(path, base)}::{fn.name}"
                rid, row = _marker(fn)
                if rid:
                    add(rid, row, case)
                called = _called(fn)
                for helper, ids in list(helpers.items()) + list(openings.items()):
                    if helper == fn.name or helper in called:
                        for step_id in ids:
                            add(step_id, None, case)
    return out


def reasons(path: str) -> dict[str, str]:
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as f:
        rows = tomllib.load(f).get("row", [])
    bad = [r for r in rows if not r.get("row") or not r.get("why")]
    if bad:
        raise ValueError(f"{path}: a [[row]] without row or why: {bad[0]}")
    return {r["row"]: r["why"] for r in rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="synfin-coverage", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=os.path.join(ROOT, "cases"), help="the cases folder (default: cases/)")
    ap.add_argument("--reasons", default=os.path.join(_DOCS, "uncovered.toml"),
                    help="rows that cannot be checked black-box, with why (default: docs/uncovered.toml)")
    ap.add_argument("--uncovered", action="store_true", help="list only the rows no case covers")
    args = ap.parse_args(argv)
    try:
        if not os.path.isdir(args.cases):
            raise ValueError(f"{args.cases}: no such folder")
        explained = reasons(args.reasons)
        covered = cases_by_row(args.cases)
    except (ValueError, SyntaxError, tomllib.TOMLDecodeError) as exc:
        print(f"synfin-coverage: {exc}", file=sys.stderr)
        return 4
    rows = {r: row for r, row in catalogue_rows().items() if r[0] in FAMILIES}
    missing = []
    for row in sorted(rows, key=lambda r: (r[0], int(r[1:]))):
        req = rows[row]
        head = f"{row:<4} {', '.join(req.ids) or req.section} ({req.level})"
        cases = sorted(covered.get(row, ()))
        if cases:
            if not args.uncovered:
                print(f"{head}: {len(cases)} case(s)")
                for case in cases:
                    print(f"       {case}")
        elif row in explained:
            if not args.uncovered:
                print(f"{head}: not checked black-box: {explained[row]}")
        else:
            missing.append(row)
            print(f"{head}: UNCOVERED  {req.text}")
    total = len(rows)
    print(f"{total - len(missing)} of {total} rows covered or explained; {len(missing)} uncovered"
          + (f": {', '.join(missing)}" if missing else ""))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
