#!/usr/bin/env python3
"""synfin agent for the Linux kernel TCP stack; speaks docs/agent-protocol.md.

Standard library only: the target image carries nothing but python3.
"""

import argparse
import base64
import binascii
import errno
import json
import math
import os
import platform
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

# Beside this file in the image; in docker/common/ when run from the repository (--runtime=netns).
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from agentkit import (DEFAULT_TIMEOUT, OPS, Failure, Log, arg, failed, malformed, parse_request,  # noqa: E402
                      private_stdout, reply_line, succeeded, unix_channel)

# The same agent drives Linux-compatible kernels that are not the host's (gVisor's netstack):
# the harness names the stack it starts.
STACK = os.environ.get("SYNFIN_STACK", "linux")
# gVisor answers uname with a fixed 4.4.0: the harness then names the version it runs.
VERSION = os.environ.get("SYNFIN_VERSION") or platform.release()

# Linux include/net/tcp_states.h -> RFC 9293 names.
TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN-SENT",
    3: "SYN-RECEIVED",
    4: "FIN-WAIT-1",
    5: "FIN-WAIT-2",
    6: "TIME-WAIT",
    7: "CLOSED",
    8: "CLOSE-WAIT",
    9: "LAST-ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "SYN-RECEIVED",  # TCP_NEW_SYN_RECV: a request socket, as inet_diag may name it
}

TCP_INFO = getattr(socket, "TCP_INFO", 11)

SOCKOPTS = {
    "SO_LINGER": (socket.SOL_SOCKET, socket.SO_LINGER, "linger"),
    "SO_RCVBUF": (socket.SOL_SOCKET, socket.SO_RCVBUF, "int"),
    "SO_SNDBUF": (socket.SOL_SOCKET, socket.SO_SNDBUF, "int"),
    "SO_REUSEADDR": (socket.SOL_SOCKET, socket.SO_REUSEADDR, "int"),
    "TCP_NODELAY": (socket.IPPROTO_TCP, socket.TCP_NODELAY, "int"),
}

SHUTDOWN = {"rd": socket.SHUT_RD, "wr": socket.SHUT_WR, "rdwr": socket.SHUT_RDWR}

