"""Who produced a result: synfin's own version and commit, and each target's identity (image,
stack version, the kernel under it, the settings that change verdicts)."""
import os
import platform
import subprocess
from importlib import metadata

from . import netns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def synfin() -> dict:
    try:
        version = metadata.version("synfin")
    except metadata.PackageNotFoundError:
        version = "unknown"
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"version": version, "commit": commit, "dirty": None if status is None else bool(status)}


def target(spec, runtime: str | None, hello: dict | None, instance=None, expectations: str | None = None,
           error: str | None = None) -> dict:
    """A target's identity, read once its stack is up (or with `error` when it could not start)."""
    image = getattr(instance, "image", None)
    sysctls = {}
    if instance is not None and spec.verdict_sysctls:
        for name in spec.verdict_sysctls:
            try:
                sysctls[name] = " ".join(netns.sysctl(instance.netns, name).split())
            except OSError:
                sysctls[name] = "n/a"
    return {
        "name": spec.name, "description": spec.description,
        "stack": (hello or {}).get("stack"), "version": (hello or {}).get("version"),
        "kernel": platform.release(),  # every target's lab runs on the host's kernel
        "runtime": runtime, "image": image, "sysctls": sysctls,
        "expectations": expectations, "error": error,
    }
