"""What every Python agent shares (docs/agent-protocol.md): argument checks, the log, request
and reply lines, and the unix-socket control channel. Standard library only.

The image build puts this file beside the agent; on the host (--runtime=netns) the agent finds it
in docker/common/.
"""

import contextlib
import json
import math
import os
import re
import socket
import threading
import time

# The protocol's operations an agent implements as op_<name>; start, wait and quit are the loop's.
OPS = ("hello", "listen", "accept", "connect", "send", "recv", "shutdown", "close", "setsockopt",
       "getsockopt", "state", "conns", "sysctl")
DEFAULT_TIMEOUT = 5.0
LOG_LINE_MAX = 2000
_DATA_FIELD = re.compile(r'"data":"([A-Za-z0-9+/=]*)"')
_REQUIRED = object()


class Failure(Exception):
    """An ok:false reply: `code` is the protocol's errno field."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def malformed(message):
    return Failure("EBADMSG", message)


def arg(args, name, kind, default=_REQUIRED):
    value = args.get(name)
    if value is None:
        if default is _REQUIRED:
            raise malformed(f"missing argument {name!r}")
        return default
    # bool is an int subclass; only accept it where a flag is meant.
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and value >= 0
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is bool:
        ok = isinstance(value, (bool, int))
        value = bool(value) if ok else value
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise malformed(f"argument {name!r} has a bad value: {value!r}")
    return value


def failed(exc: Failure) -> dict:
    return {"ok": False, "errno": exc.code, "error": exc.message, "t": time.monotonic()}


def succeeded(result: dict) -> dict:
    return {"ok": True, "result": result, "t": time.monotonic()}


class Log:
    """One line per event on stderr, prefixed with the monotonic time; the harness keeps it as evidence."""

    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, tag, text):
        # Payloads are evidence in the pcap already; in the log their length is enough.
        text = _DATA_FIELD.sub(lambda m: f'"data":"<{len(m.group(1)) * 3 // 4 - m.group(1).count("=")} bytes>"'
                               if len(m.group(1)) > 48 else m.group(0), text)
        if len(text) > LOG_LINE_MAX:
            text = f"{text[:LOG_LINE_MAX]}...({len(text)} chars)"
        line = f"{time.monotonic():.6f} {tag} {text}\n".encode("utf-8", "replace")
        with self.lock:
            try:
                os.write(2, line)
            except OSError:
                pass


def parse_request(raw: bytes, log):
    """A request line → (id, op, args, None), or (id, None, None, reply) when it is malformed."""
    log(">", raw.decode("utf-8", "replace"))
    rid = None
    try:
        request = json.loads(raw)
        if not isinstance(request, dict):
            raise ValueError("request is not an object")
        rid = request.get("id")
        op = request.get("op")
        args = request.get("args")
        args = {} if args is None else args
        if "id" not in request or not isinstance(op, str) or not isinstance(args, dict):
            raise ValueError("request needs an id, an op string, and an args object")
    except ValueError as exc:  # includes JSON and UTF-8 decoding errors
        return rid, None, None, failed(malformed(f"malformed request: {exc}"))
    return rid, op, args, None


def reply_line(rid, reply: dict, log) -> bytes:
    line = json.dumps({"id": rid, **reply}, separators=(",", ":"))
    log("<", line)
    return line.encode() + b"\n"


def private_stdout() -> int:
    """Keep the protocol on a private fd, so a stray print() cannot corrupt it."""
    out_fd = os.dup(1)
    os.dup2(2, 1)
    return out_fd


@contextlib.contextmanager
def unix_channel(path: str, log, banner: str):
    """Listen on `path`, accept exactly one connection and yield it; remove the socket after."""
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        # The harness may run as another uid; the run directory guards access.
        os.chmod(path, 0o666)
        listener.listen(1)
    except OSError as exc:
        # Typically a run directory that uid 0 without CAP_DAC_OVERRIDE cannot write.
        log("exit", f"cannot serve on {path}: {exc}")
        raise SystemExit(1) from None
    try:
        log("ready", f"{banner} listening on {path}")
        conn, _ = listener.accept()
        listener.close()
        log("ready", "control connection accepted")
        with conn:
            yield conn
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
