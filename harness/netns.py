"""Running code inside another network namespace without touching the caller's thread.

Python 3.11 has no os.setns, and setns(CLONE_NEWNET) moves only the calling thread, so each call
runs in a short-lived thread that enters the namespace, does its job and ends.
"""
import ctypes
import os
import threading

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"


def netns_path(name_or_path: str) -> str:
    return name_or_path if "/" in name_or_path else os.path.join(NETNS_RUN_DIR, name_or_path)


def enter(path: str) -> None:
    """Move the calling thread into the namespace at `path` (for a thread or a child process)."""
    fd = os.open(netns_path(path), os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in(path: str, fn, *args, **kwargs):
    """Call fn(*args, **kwargs) in the namespace at `path`; return its result or raise its error."""
    out = {}

    def body():
        try:
            enter(path)
            out["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller's thread
            out["error"] = exc

    thread = threading.Thread(target=body, name=f"netns:{path}")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out.get("result")


def sysctl_path(name: str) -> str:
    return "/proc/sys/" + name.replace(".", "/")


def sysctl(path: str, name: str, value=None) -> str:
    """Read (and with `value`, first write) a sysctl as seen from the namespace at `path`."""

    def body():
        if value is not None:
            with open(sysctl_path(name), "w") as f:
                f.write(str(value))
        with open(sysctl_path(name)) as f:
            return f.read().strip()

    return run_in(path, body)
