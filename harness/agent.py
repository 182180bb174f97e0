"""Harness side of the agent protocol (docs/agent-protocol.md)."""

from __future__ import annotations

import base64
import errno as errno_mod
import itertools
import json
import os
import select
import socket
import subprocess
import threading
import time
from typing import Callable, Optional

from harness.errors import AgentError, TargetError, Unsupported

SLACK = 2.0  # a reply may lag its call's own deadline by this much before the agent counts as hung


class OpError(Exception):
    """The call failed on the target with an errno: a normal outcome a case may expect."""

    def __init__(self, op: str, reply: dict):
        self.op = op
        self.reply = reply
        self.errno = str(reply.get("errno"))
        super().__init__(f"{op} failed on target: {self.errno} ({reply.get('error', '')})")


class Reply(dict):
    """A call's `result` fields plus `t`, the target's monotonic time when the call returned.

    A base64 `data` field arrives already decoded to bytes.
    """

    @property
    def t(self) -> float:
        return self["t"]


class _Broken(Exception):
    """The channel failed; the message says how (without naming the op)."""


def _encode(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


class Job:
    """A call running in the background on the agent (`start`/`wait`)."""

    def __init__(self, client: "AgentClient", job_id: int, op: str):
        self.client = client
        self.id = job_id
        self.op = op

    def wait(self, timeout: float) -> Reply:
        """The call's reply; OpError with errno "timeout" if it has not finished yet."""
        return self.client._call("wait", {"job": self.id, "timeout": timeout}, label=self.op)

    def __repr__(self):
        return f"<Job {self.id} {self.op} on {self.client.name}>"


class AgentClient:
    """One agent's control channel: a socket, or a (reader, writer) pair of pipe ends
    given as file objects (closed with the client) or raw fds.

    log_tail() returns the end of the agent's log, appended to AgentError messages;
    exit_code(wait_s) returns the agent's exit status, or None while it still runs.
    """

    def __init__(
        self,
        channel,
        *,
        name: str,
        log_tail: Optional[Callable[[], str]] = None,
        default_timeout: float = 5.0,
        exit_code: Optional[Callable[[float], Optional[int]]] = None,
        paced: Optional[tuple[int, float]] = None,
    ):
        if isinstance(channel, socket.socket):
            self._sock = channel
            self._rfd = self._wfd = channel.fileno()
            channel.setblocking(False)
        else:
            self._sock = None
            self._ends = channel
            self._rfd, self._wfd = (e if isinstance(e, int) else e.fileno() for e in channel)
            os.set_blocking(self._rfd, False)
            os.set_blocking(self._wfd, False)
        self.name = name
        # (bytes, seconds): a channel that loses what its reader has not taken (a serial line's
        # 4 KiB input buffer) gets at most that many bytes per pause.
        self._paced = paced
        self.default_timeout = default_timeout
        self._log_tail = log_tail
        self._exit_code = exit_code
        self._buf = bytearray()
        self._next_id = 1
        self._lock = threading.Lock()
        self._broken: Optional[str] = None
        self._closed = False

    @property
    def healthy(self) -> bool:
        """The channel is open and the agent has not hung up (checked without a round trip:
        between calls an agent sends nothing, so a readable channel means it closed)."""
        if self._broken is not None or self._closed:
            return False
        poller = select.poll()
        poller.register(self._rfd, select.POLLIN | select.POLLHUP)
        return not poller.poll(0)

    # -- constructors --------------------------------------------------------

    @classmethod
    def over_process(cls, popen: subprocess.Popen, name: str,
                     log_tail: Optional[Callable[[], str]] = None, **kw) -> "AgentClient":
        """An agent speaking on its stdin/stdout (Popen with stdin=PIPE, stdout=PIPE)."""

        def exit_code(wait: float) -> Optional[int]:
            try:
                return popen.wait(wait) if wait > 0 else popen.poll()
            except subprocess.TimeoutExpired:
                return None

        kw.setdefault("exit_code", exit_code)
        # The file objects, not their fds: closing those behind Popen's back would
        # let its later close() hit whatever reused the numbers.
        return cls((popen.stdout, popen.stdin), name=name, log_tail=log_tail, **kw)

    @classmethod
    def over_unix(cls, path: str, name: str, log_tail: Optional[Callable[[], str]] = None,
                  connect_timeout: float = 10.0, **kw) -> "AgentClient":
        """An agent started with --unix PATH; waits for the socket to appear."""
        deadline = time.monotonic() + connect_timeout
        exit_code = kw.get("exit_code")
        for attempt in itertools.count():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                return cls(sock, name=name, log_tail=log_tail, **kw)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                last = exc
            # Tried every 2 ms (an agent is up in 20-80 ms); whether it died, every 50 ms (that
            # asks the runtime).
            code = exit_code(0) if exit_code and attempt % 25 == 24 else None
            if code is not None:
                what = f"agent exited (code {code}) before its socket {path} accepted a connection"
                break
            if time.monotonic() >= deadline:
                what = f"no agent socket at {path} after {connect_timeout:g} s ({last})"
                break
            time.sleep(0.002)
        raise TargetError(cls._with_tail(f"agent {name}: {what}", log_tail))

    # -- calls ---------------------------------------------------------------

    def call(self, op: str, *, reply_timeout: Optional[float] = None, **args) -> Reply:
        """Make one call. `reply_timeout` overrides how long to wait for the reply
        (default: the call's own `timeout` or default_timeout, plus 2 s slack);
        bytes arguments travel as base64."""
        return self._call(op, args, reply_timeout=reply_timeout)

    def call_many(self, calls: list[tuple[str, dict]]) -> list:
        """Several calls sent at once and answered in order (the protocol's "one reply per
        request, in order"): one round trip instead of one per call. Each item of the result is
        the call's Reply, or the OpError/Unsupported it failed with; a broken channel raises."""
        if not calls:
            return []
        with self._lock:
            if self._closed or self._broken is not None:
                raise AgentError(f"agent {self.name}: {calls[0][0]}: channel closed or broken")
            first = self._next_id
            self._next_id += len(calls)
            lines = []
            for i, (op, args) in enumerate(calls):
                request = {"id": first + i, "op": op}
                if args:
                    request["args"] = _encode(args)
                lines.append(json.dumps(request, separators=(",", ":")).encode() + b"\n")
            deadline = time.monotonic() + self.default_timeout + SLACK
            try:
                self._write(b"".join(lines), deadline)
                replies = [self._read_line(deadline) for _ in calls]
            except _Broken as exc:
                self._broken = str(exc)
                raise AgentError(self._with_tail(f"agent {self.name}: {calls[0][0]}: {exc}",
                                                 self._log_tail)) from None
        out = []
        for i, ((op, _), line) in enumerate(zip(calls, replies)):
            try:
                out.append(self._reply(op, first + i, line))
            except (OpError, Unsupported) as exc:
                out.append(exc)
        return out

    def start(self, op: str, **args) -> Job:
        """Run a call in the background on the agent; collect it with Job.wait()."""
        reply = self._call("start", {"call": {"op": op, "args": args}}, label=op)
        return Job(self, reply["job"], op)

    def hello(self) -> Reply:
        return self.call("hello")

    def close(self) -> None:
        """Ask the agent to quit (best effort) and close the channel."""
        if self._closed:
            return
        if self._broken is None:
            try:
                self._call("quit", {}, reply_timeout=1.0)
            except Exception:  # noqa: BLE001 - the agent may already be gone
                pass
        self._closed = True
        if self._sock is not None:
            self._sock.close()
        else:
            for end in self._ends:
                try:
                    os.close(end) if isinstance(end, int) else end.close()
                except OSError:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals -----------------------------------------------------------

    def _call(self, op: str, args: dict, *, label: Optional[str] = None,
              reply_timeout: Optional[float] = None) -> Reply:
        label = label or op
        if reply_timeout is None:
            timeout = args.get("timeout")
            reply_timeout = (self.default_timeout if timeout is None else timeout) + SLACK
        with self._lock:
            if self._closed:
                raise AgentError(f"agent {self.name}: {label}: client already closed")
            if self._broken is not None:
                raise AgentError(f"agent {self.name}: {label}: channel broke earlier ({self._broken})")
            rid = self._next_id
            self._next_id += 1
            request = {"id": rid, "op": op}
            if args:
                request["args"] = _encode(args)
            deadline = time.monotonic() + reply_timeout
            try:
                self._write(json.dumps(request, separators=(",", ":")).encode() + b"\n", deadline)
                line = self._read_line(deadline)
            except _Broken as exc:
                self._broken = str(exc)
                raise AgentError(self._with_tail(f"agent {self.name}: {label}: {exc}",
                                                 self._log_tail)) from None
        return self._reply(label, rid, line)

    def _reply(self, label: str, rid: int, line: bytes) -> Reply:
        try:
            reply = json.loads(line)
            ok = reply["ok"]
            if reply.get("id") != rid:
                raise ValueError(f"reply id {reply.get('id')!r}, expected {rid}")
        except (ValueError, KeyError, TypeError) as exc:
            self._broken = f"spoke out of protocol: {exc}"
            raise AgentError(self._with_tail(
                f"agent {self.name}: {label}: spoke out of protocol ({exc}): {line[:200]!r}",
                self._log_tail)) from None
        if ok:
            result = Reply(reply.get("result") or {})
            result["t"] = reply.get("t")
            data = result.get("data")
            if isinstance(data, str):
                result["data"] = base64.b64decode(data)
            return result
        code = reply.get("errno")
        if code == "unsupported":
            raise Unsupported(f"{label} is unsupported by {self.name}: {reply.get('error', '')}")
        if code == "EBADMSG":
            # The harness sent something the agent could not parse: a harness bug.
            raise AgentError(f"agent {self.name}: {label}: request rejected as malformed: "
                             f"{reply.get('error', '')}")
        if not code:
            raise AgentError(f"agent {self.name}: {label}: failure reply without errno: {line[:200]!r}")
        raise OpError(label, reply)

    def _wait_fd(self, fd: int, events: int, deadline: float, limit: float) -> None:
        poller = select.poll()
        poller.register(fd, events)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Broken(self._hang_message(limit))
            if poller.poll(max(1, int(remaining * 1000 + 0.999))):
                return

    def _hang_message(self, limit: float) -> str:
        code = self._exit_code(0) if self._exit_code else None
        if code is not None:
            return f"agent exited (code {code})"
        return f"no reply within {limit:.1f} s"

    def _eof_message(self) -> str:
        code = self._exit_code(0.5) if self._exit_code else None
        if code is not None:
            return f"agent exited (code {code})"
        return "agent closed the channel"

    def _write(self, data: bytes, deadline: float) -> None:
        limit = deadline - time.monotonic()
        view = memoryview(data)
        chunk, pause = self._paced or (len(data), 0.0)
        while view:
            if pause and len(view) < len(data):
                time.sleep(pause)
            try:
                view = view[os.write(self._wfd, view[:chunk]):]
            except BlockingIOError:
                self._wait_fd(self._wfd, select.POLLOUT, deadline, limit)
            except OSError as exc:
                if exc.errno in (errno_mod.EPIPE, errno_mod.ECONNRESET, errno_mod.EBADF):
                    raise _Broken(self._eof_message()) from None
                raise

    def _read_line(self, deadline: float) -> bytes:
        limit = deadline - time.monotonic()
        buf = self._buf
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl >= 0:
                line = bytes(buf[:nl])
                del buf[:nl + 1]
                return line
            start = len(buf)
            try:
                chunk = os.read(self._rfd, 1 << 16)
            except BlockingIOError:
                self._wait_fd(self._rfd, select.POLLIN, deadline, limit)
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise _Broken(self._eof_message())
            buf += chunk

    @staticmethod
    def _with_tail(message: str, log_tail: Optional[Callable[[], str]]) -> str:
        if log_tail is None:
            return message
        try:
            tail = log_tail()
        except Exception as exc:  # noqa: BLE001 - evidence is best effort
            tail = f"(agent log unavailable: {exc})"
        tail = (tail or "").rstrip("\n")
        return f"{message}\n{tail}" if tail else message

    def __repr__(self):
        return f"<AgentClient {self.name}>"
