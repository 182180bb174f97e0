#!/usr/bin/env python3
"""synfin agent for PyTCP (the pmd-pytcp package); speaks docs/agent-protocol.md.

PyTCP runs in this process on one asyncio loop, attached to the TAP the harness made (tap0);
the agent's control channel is served on the same loop, and every socket call goes to PyTCP's
own socket API (pmd_pytcp.socket), never to the kernel's (whose namespace holds no address).
The stack comes up on `hello` only: the TAP does not exist before that.
"""

import argparse
import asyncio
import base64
import binascii
import errno
import fcntl
import json
import logging
import os
import re
import signal
import socket as kernel_socket
import struct
import sys
import time

import pmd_pytcp
from pmd_net_addr import Ip4IfAddr, MacAddress
from pmd_pytcp import stack
from pmd_pytcp import socket as pt
from pmd_pytcp.lib.interface_layer import InterfaceLayer
from pmd_pytcp.protocols.arp import arp__constants
from pmd_pytcp.protocols.tcp.tcp__enums import FsmState
from pmd_pytcp.socket.tcp__socket import TcpSocket

# Beside this file in the image (the agent runs only there).
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from agentkit import (DEFAULT_TIMEOUT, OPS, Failure, Log, arg, failed, malformed, parse_request,  # noqa: E402
                      private_stdout, reply_line, succeeded, unix_channel)

STACK = "pytcp"

# PyTCP's FsmState -> RFC 9293 names.
TCP_STATES = {
    FsmState.CLOSED: "CLOSED",
    FsmState.LISTEN: "LISTEN",
    FsmState.SYN_SENT: "SYN-SENT",
    FsmState.SYN_RCVD: "SYN-RECEIVED",
    FsmState.ESTABLISHED: "ESTABLISHED",
    FsmState.FIN_WAIT_1: "FIN-WAIT-1",
    FsmState.FIN_WAIT_2: "FIN-WAIT-2",
    FsmState.CLOSE_WAIT: "CLOSE-WAIT",
    FsmState.CLOSING: "CLOSING",
    FsmState.LAST_ACK: "LAST-ACK",
    FsmState.TIME_WAIT: "TIME-WAIT",
}

# SO_RCVBUF / SO_SNDBUF are stored by PyTCP but change nothing (its receive window is fixed), so
# they are refused rather than pretended.
SOCKOPTS = {
    "SO_LINGER": (pt.SOL_SOCKET, pt.SO_LINGER, "linger"),
    "SO_REUSEADDR": (pt.SOL_SOCKET, pt.SO_REUSEADDR, "int"),
    "TCP_NODELAY": (pt.IPPROTO_TCP, pt.TCP_NODELAY, "int"),
}

SHUTDOWN = {"rd": 0, "wr": 1, "rdwr": 2}

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000

def ipv4(addr):
    """Numeric IPv4 only: the stack runs IPv4 alone on the lab link, and names are never resolved."""
    try:
        kernel_socket.inet_pton(kernel_socket.AF_INET, addr)
    except OSError:
        if ":" in addr:
            raise Failure("EAFNOSUPPORT", f"IPv6 is not enabled on this stack: {addr!r}") from None
        raise malformed(f"not a numeric IPv4 address: {addr!r}") from None
    return addr


def timed_out(op, timeout):
    return Failure("timeout", f"{op} did not complete within {timeout:g} s")


def state_name(state):
    return TCP_STATES.get(state, f"UNKNOWN-{state}")


class Job:
    def __init__(self, op, task):
        self.op = op
        self.task = task


