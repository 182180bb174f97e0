"""The static site: index.html (the matrix), one page per case, the evidence, the CSS and JS;
with learned models (--models), models.html and their drawings.

Everything is written into a temporary directory beside the output directory and renamed into
place at the end, so a failure leaves the previous report (or nothing) rather than half a site.
"""
import os
import re
import shutil
import tempfile
from importlib import resources

from . import casepage, evidence, matrix
from . import models as learned
from .baseline import compare
from .errors import BadInput
from .load import SCHEMA_ID
from .matrix import VERDICTS
from .render import render
from .words import slugs as case_slugs

MARKER = ".synfin-report"  # says a directory is a report this module may replace
STATIC = ("report.css", "report.js")

LEGEND = (  # verdict -> what it means, for the legend on every page
    ("PASS", "the requirement is met"),
    ("INFO", "the RFC leaves a choice: what this stack chose is written in the cell"),
    ("EXPECTED", "a known deviation, recorded in expectations/<target>.toml, seen as recorded"),
    ("WARN", "a SHOULD not met"),
    ("FAIL", "a MUST violated, or a result that differs from the recorded deviation"),
    ("UNSUPPORTED", "the target cannot express the case"),
    ("ERROR", "the harness or the target broke: no verdict on the stack"),
)


def check_out(out_dir: str) -> str:
    out_dir = os.path.abspath(out_dir)
    if os.path.lexists(out_dir):
        if not os.path.isdir(out_dir):
            raise BadInput(f"{out_dir}: exists and is not a directory")
        if os.listdir(out_dir) and not os.path.exists(os.path.join(out_dir, MARKER)):
            raise BadInput(f"{out_dir}: not empty and not a synfin report; refusing to replace it")
    return out_dir


def _scratch(out_dir: str) -> str:
    parent = os.path.dirname(out_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        return tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise BadInput(f"{out_dir}: cannot write there ({exc.strerror})") from None


def _publish(tmp: str, out_dir: str) -> None:
    if os.path.isdir(out_dir):
        old = tmp + ".old"
        os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out_dir)


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _run_facts(doc: dict) -> dict:
    return {"version": doc["synfin"].get("version"), "commit": doc["synfin"].get("commit"),
            "dirty": doc["synfin"].get("dirty"), "started": doc["started"], "finished": doc.get("finished"),
            "command": " ".join(doc.get("command") or []), "exit_code": doc.get("exit_code")}


def requirement_anchor(rid: str) -> str:
    """The id of a requirement's first row in index.html (models.html links there)."""
    return "req-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", rid)


def _anchor_requirements(grid: dict) -> dict[str, str]:
    """Give the first row of each requirement id in the matrix an anchor; id -> its href."""
    links: dict[str, str] = {}
    for area in grid["areas"]:
        for g in area["requirements"]:
            g["anchor"] = None
            if g["id"] not in links:
                g["anchor"] = requirement_anchor(g["id"])
                links[g["id"]] = f"index.html#{g['anchor']}"
    return links


def _models_page(site: str, models: "learned.ModelDir", links: dict[str, str], common: dict, names: list[str],
                 cells: dict | None = None) -> None:
    learned.copy(models, site)
    data = learned.page(models, links, cells=cells)
    for name in names:
        _write(os.path.join(site, name), render("models.html.j2", p=data, root="", **common))


def _build(doc: dict | None, site: str, baseline: dict | None, results_dir: str | None,
           models: "learned.ModelDir | None" = None) -> None:
    os.makedirs(os.path.join(site, "static"))
    for name in STATIC:
        _write(os.path.join(site, "static", name),
               resources.files("harness.report").joinpath("static", name).read_text(encoding="utf-8"))
    nav = {"matrix": doc is not None, "models": models is not None}
    if doc is None:  # the learned models alone: their page is the index
        _models_page(site, models, {}, {"schema": SCHEMA_ID, "nav": nav}, ["index.html", "models.html"])
        _write(os.path.join(site, MARKER), f"{SCHEMA_ID}\n")
        return
    comparison = compare(doc, baseline) if baseline is not None else None
    changes = comparison.changes if comparison else {}
    cases = matrix.by_case(doc)
    slugs = case_slugs(cases)
    targets = matrix.target_names(doc)
    os.makedirs(os.path.join(site, "cases"))
    common = {"legend": LEGEND, "run": _run_facts(doc), "schema": SCHEMA_ID, "nav": nav}
    for case, records in cases.items():
        links = {t: evidence.copy(r, results_dir, site, slugs[case]) for t, r in records.items()}
        page = casepage.build(case, records, doc, targets, links, changes)
        _write(os.path.join(site, "cases", f"{slugs[case]}.html"),
               render("case.html.j2", page=page, root="../", **common))
    grid = matrix.build(doc, slugs, comparison)
    requirement_links = _anchor_requirements(grid)
    if models is not None:
        _models_page(site, models, requirement_links, common, ["models.html"], learned.matrix_cells(cases, slugs))
    _write(os.path.join(site, "index.html"),
           render("index.html.j2", m=grid, comparison=comparison, verdicts=VERDICTS, root="", **common))
    _write(os.path.join(site, MARKER), f"{SCHEMA_ID}\n")


def write_site(doc: dict | None, out_dir: str, baseline: dict | None = None, results_dir: str | None = None,
               models: "learned.ModelDir | None" = None) -> None:
    """Write the report of `doc` (a validated synfin-results/1 document) to `out_dir`.

    `models`: what --models DIR holds (models.read()): adds models.html, linked from the index.
    With `doc` None, the report is of the models alone (models.html is also the index).

    `results_dir`: the directory the document's evidence paths are relative to (that of its
    results.json); the evidence is copied into the site. `baseline`: an older document; cells
    whose verdict or choices changed since it are marked. BadInput if out_dir cannot be written.
    """
    out_dir = check_out(out_dir)
    tmp = _scratch(out_dir)
    try:
        _build(doc, tmp, baseline, results_dir, models)
        _publish(tmp, out_dir)
    except OSError as exc:
        raise BadInput(f"{out_dir}: cannot write the report ({exc.strerror or exc})") from None
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
