"""Everything synfin creates on the machine is registered here and removed on every way out.

Objects are named after the owning process (`syn<pid in hex>...`), so a later run can tell the
leftovers of a SIGKILLed run (owner gone) from those of a run still going (owner alive).
"""
import atexit
import os
import re
import signal
import threading

PREFIX = "syn"
# Full shapes only, so a foreign name that merely starts with "syn" is never touched:
# namespaces syn1a2b-p0, links syn1a2bp0 / syn1a2bt0, run dirs syn1a2b-linux-0, containers syn1a2b-linux-0.
_OWNER_RE = re.compile(r"^syn([0-9a-f]{1,6})(?:-[pt]\d+|[pt]\d+|-[a-z][a-z0-9]*-\d+)$")
RUN_ROOT = "/tmp/synfin"


def owner_prefix(pid: int | None = None) -> str:
    return f"{PREFIX}{(pid or os.getpid()):x}"


_RUN_DIR_RE = re.compile(r"^syn([0-9a-f]{1,6})-")


def owner_of(name: str, run_dir: bool = False) -> int | None:
    """The pid encoded in one of synfin's object names, or None for a foreign name. Entries of
    RUN_ROOT are all synfin's, so any label after the owner counts there."""
    m = (_RUN_DIR_RE if run_dir else _OWNER_RE).match(name)
    return int(m.group(1), 16) if m else None


def owner_alive(pid: int) -> bool:
    """The process runs: it exists and is not a zombie (a crashed pytest-xdist worker stays one
    until its controller reaps it, and cleans nothing up meanwhile)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]  # after "pid (comm)": comm may hold spaces
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


class Registry:
    """LIFO undo list; each entry runs once, whichever exit path gets there first."""

    def __init__(self):
        self._undo: list[tuple[int, str, object]] = []
        self._lock = threading.Lock()
        self._next = 0
        self._pid = os.getpid()
        self._installed = False

    def add(self, what: str, fn) -> int:
        with self._lock:
            self._next += 1
            self._undo.append((self._next, what, fn))
            return self._next

    def run(self, token: int) -> None:
        """Undo one entry now (normal teardown)."""
        with self._lock:
            entry = next((e for e in self._undo if e[0] == token), None)
            if entry:
                self._undo.remove(entry)
        if entry:
            entry[2]()

    def run_all(self) -> list[str]:
        """Undo everything still registered; return what failed, never raise.

        A forked child (pyroute2's NetNS forks one) inherits this list and our atexit hook: only
        the process that made the objects may remove them."""
        failures = []
        if os.getpid() != self._pid:
            return failures
        while True:
            with self._lock:
                if not self._undo:
                    break
                _, what, fn = self._undo.pop()
            try:
                fn()
            except Exception as exc:  # keep going: one failure must not leak the rest
                failures.append(f"{what}: {exc}")
        return failures

    def install(self) -> None:
        """Run everything at interpreter exit and on SIGTERM/SIGHUP (SIGINT reaches pytest)."""
        if self._installed:
            return
        self._installed = True
        atexit.register(self.run_all)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous = signal.getsignal(sig)

            def handler(signum, frame, previous=previous):
                self.run_all()
                if callable(previous):
                    previous(signum, frame)
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

            signal.signal(sig, handler)


REGISTRY = Registry()
