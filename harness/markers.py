"""The marker a case carries: which catalogue requirement it checks, and at what level."""
import pytest


def requirement(rid: str, level: str = "MUST", row: str | None = None):
    """@requirement("MUST-10", "MUST"): the id comes from docs/requirements*.md; the level decides the
    verdict of a deviation — MUST → FAIL, SHOULD → WARN, MAY/INFO → recorded as INFO. `row` names
    the catalogue row the case checks when its id is cited by several rows (harness/coverage.py)."""
    return pytest.mark.requirement(rid, level, **({"row": row} if row else {}))
