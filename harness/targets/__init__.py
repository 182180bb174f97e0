"""The targets synfin knows; each module here defines TARGET (a TargetSpec)."""
import importlib
import pkgutil

from .spec import TargetSpec


def known() -> dict[str, TargetSpec]:
    out = {}
    for mod in pkgutil.iter_modules(__path__):
        if mod.name == "spec":
            continue
        spec = getattr(importlib.import_module(f"{__name__}.{mod.name}"), "TARGET", None)
        if isinstance(spec, TargetSpec):
            out[spec.name] = spec
    return out


def get(name: str) -> TargetSpec:
    targets = known()
    if name not in targets:
        raise KeyError(f"unknown target {name!r}; known targets: {', '.join(sorted(targets))}")
    return targets[name]


def parse_list(text: str) -> list[str]:
    """`--target`: one name, a comma-separated list, or "all" (every known target, by name)."""
    names = sorted(known()) if text.strip() == "all" else [n.strip() for n in text.split(",")]
    if any(not n for n in names):
        raise ValueError(f"--target={text!r}: an empty name in the list")
    unknown = [n for n in names if n not in known()]
    if unknown:
        raise ValueError(f"--target: unknown target {unknown[0]!r}; known targets: {', '.join(sorted(known()))}, or all")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"--target: {twice[0]!r} is given twice")
    return names
