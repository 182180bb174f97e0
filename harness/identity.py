"""Who produced a result: synfin's own version and commit, and each target's identity (image,
stack version, the kernel under it, the settings that change verdicts)."""
import os
import platform
import subprocess
from importlib import metadata

from . import netns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SynfinIdentity:
    """synfin's version, commit and whether the tree differs from it, as at the run's start: the
    two git processes run while the cases do, so the run's end does not wait for them."""

    def __init__(self):
        self._git = {}
        for key, args in (("commit", ("rev-parse", "HEAD")),
                          ("status", ("status", "--porcelain", "--untracked-files=no"))):
            try:
                self._git[key] = subprocess.Popen(["git", "-C", ROOT, *args], stdout=subprocess.PIPE,
                                                  stderr=subprocess.DEVNULL, text=True)
            except OSError:
                self._git[key] = None
        self._result = None

    def _read(self, key: str) -> str | None:
        proc = self._git[key]
        if proc is None:
            return None
        try:
            out, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return None
        return out.strip() if proc.returncode == 0 else None

    def result(self) -> dict:
        if self._result is None:
            try:
                version = metadata.version("synfin")
            except metadata.PackageNotFoundError:
                version = "unknown"
            commit, status = self._read("commit"), self._read("status")
            if not commit:
                status = None
            self._result = {"version": version, "commit": commit or None,
                            "dirty": None if status is None else bool(status)}
        return self._result


def target(spec, runtime: str | None, hello: dict | None, instance=None, expectations: str | None = None,
           error: str | None = None) -> dict:
    """A target's identity, read once its stack is up (or with `error` when it could not start)."""
    image = getattr(instance, "image", None)
    sysctls = {}
    if instance is not None and spec.verdict_sysctls:
        for name in spec.verdict_sysctls:
            try:
                value = (instance.agent.call("sysctl", name=name)["value"] if spec.sysctl_via_agent
                         else netns.sysctl(instance.netns, name))  # a guest kernel's are its own
                sysctls[name] = " ".join(value.split())
            except Exception:
                sysctls[name] = "n/a"
    return {
        "name": spec.name, "description": spec.description,
        "stack": (hello or {}).get("stack"), "version": (hello or {}).get("version"),
        "kernel": platform.release(),  # every target's lab runs on the host's kernel
        "runtime": runtime, "image": image, "sysctls": sysctls,
        "expectations": expectations, "error": error,
    }
