"""The catalogue of requirements (docs/requirements.md): the ids cases cite, and their levels."""
import os
import re
from dataclasses import dataclass
from functools import lru_cache

_DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
# The shared catalogue, then the rows it leaves implicit.
CATALOGUES = (os.path.join(_DOCS, "requirements.md"), os.path.join(_DOCS, "requirements-extra.md"))
_ID = re.compile(r"(?:MUST|SHLD|MAY)-\d+|R9293-\d+(?:\.\d+)*(?:/[a-z]+)*|RFC\d+-\d+(?:\.\d+)*")
LEVELS = ("MUST", "SHOULD", "MAY", "INFO")


@dataclass(frozen=True)
class Requirement:
    id: str
    row: str        # catalogue row, e.g. "D6"
    level: str      # as the catalogue writes it, e.g. "MUST*", "SHOULD→MUST"
    section: str
    text: str


@dataclass(frozen=True)
class Row:
    row: str
    ids: tuple
    level: str
    section: str
    text: str


@lru_cache(maxsize=None)
def rows(paths: tuple = CATALOGUES) -> dict[str, Row]:
    """Every row of the catalogues' tables (the unit of coverage), by its row id."""
    out: dict[str, Row] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                cells = [c.strip() for c in line.split("|")]
                if len(cells) >= 8 and re.fullmatch(r"[A-Z]\d+", cells[1]):
                    out.setdefault(cells[1], Row(cells[1], tuple(_ID.findall(cells[2])), cells[4], cells[3], cells[5]))
    return out


@lru_cache(maxsize=None)
def catalogue(paths: tuple = CATALOGUES) -> dict[str, Requirement]:
    """Every id in the catalogues' tables; an id cited by several rows keeps its first row."""
    out: dict[str, Requirement] = {}
    for row in rows(paths).values():
        for rid in row.ids:
            out.setdefault(rid, Requirement(rid, row.row, row.level, row.section, row.text))
    return out


def lookup(rid: str) -> Requirement:
    cat = catalogue()
    if rid not in cat:
        raise KeyError(f"requirement id {rid!r} is not in docs/requirements*.md")
    return cat[rid]
