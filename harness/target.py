"""The target as a case sees it: socket calls on the stack under test, through its agent.

Calls return plain values (socket handles, bytes); a call the stack refuses raises
`OpError` with the errno name (a normal observation, e.g. ECONNRESET); a call the target cannot
express raises `Unsupported`. Sockets a case leaves open and sysctls it changes are put back
after the case, so cases stay independent.
"""
import time

from . import netns
from .agent import OpError
from .errors import Unsupported

# Arguments worth drawing on a ladder (addresses are the lab's own; data is shown by its length).
_SHOWN_ARGS = ("sock", "port", "bind_port", "how", "opt", "value", "backlog", "max", "rcvbuf", "linger")


def _summary(op: str, args: dict) -> dict:
    out = {k: args[k] for k in _SHOWN_ARGS if k in args}
    if "data" in args:
        out["len"] = len(args["data"])
    return out


def _outcome(reply) -> str:
    if not isinstance(reply, dict):
        return "started"  # a background call (Job): its reply comes with wait()
    if "sock" in reply:
        return f"sock {reply['sock']}"
    if "sent" in reply:
        return f"sent {reply['sent']}"
    if "data" in reply:
        return f"{len(reply['data'])} bytes"
    if "state" in reply:
        return str(reply["state"])
    return "ok"