class Agent:
    def __init__(self, log):
        self.log = log
        self.socks = {}
        self.jobs = {}
        self.next_sock = 1
        self.next_job = 1
        self.up = None  # the bring-up task, shared by concurrent hellos
        self.ops = {op: getattr(self, f"op_{op}") for op in OPS}

    # -- bookkeeping ---------------------------------------------------------

    def add_sock(self, sock):
        sid = self.next_sock
        self.next_sock += 1
        self.socks[sid] = sock
        return sid

    def sock(self, args):
        sid = arg(args, "sock", int)
        sock = self.socks.get(sid)
        if sock is None:
            raise Failure("EBADF", f"no socket {sid}")
        return sock

    def require_up(self):
        if self.up is None or not self.up.done() or self.up.exception() is not None:
            raise Failure("ENETDOWN", "the stack is not up yet (hello brings it up)")

    # -- dispatch ------------------------------------------------------------

    async def execute(self, op, args):
        """Run one op; the reply without its id."""
        try:
            if op == "start":
                result = self.op_start(args)
            elif op == "wait":
                return await self.op_wait(args)
            else:
                handler = self.ops.get(op)
                if handler is None:
                    raise Failure("unsupported", f"unknown op {op!r}")
                if op not in ("hello", "sysctl"):
                    self.require_up()
                result = await handler(args)
            return succeeded(result)
        except Failure as exc:
            return failed(exc)
        except TimeoutError as exc:
            # PyTCP's own deadlines (recv/accept timeout=) raise a bare TimeoutError; a TCP-level
            # timeout (connect's SYN retries) carries ETIMEDOUT.
            code = errno.errorcode.get(exc.errno, "EIO") if exc.errno else "timeout"
            message = str(exc) or "timed out"
        except OSError as exc:
            code = errno.errorcode.get(exc.errno, "EIO") if exc.errno else "EIO"
            message = str(exc)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            code, message = "EBADMSG", f"bad arguments: {exc!r}"
        except Exception as exc:  # noqa: BLE001 - the agent must survive its own bugs
            code, message = "EIO", f"agent error: {exc!r}"
        return failed(Failure(code, message))

    # -- bring-up ------------------------------------------------------------

    async def bring_up(self):
        iface = os.environ.get("SYNFIN_IFACE", "tap0")
        mac = MacAddress(os.environ["SYNFIN_MAC"])
        host = Ip4IfAddr(os.environ["SYNFIN_ADDR"])
        started = time.monotonic()
        fd = os.open("/dev/net/tun", os.O_RDWR)
        try:
            # Attaching to the persistent TAP the harness owns needs no CAP_NET_ADMIN.
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", iface.encode(), IFF_TAP | IFF_NO_PI))
        except OSError:
            os.close(fd)
            raise
        stack.init()
        # RFC 5227 conflict detection of the static address takes 5-9 s with the stock
        # constants and leaves the address unusable meanwhile. On a lab link nobody else can
        # own it: one probe and one announcement, 20 ms apart, keep the procedure but not the
        # wait. (Set as module attributes: the sysctl validators accept whole seconds only.)
        arp__constants.ARP__PROBE_WAIT = 0
        arp__constants.ARP__PROBE_NUM = 1
        arp__constants.ARP__PROBE_MIN = 0.02
        arp__constants.ARP__PROBE_MAX = 0.02
        arp__constants.ARP__ANNOUNCE_WAIT = 0.02
        arp__constants.ARP__ANNOUNCE_NUM = 1
        stack.add_interface(
            fd=fd, layer=InterfaceLayer.L2, mtu=stack.INTERFACE__TAP__MTU, mac_address=mac,
            interface_name=iface, ip4_support=True, ip4_host=host, ip4_dhcp=False,
            # IPv4 only: IPv6 would add router solicitations and DAD to the lab link.
            ip6_support=False, ip6_gua_autoconfig=False, ip6_lla_autoconfig=False,
        )
        await stack.start()
        # "Usable" = the address left conflict detection and the stack answers for it.
        while host.address not in stack.local_ip4_unicast():
            await asyncio.sleep(0.005)
        self.log("stack", f"PyTCP {pmd_pytcp.__version__} up on {iface} ({mac}) with {host} "
                 f"in {time.monotonic() - started:.3f} s")

    # -- ops -----------------------------------------------------------------

    async def op_hello(self, args):
        if self.up is None:
            self.up = asyncio.ensure_future(self.bring_up())
        try:
            await asyncio.shield(self.up)
        except OSError as exc:
            raise Failure(errno.errorcode.get(exc.errno, "EIO") if exc.errno else "EIO",
                          f"cannot bring PyTCP up: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - e.g. a missing SYNFIN_* variable
            raise Failure("EIO", f"cannot bring PyTCP up: {exc!r}") from None
        names = sorted(list(self.ops) + ["start", "wait", "quit"])
        return {"stack": STACK, "version": pmd_pytcp.__version__, "pid": os.getpid(), "ops": names}

    async def op_listen(self, args):
        addr = ipv4(arg(args, "addr", str))
        port = arg(args, "port", int)
        backlog = arg(args, "backlog", int, 16)
        reuse = arg(args, "reuseaddr", bool, False)
        if arg(args, "rcvbuf", int, None) is not None:
            raise Failure("unsupported", "SO_RCVBUF has no effect on PyTCP's receive window")
        if backlog <= 0:
            raise Failure("EINVAL", "backlog must be positive")
        sock = pt.socket(family=pt.AddressFamily.INET4, type=pt.SocketType.STREAM)
        try:
            if reuse:
                sock.setsockopt(pt.SOL_SOCKET, pt.SO_REUSEADDR, 1)
            sock.bind((addr, port))
            sock.listen(backlog=backlog)
        except BaseException:
            sock.close()
            raise
        return {"sock": self.add_sock(sock), "local": [str(sock.local_ip_address), sock.local_port]}

    async def op_accept(self, args):
        listener = self.sock(args)
        timeout = arg(args, "timeout", float, DEFAULT_TIMEOUT)
        try:
            conn, peer = await listener.accept(timeout=timeout)
        except TimeoutError as exc:
            if exc.errno:
                raise
            raise timed_out("accept", timeout) from None
        return {"sock": self.add_sock(conn), "peer": [peer[0], peer[1]]}

    async def op_connect(self, args):
        addr = ipv4(arg(args, "addr", str))
        port = arg(args, "port", int)
        bind_addr = arg(args, "bind_addr", str, None)
        bind_port = arg(args, "bind_port", int, None)
        reuse = arg(args, "reuseaddr", bool, False)
        timeout = arg(args, "timeout", float, DEFAULT_TIMEOUT)
        sock = pt.socket(family=pt.AddressFamily.INET4, type=pt.SocketType.STREAM)
        try:
            if reuse:
                sock.setsockopt(pt.SOL_SOCKET, pt.SO_REUSEADDR, 1)
            if bind_addr is not None or bind_port is not None:
                sock.bind((ipv4(bind_addr) if bind_addr is not None else "0.0.0.0", bind_port or 0))
            try:
                # Cancelling PyTCP's connect() aborts the half-open session: no socket is left.
                await asyncio.wait_for(sock.connect((addr, port)), timeout)
            except TimeoutError as exc:
                if exc.errno:
                    raise
                raise timed_out("connect", timeout) from None
        except BaseException:
            sock.close()
            raise
        return {"sock": self.add_sock(sock), "local": [str(sock.local_ip_address), sock.local_port]}

    async def op_send(self, args):
        sock = self.sock(args)
        try:
            data = base64.b64decode(arg(args, "data", str), validate=True)
        except binascii.Error as exc:
            raise malformed(f"data is not base64: {exc}") from None
        arg(args, "timeout", float, DEFAULT_TIMEOUT)
        # PyTCP queues the whole buffer at once (its send buffer is unbounded): never partial.
        return {"sent": await sock.send(data)}

    async def op_recv(self, args):
        sock = self.sock(args)
        size = arg(args, "max", int, 65536)
        if size <= 0:
            raise malformed("max must be positive")
        timeout = arg(args, "timeout", float, DEFAULT_TIMEOUT)
        if sock.tcp_session is None:
            raise Failure("ENOTCONN", "socket is not connected")
        try:
            data = await sock.recv(size, timeout=timeout)
        except TimeoutError as exc:
            if exc.errno:
                raise
            raise timed_out("recv", timeout) from None
        return {"data": base64.b64encode(data).decode("ascii")}

    async def op_shutdown(self, args):
        sock = self.sock(args)
        how = arg(args, "how", str)
        if how not in SHUTDOWN:
            raise malformed(f"how must be one of {sorted(SHUTDOWN)}")
        if sock.tcp_session is None:
            raise Failure("ENOTCONN", "socket is not connected")
        sock.shutdown(SHUTDOWN[how])
        return {}

    async def op_close(self, args):
        sid = arg(args, "sock", int)
        sock = self.socks.pop(sid, None)
        if sock is None:
            raise Failure("EBADF", f"no socket {sid}")
        # PyTCP's close(): FIN, or RST with SO_LINGER {1, 0} (TcpSocket.close).
        sock.close()
        return {}

    def _opt(self, args):
        name = arg(args, "opt", str)
        if name not in SOCKOPTS:
            raise Failure("unsupported", f"socket option {name} is not supported by PyTCP")
        return SOCKOPTS[name]

    async def op_setsockopt(self, args):
        sock = self.sock(args)
        level, opt, kind = self._opt(args)
        value = args.get("value")
        if kind == "linger":
            if (not isinstance(value, list) or len(value) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
                raise malformed("SO_LINGER value must be [onoff, secs]")
            if value[0] and value[1] > 0:
                # PyTCP's close() never blocks: a positive linger time would be a graceful close
                # that returns at once (TcpSocket.close), not what SO_LINGER promises.
                raise Failure("unsupported", "PyTCP has no lingering close (only SO_LINGER {1, 0})")
            sock.setsockopt(level, opt, struct.pack("@ii", value[0], value[1]))
        else:
            if isinstance(value, bool):
                value = int(value)
            if not isinstance(value, int):
                raise malformed(f"{args['opt']} value must be an integer")
            sock.setsockopt(level, opt, value)
        return {}

    async def op_getsockopt(self, args):
        sock = self.sock(args)
        level, opt, kind = self._opt(args)
        value = sock.getsockopt(level, opt)
        if kind == "linger":
            value = list(struct.unpack("@ii", value))
        return {"value": value}

    async def op_state(self, args):
        return {"state": state_name(self.sock(args).state)}

    async def op_conns(self, args):
        want_local = arg(args, "local_port", int, None)
        want_remote = arg(args, "remote_port", int, None)
        conns = []
        # Every TCB PyTCP holds is a registered socket until its session reaches CLOSED, also
        # after the application closed it (TIME-WAIT, LAST-ACK...) and before accept().
        for sock in stack.sockets.values():
            if not isinstance(sock, TcpSocket) or sock.tcp_session is None:
                continue
            session = sock.tcp_session
            if session.state is FsmState.CLOSED:
                continue
            if want_local is not None and session.local_port != want_local:
                continue
            if want_remote is not None and session.remote_port != want_remote:
                continue
            conns.append({
                "local": [str(session.local_ip_address), session.local_port],
                "remote": [str(session.remote_ip_address), session.remote_port],
                "state": state_name(session.state),
            })
        return {"conns": conns}

    async def op_sysctl(self, args):
        """PyTCP's own settings (pmd_pytcp.stack.sysctl, e.g. tcp.delayed_ack.delay_ms), not a
        kernel's: the learner shortens its timers with them."""
        from pmd_pytcp.stack import sysctl as knobs

        name = arg(args, "name", str)
        value = args.get("value")
        try:
            if value is not None:
                if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value):
                    value = int(value)
                knobs.set(name, value)
            return {"value": str(knobs.get(name))}
        except KeyError:
            raise Failure("ENOENT", f"PyTCP has no setting {name}") from None
        except ValueError as exc:
            raise Failure("EINVAL", str(exc)) from None

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
        jid = self.next_job
        self.next_job += 1

        async def run():
            reply = await self.execute(op, call_args)
            self.log("job", f"{jid} {op} done: {json.dumps(reply)}")
            return reply

        self.jobs[jid] = Job(op, asyncio.ensure_future(run()))
        return {"job": jid}

    async def op_wait(self, args):
        try:
            jid = arg(args, "job", int)
            timeout = arg(args, "timeout", float, DEFAULT_TIMEOUT)
            job = self.jobs.get(jid)
            if job is None:
                raise Failure("ESRCH", f"no job {jid}")
            done, _ = await asyncio.wait({job.task}, timeout=timeout)
            if not done:
                raise Failure("timeout", f"job {jid} ({job.op}) still running after {timeout:g} s")
        except Failure as exc:
            return failed(exc)
        self.jobs.pop(jid, None)
        # As if made directly: `t` stays the time the background call returned.
        return job.task.result()


class StackLogHandler(logging.Handler):
    """PyTCP's own warnings (and, on request, its channel log) into the agent's log."""

    _ANSI = re.compile(r"\x1b\[[0-9;]*m")

    def __init__(self, log):
        super().__init__()
        self.agent_log = log

    def emit(self, record):
        try:
            self.agent_log("pytcp", self._ANSI.sub("", record.getMessage()).strip())
        except Exception:  # noqa: BLE001 - logging must never break the stack
            pass


def configure_stack_log(log):
    logger = logging.getLogger("pmd_pytcp")
    logger.propagate = False
    logger.addHandler(StackLogHandler(log))
    # SYNFIN_PYTCP_LOG=tcp-ss,... turns on PyTCP's channel log (debugging the agent by hand).
    channels = {c for c in os.environ.get("SYNFIN_PYTCP_LOG", "").split(",") if c}
    if channels:
        stack.LOG__CHANNEL = channels
        logger.setLevel(logging.DEBUG)
    else:
        logger.setLevel(logging.WARNING)


async def write_all(writer, data):
    writer.write(data)
    await writer.drain()


async def serve(agent, log, reader, writer):
    """Answer requests, one at a time and in order, until EOF or quit."""
    while True:
        try:
            raw = await reader.readline()
        except (ConnectionResetError, asyncio.IncompleteReadError):
            raw = b""
        except asyncio.LimitOverrunError:
            log("eof", "request line too long")
            return
        if not raw:
            log("eof", "control channel closed")
            return
        raw = raw.strip()
        if not raw:
            continue
        rid, op, args, reply = parse_request(raw, log)
        quit_after = op == "quit"
        if reply is None:
            reply = succeeded({}) if quit_after else await agent.execute(op, args)
        try:
            await write_all(writer, reply_line(rid, reply, log))
        except OSError as exc:
            log("eof", f"control channel broken: {exc}")
            return
        if quit_after:
            return


async def run_unix(agent, log, conn):
    reader, writer = await asyncio.open_connection(sock=conn, limit=1 << 26)
    try:
        await serve(agent, log, reader, writer)
    finally:
        writer.close()


async def run_stdio(agent, log, out_fd):
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", 0))
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                         os.fdopen(out_fd, "wb", 0))
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    await serve(agent, log, reader, writer)


def main():
    parser = argparse.ArgumentParser(description="synfin agent for PyTCP")
    parser.add_argument("--unix", metavar="PATH", help="serve one connection on this unix socket")
    opts = parser.parse_args()

    # docker stop sends SIGTERM to PID 1, which has no default action there.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    log = Log()
    configure_stack_log(log)
    agent = Agent(log)
    out_fd = private_stdout()
    banner = f"pid {os.getpid()} {STACK} PyTCP {pmd_pytcp.__version__}"
    try:
        if opts.unix:
            with unix_channel(opts.unix, log, banner) as conn:
                asyncio.run(run_unix(agent, log, conn))
        else:
            log("ready", f"{banner} on stdin/stdout")
            asyncio.run(run_stdio(agent, log, out_fd))
    except KeyboardInterrupt:
        pass
    finally:
        log("exit", "bye")
    return 0


if __name__ == "__main__":
    sys.exit(main())
