"""The packetdrill export (harness/packetdrill.py): scripts checked against packetdrill's grammar.

No packetdrill is needed: `check()` below is a small recursive-descent parser of the part of
packetdrill's grammar the exporter writes, with the tokens of its lexer (gtests/net/packetdrill
lexer.l: longest match, the earlier rule on a tie) and the semantic checks of parser.y and
tcp_packet.c for those constructs. It is deliberately strict: a construct outside that part is an
error too.
"""
import re

import pytest

from harness import packetdrill

# -- the checker ---------------------------------------------------------------------------------
# lexer.l's keywords: a word equal to one of them is that token, never a WORD.
KEYWORDS = frozenset("""
    sa_family sin_port sin_addr msg_name msg_iov msg_flags msg_control cmsg_data cmsg_level cmsg_type
    ee_errno ee_origin ee_type ee_code ee_info ee_data scm_sec scm_nsec fd u32 u64 ptr events revents
    onoff linger htons ipv4 ipv6 icmp udp GREv0 gre raw sum off key seq none checksum sequence#
    present encap psp spi mpls label tc ttl inet_addr inet6_addr ack eol ecr mss mtu nop sack sackOK
    md5 TS FO FOEXP ECN e0b e1b ceb tos flowlabel flags Flags val win urg wscale ect01 ect0 ect1
    noecn ce id
""".split())