def family_of(addr):
    """The family of a numeric address; names are refused so nothing is ever resolved."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    try:
        socket.inet_pton(family, addr)
    except OSError:
        raise malformed(f"not a numeric IP address: {addr!r}") from None
    return family


def wait_fd(sock, events, deadline):
    """Poll one socket; False when the deadline passed first."""
    fd = sock.fileno()
    if fd < 0:
        raise OSError(errno.EBADF, "socket was closed")
    poller = select.poll()
    poller.register(fd, events)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready = poller.poll(math.ceil(remaining * 1000))
        if ready:
            if ready[0][1] & select.POLLNVAL:
                raise OSError(errno.EBADF, "socket was closed")
            return True


def timed_out(op, timeout):
    return Failure("timeout", f"{op} did not complete within {timeout:g} s")


# NETLINK_SOCK_DIAG (linux/sock_diag.h, linux/inet_diag.h). Reading /proc/net/tcp walks the whole
# established hash (262144 buckets on a large host: several ms); asking for one 4-tuple is a hash
# lookup (a few microseconds), and a dump skips the text formatting.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
ALL_STATES = 0xFFF
NO_COOKIE = 0xFFFFFFFF


def diag(family, dump, sport=0, dport=0, src=b"", dst=b""):
    """TCP sockets from inet_diag: every one of `family` (dump), or the one with this 4-tuple
    (a missing one is no error). Each as (state number, (local addr, port), (remote addr, port))."""
    ident = (struct.pack("!HH", sport, dport) + src.ljust(16, b"\0") + dst.ljust(16, b"\0")
             + struct.pack("=III", 0, NO_COOKIE, NO_COOKIE))
    req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, ALL_STATES) + ident
    flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
    size = 16 if family == socket.AF_INET6 else 4
    out = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.send(struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, flags, 1, 0) + req)
        while True:
            data, off = nl.recv(1 << 16), 0
            while off < len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, off + 16)[0]
                    if err in (0, errno.ENOENT):
                        return out
                    raise OSError(err, os.strerror(err))
                state = data[off + 17]
                lport, rport = struct.unpack_from("!HH", data, off + 20)
                laddr = socket.inet_ntop(family, data[off + 24:off + 24 + size])
                raddr = socket.inet_ntop(family, data[off + 40:off + 40 + size])
                out.append((state, (laddr, lport), (raddr, rport)))
                if not dump:
                    return out
                off += (length + 3) & ~3


def proc_net_tcp():
    """TCP sockets from /proc/net/tcp and tcp6, as diag() gives them: for a kernel without
    NETLINK_SOCK_DIAG (gVisor)."""
    out = []
    for family, name, size in ((socket.AF_INET, "tcp", 4), (socket.AF_INET6, "tcp6", 16)):
        try:
            with open(f"/proc/net/{name}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4:
                continue
            ends = []
            for end in fields[1:3]:
                addr, port = end.split(":")
                raw = bytes.fromhex(addr)
                # The kernel prints each 32-bit word of the address in host order.
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))
                ends.append((socket.inet_ntop(family, raw), int(port, 16)))
            out.append((int(fields[3], 16), ends[0], ends[1]))
    return out


class Job:
    def __init__(self, op):
        self.op = op
        self.done = threading.Event()
        self.reply = None


class Agent:
    def __init__(self, log):
        self.log = log
        self.lock = threading.Lock()
        self.socks = {}
        self.jobs = {}
        self.next_sock = 1
        self.next_job = 1
        self.ops = {op: getattr(self, f"op_{op}") for op in OPS}
        self.ops["route"] = self.op_route  # Linux only: the learner's quickack setting
        self.no_diag = False  # a kernel without NETLINK_SOCK_DIAG: conns from /proc/net/tcp

    # -- bookkeeping ---------------------------------------------------------

    def add_sock(self, sock):
        sock.setblocking(False)
        with self.lock:
            sid = self.next_sock
            self.next_sock += 1
            self.socks[sid] = sock
        return sid

    def sock(self, args):
        sid = arg(args, "sock", int)
        with self.lock:
            sock = self.socks.get(sid)
        if sock is None:
            raise Failure("EBADF", f"no socket {sid}")
        return sock

    def close_all(self):
        with self.lock:
            socks = list(self.socks.values())
            self.socks.clear()
        for sock in socks:
            try:
                sock.close()
            except OSError:
                pass

    # -- dispatch ------------------------------------------------------------

    def execute(self, op, args):
        """Run one op; the reply without its id."""
        try:
            if op == "start":
                result = self.op_start(args)
            elif op == "wait":
                return self.op_wait(args)
            else:
                handler = self.ops.get(op)
                if handler is None:
                    raise Failure("unsupported", f"unknown op {op!r}")
                result = handler(args)
            return succeeded(result)
        except Failure as exc:
            return failed(exc)
        except OSError as exc:
            code = errno.errorcode.get(exc.errno, "EIO") if exc.errno else "EIO"
            message = str(exc)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            code, message = "EBADMSG", f"bad arguments: {exc!r}"
        except Exception as exc:  # noqa: BLE001 - the agent must survive its own bugs
            code, message = "EIO", f"agent error: {exc!r}"
        return failed(Failure(code, message))

    # -- ops -----------------------------------------------------------------

    def op_hello(self, args):
        names = sorted(list(self.ops) + ["start", "wait", "quit"])
        return {"stack": STACK, "version": VERSION, "pid": os.getpid(), "ops": names}

    def op_listen(self, args):
        addr = arg(args, "addr", str)
        port = arg(args, "port", int)
        backlog = arg(args, "backlog", int, 16)
        reuse = arg(args, "reuseaddr", bool, False)
        rcvbuf = arg(args, "rcvbuf", int, None)
        sock = socket.socket(family_of(addr), socket.SOCK_STREAM)
        try:
            if reuse:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Before listen(): the window scale of accepted connections follows it.
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind((addr, port))
            sock.listen(backlog)
            local = sock.getsockname()
        except BaseException:
            sock.close()
            raise
        return {"sock": self.add_sock(sock), "local": [local[0], local[1]]}

    def op_accept(self, args):
        listener = self.sock(args)
        timeout = arg(args, "timeout", float, DEFAULT_TIMEOUT)
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn, peer = listener.accept()
                break
            except BlockingIOError:
                if not wait_fd(listener, select.POLLIN, deadline):
                    raise timed_out("accept", timeout) from None
        return {"sock": self.add_sock(conn), "peer": [peer[0], peer[1]]}

    def op_connect(self, args):
        addr = arg(args, "addr", str)
        port = arg(args, "port", int)
        bind_addr = arg(args, "bind_addr", str, None)
        bind_port = arg(args, "bind_port", int, None)
        reuse = arg(args, "reuseaddr", bool, False)
        # nonblocking: the SYN is out and the socket is returned at once (a learner's CONNECT).
        nonblocking = arg(args, "nonblocking", bool, False)
        timeout = arg(args, "timeout", float, DEFAULT_TIMEOUT)
        deadline = time.monotonic() + timeout
        family = family_of(addr)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if reuse:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if bind_addr is not None and family_of(bind_addr) != family:
                raise malformed("bind_addr and addr are of different families")
            if bind_addr is not None or bind_port is not None:
                any_addr = "::" if family == socket.AF_INET6 else "0.0.0.0"
                sock.bind((bind_addr or any_addr, bind_port or 0))
            rc = sock.connect_ex((addr, port))
            if rc not in (0, errno.EINPROGRESS):
                raise OSError(rc, os.strerror(rc))
            if rc and not nonblocking:
                if not wait_fd(sock, select.POLLOUT, deadline):
                    raise timed_out("connect", timeout)
                rc = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if rc:
                    raise OSError(rc, os.strerror(rc))
            local = sock.getsockname()
        except BaseException:
            # A failed or timed-out connect leaves no socket behind.
            sock.close()
            raise
        return {"sock": self.add_sock(sock), "local": [local[0], local[1]]}

    def op_send(self, args):
        sock = self.sock(args)
        try:
            data = base64.b64decode(arg(args, "data", str), validate=True)
        except binascii.Error as exc:
            raise malformed(f"data is not base64: {exc}") from None
        timeout = arg(args, "timeout", float, DEFAULT_TIMEOUT)
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        sent = 0
        # Like a blocking send(): everything unless the deadline or an error
        # comes first; a partial count is reported rather than lost.
        while sent < len(data):
            try:
                sent += sock.send(view[sent:])
            except BlockingIOError:
                if not wait_fd(sock, select.POLLOUT, deadline):
                    if sent:
                        break
                    raise timed_out("send", timeout) from None
            except OSError:
                if sent:
                    break
                raise
        return {"sent": sent}

    def op_recv(self, args):
        sock = self.sock(args)
        size = arg(args, "max", int, 65536)
        if size <= 0:
            raise malformed("max must be positive")
        timeout = arg(args, "timeout", float, DEFAULT_TIMEOUT)
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = sock.recv(size)
                break
            except BlockingIOError:
                if not wait_fd(sock, select.POLLIN, deadline):
                    raise timed_out("recv", timeout) from None
        return {"data": base64.b64encode(data).decode("ascii")}

    def op_shutdown(self, args):
        sock = self.sock(args)
        how = arg(args, "how", str)
        if how not in SHUTDOWN:
            raise malformed(f"how must be one of {sorted(SHUTDOWN)}")
        sock.shutdown(SHUTDOWN[how])
        return {}

    def op_close(self, args):
        sid = arg(args, "sock", int)
        with self.lock:
            sock = self.socks.pop(sid, None)
        if sock is None:
            raise Failure("EBADF", f"no socket {sid}")
        # socket.close() is a real close(2): with SO_LINGER {1, 0} Linux sends RST.
        sock.close()
        return {}

    def _opt(self, args):
        name = arg(args, "opt", str)
        if name not in SOCKOPTS:
            raise Failure("unsupported", f"socket option {name} is not supported")
        return SOCKOPTS[name]

    def op_setsockopt(self, args):
        sock = self.sock(args)
        level, opt, kind = self._opt(args)
        value = args.get("value")
        if kind == "linger":
            if (not isinstance(value, list) or len(value) != 2
                    or not all(isinstance(v, int) for v in value)):
                raise malformed("SO_LINGER value must be [onoff, secs]")
            sock.setsockopt(level, opt, struct.pack("ii", value[0], value[1]))
        else:
            if isinstance(value, bool):
                value = int(value)
            if not isinstance(value, int):
                raise malformed(f"{args['opt']} value must be an integer")
            sock.setsockopt(level, opt, value)
        return {}

    def op_getsockopt(self, args):
        sock = self.sock(args)
        level, opt, kind = self._opt(args)
        if kind == "linger":
            value = list(struct.unpack("ii", sock.getsockopt(level, opt, 8)))
        else:
            value = sock.getsockopt(level, opt)
        return {"value": value}

    def op_state(self, args):
        sock = self.sock(args)
        info = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 8)
        return {"state": TCP_STATES.get(info[0], f"UNKNOWN-{info[0]}")}

    @staticmethod
    def diagnosed(want_local, want_remote, local_addr, remote_addr):
        if None not in (want_local, want_remote, local_addr, remote_addr):
            family = family_of(local_addr)
            return diag(family, False, want_local, want_remote, socket.inet_pton(family, local_addr),
                        socket.inet_pton(family, remote_addr))
        found = []
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                found += diag(family, True)
            except OSError as exc:
                if exc.errno not in (errno.EAFNOSUPPORT, errno.EINVAL, errno.ENOENT):
                    raise  # a kernel without IPv6 has no table for it
        return found

    def op_conns(self, args):
        want_local = arg(args, "local_port", int, None)
        want_remote = arg(args, "remote_port", int, None)
        local_addr = arg(args, "local_addr", str, None)
        remote_addr = arg(args, "remote_addr", str, None)
        found = None
        try:
            found = None if self.no_diag else self.diagnosed(want_local, want_remote, local_addr, remote_addr)
        except OSError as exc:
            if exc.errno != errno.EPROTONOSUPPORT:
                raise
            self.no_diag = True
        if found is None:
            found = proc_net_tcp()
        conns = [{"local": list(local), "remote": list(remote), "state": TCP_STATES.get(state, f"UNKNOWN-{state}")}
                 for state, local, remote in found
                 if (want_local is None or local[1] == want_local) and (want_remote is None or remote[1] == want_remote)]
        return {"conns": conns}

    def op_sysctl(self, args):
        name = arg(args, "name", str)
        parts = name.split(".")
        if "/" in name or not all(parts) or any(p in (".", "..") for p in parts):
            raise malformed(f"bad sysctl name {name!r}")
        path = "/proc/sys/" + "/".join(parts)
        value = args.get("value")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise malformed("sysctl value must be a string or an integer")
            with open(path, "w") as f:
                f.write(f"{value}\n")
        with open(path) as f:
            return {"value": f.read().rstrip("\n")}

    def op_route(self, args):
        """The quickack metric of the routes of `dev` (a learner's setting: ACK at once, where the
        harness cannot reach the kernel's routes from outside, as with a user-mode kernel)."""
        dev = arg(args, "dev", str)
        quickack = arg(args, "quickack", int)
        if not dev.isalnum():
            raise malformed(f"bad device name {dev!r}")
        shown = subprocess.run(["ip", "-o", "-4", "route", "show", "dev", dev], capture_output=True, text=True)
        if shown.returncode != 0:
            raise Failure("EIO", shown.stderr.strip())
        routes = []
        for line in shown.stdout.splitlines():
            words = [w for w in line.split() if w != "\\"]
            if "quickack" in words:
                at = words.index("quickack")
                del words[at:at + 2]
            done = subprocess.run(["ip", "route", "change", *words, "dev", dev, "quickack", str(quickack)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise Failure("EIO", done.stderr.strip())
            routes.append(" ".join(words))
        return {"routes": routes}

    def op_start(self, args):
        call = args.get("call")
        if not isinstance(call, dict) or not isinstance(call.get("op"), str):
            raise malformed("call must be an object with an op")
        op = call["op"]
        call_args = call.get("args") or {}
        if not isinstance(call_args, dict):
            raise malformed("call args must be an object")
        if op in ("start", "wait", "quit"):
            raise malformed(f"{op} cannot run in the background")
        if op not in self.ops:
            raise Failure("unsupported", f"unknown op {op!r}")
        job = Job(op)
        with self.lock:
            jid = self.next_job
            self.next_job += 1
            self.jobs[jid] = job

        def run():
            job.reply = self.execute(op, call_args)
            self.log("job", f"{jid} {op} done: {json.dumps(job.reply)}")
            job.done.set()

        threading.Thread(target=run, name=f"job-{jid}", daemon=True).start()
        return {"job": jid}

    def op_wait(self, args):
        jid = arg(args, "job", int)
        timeout = arg(args, "timeout", float, DEFAULT_TIMEOUT)
        with self.lock:
            job = self.jobs.get(jid)
        if job is None:
            raise Failure("ESRCH", f"no job {jid}")
        if not job.done.wait(timeout):
            raise Failure("timeout", f"job {jid} ({job.op}) still running after {timeout:g} s")
        with self.lock:
            self.jobs.pop(jid, None)
        # As if made directly: `t` stays the time the background call returned.
        return job.reply


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def serve(agent, log, rfd, wfd):
    """Answer requests until EOF or quit."""
    buf = bytearray()
    while True:
        nl = buf.find(b"\n")
        if nl < 0:
            try:
                chunk = os.read(rfd, 1 << 16)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                log("eof", "control channel closed")
                return
            buf += chunk
            continue
        raw = bytes(buf[:nl]).strip()
        del buf[:nl + 1]
        if not raw:
            continue
        rid, op, args, reply = parse_request(raw, log)
        quit_after = op == "quit"
        if reply is None:
            reply = succeeded({}) if quit_after else agent.execute(op, args)
        try:
            write_all(wfd, reply_line(rid, reply, log))
        except OSError as exc:
            log("eof", f"control channel broken: {exc}")
            return
        if quit_after:
            return


def main():
    parser = argparse.ArgumentParser(description="synfin agent for the Linux TCP stack")
    parser.add_argument("--unix", metavar="PATH", help="serve one connection on this unix socket")
    opts = parser.parse_args()

    # docker stop sends SIGTERM to PID 1, which has no default action there.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    log = Log()
    agent = Agent(log)
    out_fd = private_stdout()
    banner = f"pid {os.getpid()} {STACK} {platform.release()}"
    try:
        if opts.unix:
            with unix_channel(opts.unix, log, banner) as conn:
                serve(agent, log, conn.fileno(), conn.fileno())
        else:
            log("ready", f"{banner} on stdin/stdout")
            serve(agent, log, 0, out_fd)
    except KeyboardInterrupt:
        pass
    finally:
        agent.close_all()
        log("exit", "bye")
    return 0


if __name__ == "__main__":
    sys.exit(main())
