"""A case's exchange on Linux as a packetdrill script (.pkt) that replays it against a kernel.

The peer's segments become inbound packets (`<`), the target's observed segments expected outbound
ones (`>`), the agent's calls system calls, each at its time in the case after the event before
(`+0.0012`; an immediate answer of the target: `+0~+0.01`). Sequence numbers are packetdrill's
relative ones: the peer's first segment has seq 0 (its SYN gives the ISN), the target's SYN too.
packetdrill picks its own addresses and ports (--local_ip, --remote_ip, --bind_port); the script
names none.

packetdrill follows one socket under test, so a script replays one connection: the case's first.
What it cannot replay is left out with a `//` comment saying what; a record with nothing to replay
raises `NotExportable`. `EXPORTED` and `NOT_EXPORTABLE` (`exported_constructs()`) list both.
"""
import errno
import os
import re
from pathlib import Path

MOD = 1 << 32
# A target segment this soon after the previous event answers it: it is expected within this
# long of that event (the harness reads the wire late, and Linux holds the ACK of a FIN for a few
# ms, not always the same). A later one is a timer's: expected when it was seen.
SNAP = 0.010
# A call that took longer than this waited in the kernel: a blocking call with an end time.
BLOCKING = 0.05

EXPORTED = (
    "inbound (<) and expected outbound (>) TCP segments of the case's first connection",
    "flags S F R P U E W A and . (ACK), seq:end(len), ack, win",
    "TCP options mss, wscale, sackOK, TS val/ecr, sack blocks, with the nop padding Linux uses",
    "segments to a port with no socket (SYN, ACK, FIN, RST to a closed port): no socket under test",
    "listen: socket, setsockopt SO_REUSEADDR (and SO_RCVBUF), bind, listen",
    "accept; connect (blocking)",
    "background connect: socket, fcntl O_NONBLOCK, connect = -1 EINPROGRESS; when it returned, "
    "getsockopt SO_ERROR ([0] or the errno) and fcntl back to blocking (or close, as the agent does)",
    "send as write, recv as read, shutdown SHUT_RD/SHUT_WR/SHUT_RDWR, close",
    "setsockopt SO_LINGER {onoff, linger}, SO_RCVBUF, SO_SNDBUF, SO_REUSEADDR, TCP_NODELAY",
    "errno results: = -1 ECONNRESET (Connection reset by peer)",
    "other background calls and calls that waited, as blocking calls (+start...end)",
    "sysctls the case set, as the script's init command (`sysctl -q -w ...`)",
    "the expectation that broke, or the segment that never came, as a comment where it happened",
)
NOT_EXPORTABLE = (
    "connections after the first (other peer ports): packetdrill has one socket under test",
    "a new incarnation of the first connection: a target SYN with a new ISN packetdrill cannot predict",
    "calls on sockets of the connections left out",
    "state and conns queries, getsockopt: synfin reads TCP_INFO and /proc, packetdrill does not check them",
    "calls that ended in an agent timeout: a blocking call that never returns would hang packetdrill",
    "other TCP options: left out of an inbound segment; an outbound one's options are not checked (<...>)",
    "segment content, checksums, IP options, TTL: not in the exchange (packetdrill sends and expects "
    "zero bytes, correct checksums)",
)

_FLAGS = {"FIN": "F", "SYN": "S", "RST": "R", "PSH": "P", "URG": "U", "ECE": "E", "CWR": "W", "AE": "A"}
_SHUT = {"rd": "SHUT_RD", "wr": "SHUT_WR", "rdwr": "SHUT_RDWR"}
_SOCKOPTS = {"SO_LINGER": "SOL_SOCKET", "SO_RCVBUF": "SOL_SOCKET", "SO_SNDBUF": "SOL_SOCKET",
             "SO_REUSEADDR": "SOL_SOCKET", "TCP_NODELAY": "IPPROTO_TCP"}