# lexer.l's rules in its order (keywords are found among WORDs).
RULES = [
    ("ELLIPSIS", r"\.\.\."),
    ("OPTION", r"--[a-zA-Z0-9_]+"),
    ("FLOAT", r"-?[0-9]*\.[0-9]+"),
    ("INTEGER", r"-?[0-9]+"),
    ("HEX", r"0x[0-9a-fA-F]+"),
    ("WORD", r"[a-zA-Z0-9_]+"),
    ("STRING", r'"(\\.|[^"])*"'),
    ("BACKQUOTED", r"`(\\.|[^`])*`"),
    ("CHAR", r"[^ \t\n]"),
    ("SPACE", r"[ \t\n]+"),
    ("COMMENT", r"//[^\n]*\n"),
    ("CCOMMENT", r"/\*(([^*])|(\*[^/]))*\*/"),
    ("CODE", r"%\{(([^}])|(\}[^%]))*\}%"),
    ("IPV4_ADDR", r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+"),
]
_COMPILED = [(kind, re.compile(rx)) for kind, rx in RULES]
TCP_FLAGS = set(".FSRPEWAU01234567")  # tcp_packet.c valid_tcp_flags
U32, U16, U8 = (1 << 32) - 1, (1 << 16) - 1, (1 << 8) - 1


class PktError(Exception):
    pass


def tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos, line = [], 0, 1
    while pos < len(text):
        best = None
        for kind, rx in _COMPILED:
            m = rx.match(text, pos)
            if m and m.end() > pos and (best is None or m.end() > best[1].end()):
                best = (kind, m)
        if best is None:
            raise PktError(f"line {line}: cannot lex {text[pos:pos + 10]!r}")
        kind, m = best
        value = m.group(0)
        if kind == "WORD" and value in KEYWORDS:
            kind = "KW"
        if kind == "CHAR":
            kind = value
        if kind not in ("SPACE", "COMMENT", "CCOMMENT"):
            out.append((kind, value, line))
        line += value.count("\n")
        pos = m.end()
    return out


class Checker:
    """Recursive descent over the token stream, as packetdrill's parser sees a script."""

    def __init__(self, text: str):
        self.toks = tokens(text)
        self.i = 0
        self.last_abs = -1.0
        self.events = 0

    # -- token helpers
    def peek(self, k: int = 0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else ("EOF", "", self.toks[-1][2] if self.toks else 0)

    def at(self, kind: str, value: str | None = None, k: int = 0) -> bool:
        t = self.peek(k)
        return t[0] == kind and (value is None or t[1] == value)

    def take(self, kind: str, value: str | None = None) -> str:
        t = self.peek()
        if not self.at(kind, value):
            self.fail(f"expected {value or kind}, got {t[1] or t[0]!r}")
        self.i += 1
        return t[1]

    def fail(self, msg: str):
        raise PktError(f"line {self.peek()[2]}: {msg}")

    def integer(self, limit: int | None = None, what: str = "value") -> int:
        n = int(self.take("INTEGER"))
        if limit is not None and not 0 <= n <= limit:
            self.fail(f"{what} {n} out of range")
        return n

    # -- grammar
    def script(self) -> int:
        while self.at("OPTION"):
            self.take("OPTION")
            if self.at("="):
                self.take("=")
                self.take(self.peek()[0])
        if self.at("BACKQUOTED"):
            self.take("BACKQUOTED")  # init command
        while not self.at("EOF"):
            self.event()
        if not self.events:
            self.fail("a script needs at least one event")
        return self.events

    def time(self) -> float:
        kind = self.peek()[0]
        if kind not in ("FLOAT", "INTEGER"):
            self.fail(f"expected a time, got {self.peek()[1]!r}")
        value = float(self.take(kind))
        if value < 0:
            self.fail("negative time")
        return value

    def event(self) -> None:
        ranged = False
        if self.at("+"):
            self.take("+")
            self.time()
            if self.at("~"):
                self.take("~"), self.take("+"), self.time()
                ranged = True
        elif self.at("*"):
            self.take("*")
            ranged = True
        else:
            start = self.time()
            if self.at("~"):
                self.take("~")
                if self.time() < start:
                    self.fail("time range is backwards")
                ranged = True
            if start < self.last_abs:
                self.fail(f"time goes backward from {self.last_abs} to {start}")
            self.last_abs = start
        if self.at("<") or self.at(">"):
            outbound = self.take(self.peek()[0]) == ">"
            if ranged and not outbound:
                self.fail("event time range can only be used with outbound packets")
            self.packet(outbound)
        elif self.at("BACKQUOTED"):
            self.take("BACKQUOTED")
        else:
            if ranged:
                self.fail("event time range can only be used with outbound packets")
            self.syscall()
        self.events += 1

    def packet(self, outbound: bool) -> None:
        if self.at("WORD"):
            flags = self.take("WORD")
            if self.at("."):
                flags += self.take(".")
        elif self.at("."):
            flags = self.take(".")
        elif self.at("-"):
            flags = self.take("-") and ""
        else:
            self.fail(f"expected TCP flags, got {self.peek()[1]!r}")
        bad = set(flags) - TCP_FLAGS
        if bad:
            self.fail(f"invalid TCP flag {sorted(bad)[0]!r}")
        start = self.integer(U32, "TCP start sequence number")
        self.take(":")
        end = self.integer(U32, "TCP end sequence number")
        self.take("(")
        length = self.integer(U16, "TCP payload size")
        self.take(")")
        if end != start + length:
            self.fail("inconsistent TCP sequence numbers and payload size")
        if self.at("KW", "ack"):
            self.take("KW"), self.integer(U32, "TCP ack sequence number")
        if self.at("KW", "win"):
            self.take("KW"), self.integer(U16, "TCP window value")
        elif not outbound:
            self.fail("window must be specified for inbound packets")
        if self.at("KW", "urg"):
            self.take("KW"), self.integer(U16, "urg_ptr value")
        if self.at("<"):
            self.take("<")
            if self.at("ELLIPSIS"):
                self.take("ELLIPSIS")
                if not outbound:
                    self.fail("<...> for TCP options can only be used with outbound packets")
            else:
                size = self.tcp_option()
                while self.at(","):
                    self.take(",")
                    size += self.tcp_option()
                if size > 40 or size % 4:
                    self.fail(f"TCP options take {size} bytes: not a multiple of 4 up to 40")
            self.take(">")

    def tcp_option(self) -> int:
        """One option; its size on the wire."""
        name = self.take("KW")
        if name in ("nop", "eol"):
            return 1
        if name == "mss":
            self.integer(U16, "mss value")
            return 4
        if name == "wscale":
            self.integer(U8, "window scale shift count")
            return 3
        if name == "sackOK":
            return 2
        if name == "TS":
            self.take("KW", "val"), self.integer(U32, "ts val"), self.take("KW", "ecr"), self.integer(U32, "ecr val")
            return 10
        if name == "sack":
            blocks = 0
            while self.at("INTEGER"):
                self.integer(U32), self.take(":"), self.integer(U32)
                blocks += 1
            if not blocks:
                self.fail("sack needs blocks")
            return 2 + 8 * blocks
        self.fail(f"TCP option {name!r} is outside the exported subset")

    def syscall(self) -> None:
        if self.at("ELLIPSIS"):
            self.take("ELLIPSIS"), self.time()
        self.take("WORD")
        self.take("(")
        if not self.at(")"):
            self.expr_list()
        self.take(")")
        self.take("=")
        self.expr()
        if self.at("WORD"):
            self.take("WORD")
            if not self.at("("):
                self.fail("an errno needs its note: (text)")
            self.note()
        if self.at("("):
            self.note()

    def note(self) -> None:
        self.take("(")
        words = 0
        while not self.at(")"):
            if not (self.at("WORD") or self.at("KW", "flags") or self.at("KW", "Flags")):
                self.fail(f"a note is one or more plain words, not {self.peek()[1]!r}")
            self.take(self.peek()[0])
            words += 1
        if not words:
            self.fail("a note is one or more plain words")
        self.take(")")

    def expr_list(self) -> None:
        self.expr()
        while self.at(","):
            self.take(",")
            self.expr()

    def expr(self) -> None:
        kind = self.peek()[0]
        if kind in ("ELLIPSIS", "INTEGER", "HEX"):
            self.take(kind)
        elif kind == "WORD":
            self.take("WORD")
            if self.at("="):
                self.take("=")
                self.expr()
        elif kind == "STRING":
            while self.at("STRING"):
                self.take("STRING")
        elif kind == "[":
            self.take("[")
            if not self.at("]"):
                self.expr_list()
            self.take("]")
        elif kind == "{":
            self.take("{")
            if self.at("KW", "onoff"):
                self.take("KW"), self.take("="), self.integer(), self.take(",")
                self.take("KW", "linger"), self.take("="), self.integer()
            else:
                self.expr_list()
            self.take("}")
        else:
            self.fail(f"expected an expression, got {self.peek()[1]!r}")
        if self.at("|"):
            self.take("|")
            self.expr()


def check(text: str) -> int:
    """Raise PktError if `text` is not a script of the exported subset; its number of events."""
    if not text.endswith("\n"):
        raise PktError("a script must end with a newline (a // comment needs its own)")
    return Checker(text).script()


# -- synthetic records ---------------------------------------------------------------------------
PEER_ISN, TARGET_ISN = 1_000_000, 4_294_000_000  # the target's wraps past 2^32 within the case


class Case:
    """Builds an exchange record the way harness/exchange.py does: absolute and relative numbers."""

    def __init__(self, name: str, peer_port: int = 50001, target_port: int = 40001, target: str = "linux"):
        self.record = {
            "case": f"cases/synthetic/test_x.py::{name}", "target": target, "verdict": "PASS",
            "title": f"{name} (synthetic)", "message": "", "settings": {},
            "exchange": {"segments": [], "calls": [], "failure": None, "peer_ip": "198.18.0.1",
                         "target_ip": "198.18.0.2",
                         "isns": {str(peer_port): {"peer": PEER_ISN, "target": TARGET_ISN}}},
        }
        self.ports = (peer_port, target_port)
        self.t = 0.0

    def _tick(self, dt: float) -> float:
        self.t = round(self.t + dt, 6)
        return self.t

    def seg(self, frm: str, flags: str, seq: int, ack: int | None = None, length: int = 0, win: int = 65535,
            options=(), dt: float = 0.001, ports=None, target_isn: int | None = TARGET_ISN) -> "Case":
        own, other = (PEER_ISN, target_isn) if frm == "peer" else (target_isn, PEER_ISN)
        peer_port, target_port = ports or self.ports
        self.record["exchange"]["segments"].append({
            "t": self._tick(dt), "from": frm, "peer_port": peer_port, "target_port": target_port,
            "flags": flags, "seq": seq, "ack": ack, "abs_seq": (seq + (own or 0)) % (1 << 32),
            "abs_ack": 0 if ack is None else (ack + (other or 0)) % (1 << 32), "len": length, "win": win,
            "options": [list(o) for o in options], "ttl": 64,
        })
        return self

    def call(self, op: str, result: str, dt: float = 0.0005, took: float = 0.0004, **args) -> "Case":
        t_call = self._tick(dt)
        self.record["exchange"]["calls"].append(
            {"op": op, "args": args, "result": result, "t_call": t_call, "t": self._tick(took)})
        return self


def passive_open(case: Case, sock: int = 1) -> Case:
    case.call("listen", f"sock {sock}", port=case.ports[1], backlog=16)
    case.seg("peer", "SYN", 0, options=[("mss", 1460)])
    case.seg("target", "SYN,ACK", 0, 1, win=64240, options=[("mss", 1460)], dt=0.0002)
    case.seg("peer", "ACK", 1, 1)
    return case.call("accept", f"sock {sock + 1}", sock=sock)


def lines_of(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith("//")]


def export(case: Case) -> str:
    text = packetdrill.script(case.record)
    check(text)
    return text


# -- the exporter on synthetic records -------------------------------------------------------------
def test_passive_open_and_data_export_as_packetdrill_lines():
    case = passive_open(Case("passive"))
    case.seg("peer", "PSH,ACK", 1, 1, length=5)
    case.seg("target", "ACK", 1, 6, win=64235, dt=0.0002)
    case.call("recv", "5 bytes", sock=2, max=65536)
    case.call("send", "sent 5", sock=2, len=5)
    case.seg("target", "PSH,ACK", 1, 6, length=5, win=64235, dt=0.0003)
    lines = lines_of(export(case))
    body = [re.sub(r"^[+0-9.~]+ ", "", ln) for ln in lines]
    assert body == [
        "socket(..., SOCK_STREAM, IPPROTO_TCP) = 3",
        "setsockopt(3, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0",
        "bind(3, ..., ...) = 0",
        "listen(3, 16) = 0",
        "< S 0:0(0) win 65535 <mss 1460>",
        "> S. 0:0(0) ack 1 win 64240 <mss 1460>",
        "< . 1:1(0) ack 1 win 65535",
        "accept(3, ..., ...) = 4",
        "< P. 1:6(5) ack 1 win 65535",
        "> . 1:1(0) ack 6 win 64235",
        "read(4, ..., 65536) = 5",
        "write(4, ..., 5) = 5",
        "> P. 1:6(5) ack 6 win 64235",
    ]
    assert lines[0].startswith("0 ") and lines[1].startswith("+0 ")
    assert lines[4].startswith("+0.0014 < S")  # times are relative to the event before
    # The target's immediate answer is expected within 10 ms of the event it answers.
    assert lines[5].startswith("+0~+0.01 > S.")


def test_active_open_is_a_nonblocking_connect_with_linux_option_layout():
    case = Case("active")
    case.call("start connect", "started", port=50001)
    case.seg("target", "SYN", 0, win=64240, dt=0.002,
             options=[("mss", 1460), ("sackOK",), ("TS", 7000, 0), ("wscale", 7)])
    case.seg("peer", "SYN,ACK", 0, 1, options=[("mss", 1460), ("TS", 90, 7000)])
    case.seg("target", "ACK", 1, 1, win=502, options=[("TS", 7001, 90)], dt=0.0001)
    case.call("connect", "sock 7", port=50001)
    case.call("state", "ESTABLISHED", sock=7)
    case.call("send", "sent 3", sock=7, len=3)
    case.seg("target", "PSH,ACK", 1, 1, length=3, win=502, options=[("TS", 7002, 90)], dt=0.0001)
    text = export(case)
    body = lines_of(text)
    assert "socket(..., SOCK_STREAM, IPPROTO_TCP) = 3" in body[0]
    assert "fcntl(3, F_SETFL, O_RDWR|O_NONBLOCK) = 0" in body[1]
    assert body[2].endswith("connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)")
    assert body[3].endswith("> S 0:0(0) win 64240 <mss 1460,sackOK,TS val 7000 ecr 0,nop,wscale 7>")
    assert body[4].endswith("< S. 0:0(0) ack 1 win 65535 <mss 1460,nop,nop,TS val 90 ecr 7000>")
    assert body[5].endswith("> . 1:1(0) ack 1 win 502 <nop,nop,TS val 7001 ecr 90>")
    assert body[6].endswith("getsockopt(3, SOL_SOCKET, SO_ERROR, [0], [4]) = 0")
    assert body[7].endswith("fcntl(3, F_SETFL, O_RDWR) = 0")
    assert body[8].endswith("write(3, ..., 3) = 3")
    assert "// state(sock=7) = ESTABLISHED: not checked here" in text


def test_fin_both_ways_shutdown_and_end_of_stream():
    case = passive_open(Case("fins"))
    case.call("shutdown", "ok", sock=2, how="wr")
    case.seg("target", "FIN,ACK", 1, 1, win=64240, dt=0.0003)
    case.seg("peer", "ACK", 1, 2)
    case.seg("peer", "FIN,ACK", 1, 2)
    case.seg("target", "ACK", 2, 2, win=64239, dt=0.004)  # Linux may hold the ACK of a FIN a few ms
    case.call("recv", "0 bytes", sock=2, max=65536)
    case.call("close", "ok", sock=2)
    case.call("close", "ok", sock=1)
    body = lines_of(export(case))
    assert any(ln.endswith("shutdown(4, SHUT_WR) = 0") for ln in body)
    assert any(ln.endswith("> F. 1:1(0) ack 1 win 64240") for ln in body)
    assert any(ln.endswith("< F. 1:1(0) ack 2 win 65535") for ln in body)
    ack = next(ln for ln in body if ln.endswith("> . 2:2(0) ack 2 win 64239"))
    assert "~" in ack  # expected between the FIN and when synfin saw the ACK
    assert [ln.split(" ", 1)[1] for ln in body[-3:]] == ["read(4, ..., 65536) = 0", "close(4) = 0", "close(3) = 0"]


def test_rst_errno_linger_and_sequence_numbers_past_2_32():
    case = passive_open(Case("rst"))
    case.seg("peer", "PSH,ACK", 1, 1, length=100)
    case.seg("target", "ACK", 1, 101, win=64140, dt=0.0002)
    case.seg("peer", "RST", 101)
    case.call("recv", "ECONNRESET", sock=2, max=65536)
    case.call("setsockopt", "ok", sock=2, opt="SO_LINGER", value=[1, 0])
    case.call("close", "ok", sock=2)
    body = lines_of(export(case))
    assert any(ln.endswith("< R 101:101(0) win 65535") for ln in body)
    assert any(ln.endswith("read(4, ..., 65536) = -1 ECONNRESET (Connection reset by peer)") for ln in body)
    assert any(ln.endswith("setsockopt(4, SOL_SOCKET, SO_LINGER, {onoff=1, linger=0}, 8) = 0") for ln in body)
    # TARGET_ISN + 101 wraps past 2^32: relative numbers still come out right.
    assert any(ln.endswith("> . 1:1(0) ack 101 win 64140") for ln in body)


def test_failure_record_marks_the_segment_that_broke_and_the_one_that_never_came():
    case = passive_open(Case("failure"))
    case.call("close", "ok", sock=2)
    case.seg("target", "FIN,ACK", 1, 1, win=64240, dt=0.0003)
    case.record["verdict"] = "FAIL"
    case.record["exchange"]["failure"] = {"peer_port": 50001, "expected": ["RST seq=1 (RST at SND.NXT)"],
                                          "t": case.t + 0.5, "broke": 3}
    case.record["exchange"]["segments"][3]["broke"] = True
    text = export(case)
    lines = text.splitlines()
    fin = next(i for i, ln in enumerate(lines) if "> F. 1:1(0)" in ln)
    assert lines[fin - 1] == "// synfin expected RST seq=1 (RST at SND.NXT); the target sent instead:"
    assert ": FAIL" in text.splitlines()[0]
    case.record["exchange"]["failure"]["broke"] = None
    assert "// synfin expected here, not received: RST seq=1 (RST at SND.NXT)" in export(case)


def test_closed_port_segments_export_without_a_socket():
    case = Case("closed")
    case.seg("peer", "RST,ACK", 0, 0x5EED, target_isn=None)
    case.seg("peer", "SYN", 100000, options=[("mss", 1460)], target_isn=None)
    case.seg("target", "RST,ACK", 0, 100001, win=0, dt=0.0001, target_isn=None)
    body = lines_of(export(case))
    assert [ln.split(" ", 1)[1] for ln in body] == [
        f"< R. 0:0(0) ack {0x5EED} win 65535", "< S 100000:100000(0) win 65535 <mss 1460>",
        "> R. 0:0(0) ack 100001 win 0"]


def test_other_connections_and_their_calls_are_left_out_with_a_comment():
    case = passive_open(Case("two"))
    case.call("listen", "sock 3", port=40002, backlog=16)
    case.seg("peer", "SYN", 0, options=[("mss", 1460)], ports=(50002, 40002))
    case.call("accept", "sock 4", sock=3)
    case.call("recv", "ECONNRESET", sock=4, max=65536)
    text = export(case)
    assert "// left out: connection peer port 50002 -> target port 40002 (1 segments)" in text
    assert "// left out: listen(port=40002, backlog=16) of another connection" in text
    assert "// left out: recv(sock=4, max=65536) = ECONNRESET (a socket of another connection)" in text
    assert "40002" not in "\n".join(lines_of(text))


def test_new_incarnation_and_agent_timeouts_are_left_out():
    case = passive_open(Case("reopen"))
    case.call("recv", "timeout", took=1.0, sock=2, max=10)
    case.seg("peer", "SYN", 70000, options=[("mss", 1460)])
    case.seg("target", "SYN,ACK", 5000, 70001, win=64240, options=[("mss", 1460)])
    text = export(case)
    assert "left out: recv(sock=2, max=10) = timeout" in text
    assert "the target's SYN with a new ISN" in text
    body = lines_of(text)
    assert body[-1].endswith("< S 70000:70000(0) win 65535 <mss 1460>")


def test_calls_that_waited_become_blocking_calls_and_sysctls_the_init_command():
    case = passive_open(Case("blocking"))
    case.record["settings"] = {"net.ipv4.tcp_rfc1337": "1 (set by the case; was 0)",
                               "net.ipv4.tcp_timestamps": "1"}
    case.call("start recv", "started", sock=2, max=100)
    case.seg("peer", "PSH,ACK", 1, 1, length=10, dt=0.2)
    case.seg("target", "ACK", 1, 11, win=64230, dt=0.0001)
    case.call("recv", "10 bytes", dt=0.001, sock=2, max=100)
    text = export(case)
    assert '`sysctl -q -w net.ipv4.tcp_rfc1337="1"`' in text.splitlines()
    assert "// net.ipv4.tcp_timestamps = 1 (as the case saw it)" in text
    body = lines_of(text)
    read = next(i for i, ln in enumerate(body) if "read(" in ln)
    start, end = re.match(r"\+([0-9.]+)\.\.\.([0-9.]+) read\(4, \.\.\., 100\) = 10$", body[read]).groups()
    assert body[read + 1].endswith("< P. 1:11(10) ack 1 win 65535")
    data_after = float(body[read + 1].split()[0])
    # It returned when the data came: its end, from the same origin as its start, is the data's time.
    assert float(end) == pytest.approx(float(start) + data_after) and data_after > 0.1


def test_not_exportable_records():
    with pytest.raises(packetdrill.NotExportable, match="target lwip"):
        packetdrill.script(passive_open(Case("lwip", target="lwip")).record)
    with pytest.raises(packetdrill.NotExportable, match="no segments"):
        packetdrill.script(Case("empty").call("listen", "sock 1", port=40001).record)
    orphan = Case("orphan").seg("target", "ACK", 1, 1)
    with pytest.raises(packetdrill.NotExportable, match="first segment"):
        packetdrill.script(orphan.record)


def test_write_names_the_file_after_the_case(tmp_path):
    case = passive_open(Case("test_y[rst_ack]"))
    path = packetdrill.write(case.record, tmp_path / "out")
    assert path == str(tmp_path / "out" / "cases_synthetic_test_x.py__test_y_rst_ack_.pkt")
    check(open(path).read())


def test_constructs_are_listed():
    listed = packetdrill.exported_constructs()
    assert listed["exported"] and listed["not_exportable"]
    assert all(isinstance(x, str) for x in listed["exported"] + listed["not_exportable"])


# -- the checker itself ------------------------------------------------------------------------
GOOD = """\
--tolerance_usecs=10000
`sysctl -q -w net.ipv4.tcp_rfc1337="1"`
0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0 fcntl(3, F_SETFL, O_RDWR|O_NONBLOCK) = 0
0.1 connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)
0.1~0.2 > S 0:0(0) <mss 1460,sackOK,TS val 100 ecr 0,nop,wscale 8>
0.2 < S. 0:0(0) ack 1 win 5792 <mss 1460,nop,wscale 2,nop,nop,sackOK>
0.2 > . 1:1(0) ack 1
0.2...0.3 read(3, ..., 2000) = 2000
0.3 < P. 1:2001(2000) ack 1 win 257
+0 > . 1:1(0) ack 2001 <...>
0.4 setsockopt(3, SOL_SOCKET, SO_LINGER, {onoff=1, linger=0}, 8) = 0
0.4 getsockopt(3, SOL_SOCKET, SO_ERROR, [ECONNREFUSED], [4]) = 0
0.5 < R. 2001:2001(0) ack 1 win 0 <nop,nop,sack 1:2 3:4>
0.5 > - 1:1(0) win 0
// a comment
"""


def test_checker_accepts_packetdrill_syntax():
    assert check(GOOD) == 13


@pytest.mark.parametrize("line, why", [
    ("0 > S 0:1(0) win 100", "inconsistent TCP sequence numbers"),
    ("0 < S 0:0(0)", "window must be specified"),
    ("0 > SYN 0:0(0) win 1", "invalid TCP flag"),
    ("0 < . 1:1(0) ack 1 win 65535 <...>", "only be used with outbound"),
    ("0~1 < . 1:1(0) ack 1 win 65535", "only be used with outbound"),
    ("0 read(4, ..., 10) = -1 ECONNRESET", "needs its note"),
    ("0 read(4, ..., 10) = -1 ECONNRESET (Connection reset by ack)", "plain words"),
    ("0 > . 1:1(0) ack 1 window 100", "expected"),
    ("0 > . 1:1(0) ack 1 win 70000", "out of range"),
    ("0 > S 0:0(0) win 1 <mss 1460,wscale 7>", "multiple of 4"),
    ("0 > S 0:0(0) win 1 <md5 00>", "outside the exported subset"),
    ("1 close(3) = 0\n0.5 close(4) = 0", "time goes backward"),  # packetdrill: when it runs the script
    ("-1 close(3) = 0", "negative time"),
    ("0 > S. 0:0(0) ack -1 win 1", "out of range"),
    ("0 close(3) = 0\n// no newline after me", "newline"),
])
def test_checker_rejects_what_packetdrill_rejects(line, why):
    text = line if "no newline" in line else line + "\n"
    with pytest.raises(PktError, match=why):
        check(text)


def test_an_off_grammar_export_is_caught(monkeypatch):
    """If the exporter wrote a flag packetdrill does not know, the checker says so."""
    monkeypatch.setitem(packetdrill._FLAGS, "PSH", "Psh")
    case = passive_open(Case("off")).seg("peer", "PSH,ACK", 1, 1, length=5)
    with pytest.raises(PktError, match="invalid TCP flag"):
        export(case)
