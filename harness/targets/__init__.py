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