# Words packetdrill's lexer (lexer.l) turns into keywords: they cannot appear in an errno's note.
_LEXER_WORDS = frozenset("""
    sa_family sin_port sin_addr msg_name msg_iov msg_flags msg_control cmsg_data cmsg_level
    cmsg_type ee_errno ee_origin ee_type ee_code ee_info ee_data scm_sec scm_nsec fd u32 u64 ptr
    events revents onoff linger htons ipv4 ipv6 icmp udp GREv0 gre raw sum off key seq none
    checksum present encap psp spi mpls label tc ttl inet_addr inet6_addr ack eol ecr mss mtu nop
    sack sackOK md5 TS FO FOEXP ECN e0b e1b ceb tos flowlabel flags Flags val win urg wscale ect01
    ect0 ect1 noecn ce id
""".split())


class NotExportable(Exception):
    """The record holds nothing packetdrill could replay; the message says why."""


def exported_constructs() -> dict[str, tuple[str, ...]]:
    return {"exported": EXPORTED, "not_exportable": NOT_EXPORTABLE}


def slug(case: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", case)


def write(record: dict, out_dir) -> str:
    """Write `<case-slug>.pkt` into `out_dir` (made if missing); its path. Raises NotExportable."""
    text = script(record)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{slug(record['case'])}.pkt"
    path.write_text(text)
    return str(path)


def script(record: dict) -> str:
    """The packetdrill script replaying the record's exchange; raises NotExportable."""
    return _Export(record).text()


# -- helpers ------------------------------------------------------------------------------------
def _errno_result(result: str) -> str | None:
    """`-1 ENAME (text)` for an errno name, None for anything else (timeout, agent errors)."""
    code = getattr(errno, result, None) if re.fullmatch(r"E[A-Z0-9]+", result or "") else None
    if not isinstance(code, int):
        return None
    words = re.sub(r"[^A-Za-z0-9_ ]", " ", os.strerror(code)).split()
    if not words or any(w in _LEXER_WORDS for w in words):
        words = [result]  # the note is required by the grammar; any plain words will do
    return f"-1 {result} ({' '.join(words)})"


def _secs(usecs: int) -> str:
    return f"{usecs / 1e6:.6f}".rstrip("0").rstrip(".") or "0"


class _Export:
    def __init__(self, record: dict):
        target = record.get("target", "linux")
        if target != "linux":
            raise NotExportable(f"packetdrill replays on the Linux kernel; this record is of target {target}")
        ex = record.get("exchange")
        if not ex or not ex.get("segments"):
            raise NotExportable("the record has no segments to replay")
        self.record, self.ex = record, ex
        first = ex["segments"][0]
        self.ports = (first["peer_port"], first["target_port"])
        self.notes: list[str] = []      # header comments about what was left out
        self.events: list[list] = []    # [t, order, kind, text, end]; kind: "pkt<", "pkt>", "call", "note"
        self.fds: dict[int, int] = {}   # agent socket -> script fd
        self._segments()
        self._calls()
        if not any(e[2] != "note" for e in self.events):
            raise NotExportable("nothing of the exchange can be replayed")

    # -- segments ---------------------------------------------------------------------------
    def _segments(self) -> None:
        segs = self.ex["segments"]
        mine = [(i, s) for i, s in enumerate(segs) if (s["peer_port"], s["target_port"]) == self.ports]
        others = {}
        for s in segs:
            key = (s["peer_port"], s["target_port"])
            if key != self.ports:
                others[key] = others.get(key, 0) + 1
        if len(others) > 3:
            self.notes.append(f"left out: {len(others)} more connections ({sum(others.values())} segments, peer ports "
                              f"{min(p for p, _ in others)}..{max(p for p, _ in others)}); packetdrill follows one")
        else:
            for (pp, tp), n in others.items():
                self.notes.append(f"left out: connection peer port {pp} -> target port {tp} ({n} segments); "
                                  "packetdrill follows one connection")
        first = mine[0][1]
        self.active = first["from"] == "target"
        if self.active and not ("SYN" in first["flags"].split(",") and "ACK" not in first["flags"].split(",")):
            raise NotExportable(f"the first segment is the target's {first['flags']}: "
                                "packetdrill cannot map a connection it did not see open")
        target_syn = next((s for _, s in mine if s["from"] == "target" and "SYN" in s["flags"].split(",")), None)
        # packetdrill takes the target's ISN from its first SYN; without one, numbers stay absolute.
        self.target_isn = target_syn["abs_seq"] if target_syn else 0
        # The peer's first segment fixes packetdrill's remote ISN; its SYN once the target's is out.
        inbound = [s for _, s in mine if s["from"] == "peer"]
        if self.active:
            syn = next((s for s in inbound if "SYN" in s["flags"].split(",")), None)
            self.peer_isn = (syn or inbound[0])["abs_seq"] if inbound else 0
        else:
            self.peer_isn = first["abs_seq"]
        self.cut = None
        failure = self.ex.get("failure") or {}
        for i, s in mine:
            if s["from"] == "target" and "SYN" in s["flags"].split(",") and s["abs_seq"] != self.target_isn:
                self.cut = s["t"]
                self.notes.append(f"left out from {s['t']:.6f} s: the target's SYN with a new ISN opens a new "
                                  "incarnation of the connection; packetdrill cannot predict its ISN")
                break
            if failure.get("broke") == i:
                self._note(s["t"], f"synfin expected {' or '.join(failure['expected'])}; the target sent instead:")
            self._segment(s)
        if failure and failure.get("broke") is None and failure.get("peer_port") in (None, self.ports[0]):
            if self.cut is None or failure["t"] < self.cut:
                self._note(failure["t"], f"synfin expected here, not received: {' or '.join(failure['expected'])}")

    def _segment(self, s: dict) -> None:
        inbound = s["from"] == "peer"
        own, other = (self.peer_isn, self.target_isn) if inbound else (self.target_isn, self.peer_isn)
        words = [w for w in s["flags"].split(",") if w and w != "<none>"]
        unknown = [w for w in words if w != "ACK" and w not in _FLAGS]
        if unknown:
            self._note(s["t"], f"left out: a segment with flags {s['flags']} packetdrill cannot write")
            return
        letters = "".join(_FLAGS[w] for w in ("FIN", "SYN", "RST", "PSH", "URG", "ECE", "CWR", "AE") if w in words)
        flags = letters + ("." if "ACK" in words else "") or "-"
        start = (s["abs_seq"] - own) % MOD
        if start + s["len"] >= MOD:
            self._note(s["t"], f"left out: {s['flags']} whose sequence range wraps past 2^32 in script numbers")
            return
        text = f"{'<' if inbound else '>'} {flags} {start}:{start + s['len']}({s['len']})"
        if "ACK" in words:
            text += f" ack {(s['abs_ack'] - other) % MOD}"
        text += f" win {s['win']}"
        options, dropped = self._options(s["options"], base=other)
        if dropped:
            if inbound:
                self._note(s["t"], f"left out of the next segment: TCP options {', '.join(dropped)}")
            else:
                options = "<...>"
                self._note(s["t"], f"the next segment's options are not checked: it carried {', '.join(dropped)}")
        if options:
            text += f" {options}"
        self._event(s["t"], "pkt<" if inbound else "pkt>", text)

    @staticmethod
    def _options(options: list, base: int) -> tuple[str, list[str]]:
        """The option list with Linux's nop layout (packetdrill checks nops too); the names it
        cannot write. SACK blocks are in the receiver's numbers (`base`)."""
        out, dropped, i = [], [], 0
        while i < len(options):
            name, *vals = options[i]
            nxt = options[i + 1][0] if i + 1 < len(options) else None
            if name == "mss":
                out.append(f"mss {vals[0]}")
            elif name == "sackOK" and nxt == "TS":
                ts = options[i + 1]
                out += ["sackOK", f"TS val {ts[1]} ecr {ts[2]}"]
                i += 1
            elif name == "sackOK":
                out += ["nop", "nop", "sackOK"]
            elif name == "TS":
                out += ["nop", "nop", f"TS val {vals[0]} ecr {vals[1]}"]
            elif name == "wscale":
                out += ["nop", f"wscale {vals[0]}"]
            elif name == "sack" and vals and len(vals) % 2 == 0:
                blocks = " ".join(f"{(vals[j] - base) % MOD}:{(vals[j + 1] - base) % MOD}"
                                  for j in range(0, len(vals), 2))
                out += ["nop", "nop", f"sack {blocks}"]
            else:
                dropped.append(str(name))
            i += 1
        return (f"<{','.join(out)}>" if out else ""), dropped

    # -- calls ------------------------------------------------------------------------------
    def _calls(self) -> None:
        calls = self.ex.get("calls") or []
        listener = None          # agent socket of the listener on the connection's target port
        accepted = connected = False
        pending: dict[str, dict] = {}   # background op -> its start entry
        for k, c in enumerate(calls):
            op, args, result = c["op"], c.get("args") or {}, str(c.get("result"))
            t = c["t_call"]
            if self.cut is not None and t >= self.cut:
                self._note(t, f"left out: {op} (after the new incarnation)")
                continue
            if op.startswith("start "):
                name = op[len("start "):]
                if name == "connect" and (connected or not self.active_owner(args)):
                    self._note(t, f"left out: {op}({self._args(args)}) of another connection or incarnation")
                    continue
                if name != "connect" and args.get("sock") not in self.fds:
                    self._note(t, f"left out: {op}({self._args(args)}) on a socket of another connection")
                    continue
                pending[name] = c
                if name == "connect":
                    connected = True
                    self._start_connect(c)
                continue
            start = pending.get(op)
            if start is not None and start.get("args") == c.get("args"):
                if result == "timeout" and any(later["op"] == op for later in calls[k + 1:]):
                    continue  # only the wait timed out; the call went on and returned later
                del pending[op]
                if op == "connect":
                    self._connect_done(c)
                    continue
                self._call(c, start=start["t_call"], end=c["t"], background=True)
                continue
            if op == "listen":
                if listener is None and args.get("port") == self.ports[1] and not self.active:
                    listener = self._listen(c)
                else:
                    self._note(t, f"left out: listen({self._args(args)}) of another connection")
                continue
            if op == "accept" and args.get("sock") == listener and listener is not None:
                if accepted and result.startswith("sock "):
                    self._note(t, "left out: accept of another connection = " + result)
                    continue
                accepted = accepted or result.startswith("sock ")
            if op == "connect":
                if connected or not self.active_owner(args):
                    self._note(t, f"left out: connect({self._args(args)}) of another connection")
                    continue
                connected = True
                self._sync_connect(c)
                continue
            self._call(c)
        for name, c in pending.items():
            self._note(c["t_call"], f"left out: the end of the background {name} (not waited for)")
        if self.active and not connected:
            raise NotExportable("the target opened the connection but the record has no connect call for it")

    def active_owner(self, args: dict) -> bool:
        return self.active and args.get("port") == self.ports[0]

    @staticmethod
    def _args(args: dict) -> str:
        return ", ".join(f"{k}={v}" for k, v in args.items())

    def _new_fd(self, sock: int) -> int:
        """The lowest free descriptor from 3, as the kernel hands them out."""
        used = set(self.fds.values())
        fd = 3
        while fd in used:
            fd += 1
        self.fds[sock] = fd
        return fd

    @staticmethod
    def _sock_of(result: str) -> int | None:
        m = re.fullmatch(r"sock (\d+)", result)
        return int(m.group(1)) if m else None

    def _listen(self, c: dict) -> int | None:
        sock = self._sock_of(str(c["result"]))
        if sock is None:
            self._note(c["t_call"], f"left out: listen = {c['result']}")
            return None
        fd, t, args = self._new_fd(sock), c["t_call"], c["args"]
        self._event(t, "call", f"socket(..., SOCK_STREAM, IPPROTO_TCP) = {fd}")
        # bind() to packetdrill's --bind_port: address reuse keeps reruns in one namespace working.
        self._event(t, "call", f"setsockopt({fd}, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0")
        if "rcvbuf" in args:  # before listen(): the window scale of accepted connections follows it
            self._event(t, "call", f"setsockopt({fd}, SOL_SOCKET, SO_RCVBUF, [{args['rcvbuf']}], 4) = 0")
        self._event(t, "call", f"bind({fd}, ..., ...) = 0")
        self._event(t, "call", f"listen({fd}, {args.get('backlog', 16)}) = 0")
        return sock

    def _connect_setup(self, c: dict, fd: int, nonblocking: bool) -> None:
        t, args = c["t_call"], c["args"]
        self._event(t, "call", f"socket(..., SOCK_STREAM, IPPROTO_TCP) = {fd}")
        if nonblocking:
            self._event(t, "call", f"fcntl({fd}, F_SETFL, O_RDWR|O_NONBLOCK) = 0")
        if "bind_port" in args:  # packetdrill binds its own --bind_port
            self._event(t, "call", f"setsockopt({fd}, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0")
            self._event(t, "call", f"bind({fd}, ..., ...) = 0")

    def _start_connect(self, c: dict) -> None:
        fd = self._new_fd(-1)  # re-keyed to the agent's socket when it returns
        self._connect_setup(c, fd, nonblocking=True)
        self._event(c["t_call"], "call", f"connect({fd}, ..., ...) = {_errno_result('EINPROGRESS')}")

    def _connect_done(self, c: dict) -> None:
        fd = self.fds.pop(-1)
        result, t = str(c["result"]), c["t"]
        sock = self._sock_of(result)
        if sock is not None:
            self.fds[sock] = fd
            self._event(t, "call", f"getsockopt({fd}, SOL_SOCKET, SO_ERROR, [0], [4]) = 0")
            self._event(t, "call", f"fcntl({fd}, F_SETFL, O_RDWR) = 0")
            return
        if _errno_result(result):
            self._event(t, "call", f"getsockopt({fd}, SOL_SOCKET, SO_ERROR, [{result}], [4]) = 0")
        else:
            self._note(t, f"the background connect ended with {result}; the agent closed its socket")
        self._event(t, "call", f"close({fd}) = 0")  # the agent closes a socket whose connect failed

    def _sync_connect(self, c: dict) -> None:
        result = str(c["result"])
        sock = self._sock_of(result)
        ret = "0" if sock is not None else _errno_result(result)
        if ret is None:
            self._note(c["t_call"], f"left out: connect({self._args(c['args'])}) = {result}")
            return
        fd = self._new_fd(sock if sock is not None else -2)
        self._connect_setup(c, fd, nonblocking=False)
        end = c["t"] if c["t"] - c["t_call"] > BLOCKING else None
        self._syscall(c["t_call"], end, f"connect({fd}, ..., ...)", ret)
        if sock is None:
            del self.fds[-2]
            self._event(c["t"], "call", f"close({fd}) = 0")

    def _call(self, c: dict, start: float | None = None, end: float | None = None,
              background: bool = False) -> None:
        op, args, result = c["op"], c.get("args") or {}, str(c.get("result"))
        t = c["t_call"] if start is None else start
        end = c["t"] if end is None else end
        # A call that waited, or ran in the background (it may wait for a later event), is a
        # blocking call with its end time: packetdrill must not run it inline.
        end = end if background or end - t > BLOCKING else None
        shown = f"{op}({self._args(args)}) = {result}"
        if op in ("state", "conns", "getsockopt"):
            self._note(t, f"{shown}: not checked here")
            return
        sock = args.get("sock")
        fd = self.fds.get(sock)
        if fd is None:
            self._note(t, f"left out: {shown} (a socket of another connection)")
            return
        err = _errno_result(result)
        if err is None and result != "ok" and not re.fullmatch(r"(sent|sock) \d+|\d+ bytes", result):
            self._note(t, f"left out: {shown} (the agent's own outcome, not the call's)")
            return
        if op == "accept":
            sock_new = self._sock_of(result)
            ret = str(self._new_fd(sock_new)) if sock_new is not None else err
            self._syscall(t, end, f"accept({fd}, ..., ...)", ret)
        elif op == "send":
            ret = err or result.split()[1]
            self._syscall(t, end, f"write({fd}, ..., {args.get('len', 0)})", ret)
        elif op == "recv":
            ret = err or result.split()[0]
            self._syscall(t, end, f"read({fd}, ..., {args.get('max', 65536)})", ret)
        elif op == "shutdown" and args.get("how") in _SHUT:
            self._syscall(t, end, f"shutdown({fd}, {_SHUT[args['how']]})", err or "0")
        elif op == "close":
            self._syscall(t, end, f"close({fd})", err or "0")
            if err is None:
                del self.fds[sock]
        elif op == "setsockopt" and args.get("opt") in _SOCKOPTS:
            opt, value = args["opt"], args.get("value")
            if opt == "SO_LINGER":
                val, size = f"{{onoff={int(value[0])}, linger={int(value[1])}}}", 8
            else:
                val, size = f"[{int(value)}]", 4
            self._syscall(t, end, f"setsockopt({fd}, {_SOCKOPTS[opt]}, {opt}, {val}, {size})", err or "0")
        else:
            self._note(t, f"left out: {shown} (no packetdrill form)")

    def _syscall(self, t: float, end: float | None, call: str, ret: str) -> None:
        self._event(t, "call", f"{call} = {ret}", end=end)

    # -- the script -------------------------------------------------------------------------
    def _event(self, t: float, kind: str, text: str, end: float | None = None) -> None:
        self.events.append([t, len(self.events), kind, text, end])

    def _note(self, t: float, text: str) -> None:
        self._event(t, "note", text)

    def _timeline(self) -> list[list]:
        """Events in time order, in microseconds from the first event. A target segment that
        answers the event before it gets the `end` "answer": it is expected within SNAP of it."""
        events = sorted(self.events, key=lambda e: (e[0], e[1]))
        real = [e for e in events if e[2] != "note"]
        last = None
        for e in real:
            if e[2] == "pkt>" and last is not None and e[0] - last < SNAP:
                e[4] = "answer"
            elif e[4] is not None:  # a blocking call returns at the event that released it
                before = [x[0] for x in real if x is not e and x[2] != "pkt>" and x[0] <= e[4]]
                if before and e[4] - max(before) < SNAP:
                    e[4] = max(max(before), e[0])
            last = e[0]
        t0 = real[0][0]
        for e in events:
            e[0] = max(round((e[0] - t0) * 1e6), 0)
            if isinstance(e[4], float):
                e[4] = max(round((e[4] - t0) * 1e6), e[0])
        return events

    def _header(self) -> list[str]:
        r, ex = self.record, self.ex
        lines = [f"// synfin case {r['case']} on {r.get('target', 'linux')}: {r.get('verdict', '?')}"]
        if r.get("title"):
            lines.append(f"// {r['title'].splitlines()[0]}")
        if r.get("message"):
            lines.append(f"// verdict: {r['message'].splitlines()[0]}")
        peer_ip, target_ip = ex.get("peer_ip", "peer"), ex.get("target_ip", "target")
        lines.append(f"// replays the connection {peer_ip}:{self.ports[0]} (peer, packetdrill's remote) -> "
                     f"{target_ip}:{self.ports[1]} (target, the local kernel);")
        lines.append("// packetdrill chooses its own addresses and ports. Run it in a network namespace of its own:")
        lines.append("//   packetdrill --local_ip=198.18.200.2 --remote_ip=198.18.200.1 "
                     f"--gateway_ip=198.18.200.254 --netmask_ip=255.255.255.0 {slug(r['case'])}.pkt")
        lines.append("// numbers are relative: the peer's first segment has seq 0, the target's SYN seq 0;"
                     " payloads are zero bytes")
        for name, value in sorted((r.get("settings") or {}).items()):
            if "set by the case" not in value:
                lines.append(f"// {name} = {value} (as the case saw it)")
        lines += [f"// {n}" for n in self.notes]
        return lines

    def _init_command(self) -> list[str]:
        """Sysctls the case set: the init command sets them first (the record has no time for them)."""
        sets = []
        for name, value in sorted((self.record.get("settings") or {}).items()):
            m = re.fullmatch(r"(.*?) \(set by the case; was .*\)", value)
            if m and re.fullmatch(r"[A-Za-z0-9_.]+", name) and re.fullmatch(r"[A-Za-z0-9_. -]*", m.group(1)):
                sets.append(f'{name}="{m.group(1)}"')
        if not sets:
            return []
        return ["// set by the case (before or during the exchange):", f"`sysctl -q -w {' '.join(sets)}`"]

    def text(self) -> str:
        """Times are relative (+seconds after the previous event): packetdrill then schedules each
        event from when the one before it really happened, so a kernel that answers a little later
        than in the case does not shift everything after it."""
        lines = self._header() + [""] + self._init_command()
        prev = None
        for t, _, kind, text, end in self._timeline():
            if kind == "note":
                lines.append(f"// {text}")
                continue
            when = "0" if prev is None else f"+{_secs(t - prev)}"
            if end == "answer":  # any time from the event it answers to SNAP later
                when = f"+0~+{_secs(round(SNAP * 1e6))}"
            elif end is not None:  # a blocking call and when it returns, from the same origin
                when += f"...{_secs(end - (prev if prev is not None else 0))}"
            lines.append(f"{when} {text}")
            prev = t
        return "\n".join(lines) + "\n"  # packetdrill's // comments need their newline
