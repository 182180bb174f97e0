"""The marker a case carries: which catalogue requirement it checks, and at what level."""
import pytest


def requirement(rid: str, level: str = "MUST"):
    """@requirement("MUST-10", "MUST"): the id comes from docs/requirements*.md; the level decides the
    verdict of a deviation — MUST → FAIL, SHOULD → WARN, MAY/INFO → recorded as INFO."""
    return pytest.mark.requirement(rid, level)