class Target:
    def __init__(self, spec, instance, addr):
        self.spec = spec
        self.name = spec.name
        self.instance = instance
        self.addr = addr
        self._open: set[int] = set()
        self._sysctl_saved: dict[str, str] = {}
        # The settings this case saw (read) or made (set): recorded with its verdict.
        self.settings: dict[str, str] = {}
        # Every call the case made: op, shown args, when it was made and returned, its outcome.
        self.calls: list[dict] = []

    @property
    def ip(self) -> str:
        return self.addr.target_ip

    def require(self, *capabilities: str) -> None:
        missing = [c for c in capabilities if c not in self.spec.capabilities]
        if missing:
            raise Unsupported(f"target {self.name} cannot {', '.join(missing)}")

    def call(self, op: str, **args):
        return self._logged(op, args, lambda: self.instance.agent.call(op, **args))

    def _logged(self, op: str, args: dict, run):
        entry = {"op": op, "args": _summary(op, args), "t_call": time.monotonic()}
        self.calls.append(entry)
        try:
            reply = run()
        except OpError as exc:
            entry["t"], entry["result"] = time.monotonic(), exc.errno
            raise
        except Exception as exc:
            entry["t"], entry["result"] = time.monotonic(), type(exc).__name__
            raise
        entry["t"], entry["result"] = time.monotonic(), _outcome(reply)
        return reply

    # -- sockets --------------------------------------------------------------------------
    def listen(self, port: int, backlog: int = 16, addr: str | None = None, **opts) -> int:
        """`addr`: the local address to listen on (default the target's own; "0.0.0.0": any)."""
        sock = self.call("listen", addr=addr or self.ip, port=port, backlog=backlog, **opts)["sock"]
        self._open.add(sock)
        return sock

    def accept(self, sock: int, timeout: float = 2.0) -> int:
        new = self.call("accept", sock=sock, timeout=timeout)["sock"]
        self._open.add(new)
        return new

    def connect(self, port: int, timeout: float = 2.0, **opts) -> int:
        sock = self.call("connect", addr=self.addr.peer_ip, port=port, timeout=timeout, **opts)["sock"]
        self._open.add(sock)
        return sock

    def start(self, op: str, **args):
        """Start a blocking call in the background; `.wait(timeout)` returns its reply."""
        if op == "connect":
            args.setdefault("addr", self.addr.peer_ip)
        job = self._logged(f"start {op}", args, lambda: self.instance.agent.start(op, **args))
        wait = job.wait
        job.wait = lambda timeout: self._logged(op, args, lambda: wait(timeout))  # drawn when it returns
        return job

    def adopt(self, sock: int) -> int:
        """Track a socket that came back from a background call."""
        self._open.add(sock)
        return sock

    def send(self, sock: int, data: bytes) -> int:
        return self.call("send", sock=sock, data=data)["sent"]

    def recv(self, sock: int, max: int = 65536, timeout: float = 2.0) -> bytes:
        return self.call("recv", sock=sock, max=max, timeout=timeout)["data"]

    def recv_exactly(self, sock: int, n: int, timeout: float = 2.0) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.recv(sock, n - len(out), timeout)
            if not chunk:
                break
            out += chunk
        return out

    def shutdown(self, sock: int, how: str) -> None:
        if how == "rd":
            self.require("shutdown_rd")
        self.call("shutdown", sock=sock, how=how)

    def close(self, sock: int) -> None:
        self._open.discard(sock)
        self.call("close", sock=sock)

    def setsockopt(self, sock: int, opt: str, value) -> None:
        self.require(opt.lower())
        self.call("setsockopt", sock=sock, opt=opt, value=value)

    def linger(self, sock: int, onoff: int, seconds: int) -> None:
        self.setsockopt(sock, "SO_LINGER", [onoff, seconds])

    def state(self, sock: int) -> str:
        self.require("state")
        return self.call("state", sock=sock)["state"]

    def conns(self, local_port: int | None = None, remote_port: int | None = None) -> list[dict]:
        """Every connection the stack holds, including those no socket refers to (TIME-WAIT)."""
        self.require("conns")
        args = {k: v for k, v in (("local_port", local_port), ("remote_port", remote_port)) if v is not None}
        if len(args) == 2:  # one lab connection: the agent may look its 4-tuple up directly
            args.update(local_addr=self.ip, remote_addr=self.addr.peer_ip)
        return self.call("conns", **args)["conns"]

    def conn_state(self, local_port: int, remote_port: int) -> str:
        states = [c["state"] for c in self.conns(local_port, remote_port)]
        return states[0] if states else "CLOSED"

    # -- kernel settings ------------------------------------------------------------------
    def sysctl(self, name: str, value=None) -> str:
        """Read, or set for this case only, a sysctl of the target's own namespace."""
        self.require("sysctl")
        if value is not None and name not in self._sysctl_saved:
            self._sysctl_saved[name] = self._sysctl(name)
        now = self._sysctl(name, value)
        shown = " ".join(now.split())  # "32768\t60999" reads as "32768 60999"
        if value is not None:
            self.settings[name] = f"{shown} (set by the case; was {' '.join(self._sysctl_saved[name].split())})"
        else:
            self.settings.setdefault(name, shown)
        return now

    def _sysctl(self, name: str, value=None) -> str:
        """A setting this kernel does not have (added in a later line) makes the case UNSUPPORTED."""
        try:
            if self.spec.sysctl_via_agent:  # a kernel of its own: only its agent reaches its /proc/sys
                args = {"name": name} if value is None else {"name": name, "value": value}
                return self.instance.agent.call("sysctl", **args)["value"]
            return netns.sysctl(self.instance.netns, name, value)
        except (FileNotFoundError, OpError) as exc:
            if isinstance(exc, OpError) and exc.errno != "ENOENT":
                raise
            raise Unsupported(f"target {self.name} has no setting {name} (this kernel predates it)") from None

    # -- between cases --------------------------------------------------------------------
    def fence(self) -> None:
        """One round trip, not recorded as the case's: answered, the target was alive after
        the case; a target killed meanwhile (a crash its last segment caused) breaks the channel
        here, so its death is found in this case rather than by the next case's first call."""
        self.instance.agent.call("hello")

    def reset(self) -> None:
        """Abort what the case left open (one RST, no FIN retransmissions leaking into later
        cases' captures) and put changed sysctls back."""
        calls = []
        for sock in sorted(self._open):
            if "so_linger" in self.spec.capabilities:
                calls.append(("setsockopt", {"sock": sock, "opt": "SO_LINGER", "value": [1, 0]}))
            calls.append(("close", {"sock": sock}))
        self.instance.agent.call_many(calls)  # a socket already gone answers EBADF: nothing to undo
        self._open.clear()
        for name, value in self._sysctl_saved.items():
            self._sysctl(name, value)
        self._sysctl_saved.clear()
