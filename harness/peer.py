"""The raw peer: one persistent L2 socket per lab, and connections kept in RFC 9293 terms.

The socket is opened inside the peer namespace before the first send and read with select(), so
replies that arrive between calls wait in the socket and nothing is lost. Segments from the
target are queued by the peer's port (each connection gets its own), so one case can drive
several connections at once.
"""
import collections
import random
import select
import socket
import struct
import time
from dataclasses import dataclass

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import checksum

from . import rawsock
from .errors import LabError, TargetError
from .timing import Timing  # noqa: F401 (the peer's waits; imported from here by cases)
from .segments import Alternatives, Seg, SeqView, alternatives, describe, seg_len, seq_add, seq_diff

MOD = 1 << 32
MTU = 65535


@dataclass
class Frame:
    t: float          # time.monotonic() when sent or read
    outgoing: bool
    data: bytes


class Mismatch(AssertionError):
    """The target did not send what the case expected (a stack deviation, not a harness error).

    For the evidence: the peer `port` of the connection, what was `expected`, the arrival time of
    the segment that broke the expectation (`got_t`, None when nothing came) and when it failed."""

    def __init__(self, message: str, port: int | None = None, expected: list[str] | None = None,
                 got_t: float | None = None):
        super().__init__(message)
        self.port = port
        self.expected = expected or []
        self.got_t = got_t
        self.at = time.monotonic()


class Framer:
    """Ether/IPv4/TCP bytes from the peer to the target of one lab."""

    def __init__(self, addr):
        self._eth = bytes(Ether(src=addr.peer_mac, dst=addr.target_mac, type=0x0800))
        self._ip_addrs = bytes(IP(src=addr.peer_ip, dst=addr.target_ip))[12:20]
        self._ip_id = 0

    def frame(self, tcp: TCP, src: str | None = None, dst: str | None = None) -> bytes:
        """Ether/IPv4/TCP on the wire. scapy builds the segment; the outer headers are the same
        for every segment of a lab, so they are packed here (a full scapy build of all three
        layers costs about 0.6 ms, a third of a case's own time). A checksum the case set
        (deliberately wrong, say) is kept. `src`/`dst` put other IP addresses in this one frame
        (a forged source, a broadcast destination); the frame still goes to the target's MAC."""
        addrs = self._ip_addrs
        if src is not None or dst is not None:
            addrs = socket.inet_aton(src) if src else addrs[:4]
            addrs += socket.inet_aton(dst) if dst else self._ip_addrs[4:]
        given = tcp.chksum
        tcp.chksum = 0 if given is None else given
        segment = bytearray(bytes(tcp))
        tcp.chksum = given
        if given is None:
            pseudo = addrs + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(segment))
            segment[16:18] = struct.pack("!H", checksum(pseudo + bytes(segment)))
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        ip = bytearray(struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(segment), self._ip_id, 0x4000, 64,
                                   socket.IPPROTO_TCP, 0) + addrs)
        ip[10:12] = struct.pack("!H", checksum(bytes(ip)))
        return self._eth + bytes(ip) + bytes(segment)


class Wire:
    """The peer's side of a lab link."""

    def __init__(self, lab, link=None):
        """`link`: a socket carrying one Ethernet frame per message (a user-mode kernel's); by
        default a packet socket on the lab's veth, filtered to the target's frames."""
        self.addr = lab.addr
        target = lab.addr.target_ip
        try:
            self.sock = link if link is not None else rawsock.open_in(
                lab.peer_netns_path(), lab.peer_if, f"(tcp or arp) and src host {target}")
        except Exception as exc:
            raise LabError(f"could not open the peer socket on {lab.peer_if}: {exc}") from exc
        self.frame = Framer(self.addr).frame
        self.trace: list[Frame] = []
        self._queues: dict[int, collections.deque] = collections.defaultdict(collections.deque)
        # A target's own link carries every frame it sends, with no packet filter: the wire keeps
        # the peer's queues to what the veth's filter passes (the target's address), and hands
        # a case's watch what the target's MAC sent otherwise.
        self.own_link = link is not None
        self._target_ip = socket.inet_aton(target)
        self._peer_ip = socket.inet_aton(lab.addr.peer_ip)
        self._target_mac = bytes.fromhex(lab.addr.target_mac.replace(":", ""))
        self._watches: dict[int, "Watch"] = {}
        self.waited = 0.0   # seconds of silence and pauses the cases asked for
        self.blocked = 0.0  # seconds spent waiting for the target's segments (benchmark figures)

    def send(self, pkt) -> None:
        data = bytes(pkt)
        self.trace.append(Frame(time.monotonic(), True, data))
        self.sock.send(data)

    def _read_one(self, deadline: float) -> bool:
        """Read one frame from the socket (False if none came before `deadline`)."""
        start = time.monotonic()
        ready, _, _ = select.select([self.sock], [], [], max(0.0, deadline - start))
        self.blocked += time.monotonic() - start
        if not ready:
            return False
        data = self.sock.recv(MTU)
        if not data:
            # Only a link of a target's own is a connected socket: readable and empty, its other
            # end has closed (the user-mode kernel is gone), and it stays so; never waited on.
            raise TargetError("the target's link closed: its other end is gone (the target died?)")
        now = time.monotonic()
        ethertype = data[12:14]
        if ethertype == b"\x08\x06":
            pkt = Ether(data)
            if ARP in pkt:
                self._answer_arp(pkt[ARP])
            return True
        # IPv4, TCP, first fragment: queued by destination port as read off the bytes; scapy
        # dissects a frame only when a case takes it (most late frames are never looked at).
        if ethertype != b"\x08\x00" or len(data) < 34 or data[23] != socket.IPPROTO_TCP or \
                int.from_bytes(data[20:22], "big") & 0x1FFF:
            return True
        tcp_at = 14 + (data[14] & 0x0F) * 4
        if len(data) < tcp_at + 20:
            return True
        port = int.from_bytes(data[tcp_at + 2:tcp_at + 4], "big")
        if self.own_link and not self._the_peers(data, port, now):
            return True
        self.trace.append(Frame(now, False, data))
        self._queues[port].append((now, data))
        return True

    def _the_peers(self, data: bytes, port: int, now: float) -> bool:
        """On a target's own link: whether a frame is the peer's (from the target's address, what
        the veth's filter passes). A watch on its port gets what the target's MAC sent elsewhere."""
        src, dst = data[26:30], data[30:34]
        mine = src == self._target_ip
        watch = self._watches.get(port)
        if watch is not None and data[6:12] == self._target_mac and (not mine or dst != self._peer_ip):
            watch.frames.append(data)
            if not mine:  # the peer's own frames go into the trace with the rest
                self.trace.append(Frame(now, False, data))
        return mine

    def watch(self, port: int) -> "Watch":
        """On a target's own link: what the target's MAC sends to the peer's `port` that is not
        from the target's address to the peer's, until the watch is closed (a context manager)."""
        watch = self._watches[port] = Watch(self, port)
        return watch

    def _answer_arp(self, arp: ARP) -> None:
        # Stacks that keep their own neighbour table (user-space stacks) still ask for the peer.
        if arp.op == 1 and arp.pdst == self.addr.peer_ip:
            reply = Ether(src=self.addr.peer_mac, dst=arp.hwsrc) / ARP(
                op=2, hwsrc=self.addr.peer_mac, psrc=self.addr.peer_ip, hwdst=arp.hwsrc, pdst=arp.psrc)
            self.send(reply)

    def next_for(self, port: int, deadline: float) -> Ether | None:
        """The next segment from the target to the peer's `port`, or None at the deadline."""
        queue = self._queues[port]
        while not queue:
            if not self._read_one(deadline):
                return None
        t, data = queue.popleft()
        pkt = Ether(data)
        pkt[TCP].synfin_t = t  # ties a checked segment to its frame in the trace
        return pkt

    def drain(self) -> None:
        """Read whatever is already waiting, without blocking."""
        while self._read_one(time.monotonic()):
            pass

    def reset_queues(self) -> None:
        self.drain()
        self._queues.clear()

    def close(self) -> None:
        self.sock.close()


class Watch:
    """The frames one `Wire.watch` caught; each is in the wire's trace already."""

    def __init__(self, wire: Wire, port: int):
        self.wire, self.port = wire, port
        self.frames: list[bytes] = []
        self._taken = 0

    def caught(self) -> list[Ether]:
        """What came since the last call (read without waiting)."""
        self.wire.drain()
        new, self._taken = self.frames[self._taken:], len(self.frames)
        return [Ether(data) for data in new]

    def close(self) -> None:
        if self.wire._watches.get(self.port) is self:
            del self.wire._watches[self.port]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class Peer:
    """The scapy side of a lab: hands out connections on fresh ports."""

    def __init__(self, wire: Wire, timing: Timing, ports):
        self.wire = wire
        self.timing = timing
        self._ports = ports
        self.connections: list["Connection"] = []
        # Told of every check a connection makes (the case's step log keeps them as evidence).
        self.on_check = None

    @property
    def addr(self):
        return self.wire.addr

    def connection(self, dport: int, sport: int | None = None, **kw) -> "Connection":
        conn = Connection(self, sport or self._ports.next(), dport, **kw)
        self.connections.append(conn)
        return conn

    def connect(self, dport: int, **kw) -> "Connection":
        """Active open from the peer: SYN, check SYN-ACK (ack = ISS+1), final ACK."""
        conn = self.connection(dport, **kw)
        conn.handshake()
        return conn

    def listen_port(self) -> int:
        """A fresh port for the target to connect to (the peer's side of an active open)."""
        return self._ports.next()

    def expect_syn(self, port: int, within: float | None = None, **kw) -> "Connection":
        """Wait for the target's SYN to `port`; return a connection that knows the target's ISN."""
        conn = Connection(self, port, None, **kw)
        self.connections.append(conn)
        syn = conn.expect(Seg("S"), within=within)
        conn.dport = syn.sport
        return conn

    def wait(self, seconds: float) -> None:
        """A pause the case asks for (counted as a wait, not as harness overhead)."""
        self.wire.waited += seconds
        time.sleep(seconds)

    def views(self) -> dict[int, list[SeqView]]:
        """The ISNs of the case's connections by peer port (a port reused for a new incarnation,
        as after TIME-WAIT, has one view per connection, oldest first)."""
        out: dict[int, list[SeqView]] = {}
        for c in self.connections:
            out.setdefault(c.sport, []).append(c.view)
        return out


class Connection:
    """One TCP connection seen from the peer: ISS/IRS, SND.NXT/RCV.NXT and the target's window.

    Sending methods advance SND.NXT by SEG.LEN; every segment read from the target that is in
    order advances RCV.NXT, so `conn.rcv_nxt` is always the next byte the target will send.
    """

    def __init__(self, peer: Peer, sport: int, dport: int | None, iss: int | None = None,
                 window: int = 65535, mss: int = 1460, timestamps: bool = False):
        self.peer = peer
        self.sport = sport
        self.dport = dport
        self.iss = random.getrandbits(32) if iss is None else iss % MOD
        self.snd_una = self.snd_nxt = self.iss
        self.irs: int | None = None
        self.rcv_nxt: int | None = None
        self.snd_wnd: int | None = None  # the target's last advertised window
        self.window = window
        self.mss = mss
        self.timestamps = timestamps  # offered; after the target's SYN: negotiated (RFC 7323 §3.2)
        self.ts_recent: int | None = None  # the target's last TSval
        self.ack_sent: int | None = None   # the ACK field of the peer's last segment with ACK
        self._ts_base = random.getrandbits(31)
        self.view = SeqView(self.iss)
        self.received: list[TCP] = []

    # -- building and sending ------------------------------------------------------------
    def tsval(self) -> int:
        return (self._ts_base + int(time.monotonic() * 1000)) % MOD

    def segment(self, flags: str = "A", seq: int | None = None, ack: int | None = None,
                data: bytes = b"", window: int | None = None, options=None) -> TCP:
        """A segment of this connection; fields default to SND.NXT / RCV.NXT / our window."""
        if options is None:
            options = [("MSS", self.mss)] if "S" in flags else []
            if self.timestamps and "R" not in flags:
                options = options + [("Timestamp", (self.tsval(), self.ts_recent or 0))]
        if ack is None and "A" in flags:
            ack = self.rcv_nxt or 0
        tcp = TCP(sport=self.sport, dport=self.dport, flags=flags,
                  seq=self.snd_nxt if seq is None else seq % MOD, ack=(ack or 0) % MOD,
                  window=self.window if window is None else window, options=options)
        return tcp / data if data else tcp

    def send_segment(self, tcp: TCP) -> TCP:
        """Send a segment exactly as built; SND.NXT moves only if it starts at SND.NXT."""
        if tcp.seq == self.snd_nxt:
            self.snd_nxt = seq_add(self.snd_nxt, seg_len(tcp))
        if "A" in str(tcp.flags) and "R" not in str(tcp.flags):
            self.ack_sent = tcp.ack
        self.peer.wire.send(self.peer.wire.frame(tcp))
        return tcp

    def send_raw(self, flags: str = "A", **fields) -> TCP:
        return self.send_segment(self.segment(flags, **fields))

    def syn(self, ack: bool = False, **fields) -> TCP:
        """SYN (or SYN-ACK answering the target's SYN) with seq = ISS."""
        return self.send_raw("SA" if ack else "S", seq=self.iss, **fields)

    def send(self, data: bytes, flags: str = "PA", **fields) -> TCP:
        return self.send_raw(flags, data=data, **fields)

    def fin(self, **fields) -> TCP:
        return self.send_raw("FA", **fields)

    def ack(self, **fields) -> TCP:
        return self.send_raw("A", **fields)

    def rst(self, seq: int | None = None, ack: bool = False, **fields) -> TCP:
        return self.send_raw("RA" if ack else "R", seq=self.snd_nxt if seq is None else seq, **fields)

    def handshake(self) -> TCP:
        """SYN → SYN-ACK(ack = ISS+1) → ACK; returns the SYN-ACK."""
        self.syn()
        synack = self.expect(Seg("SA", ack=seq_add(self.iss, 1), note="SYN-ACK for our SYN"))
        self.ack()
        return synack

    # -- receiving ------------------------------------------------------------------------
    def _absorb(self, tcp: TCP) -> None:
        flags = str(tcp.flags)
        if "S" in flags and self.irs is None:
            self.irs = tcp.seq
            self.rcv_nxt = tcp.seq
            self.view.irs = tcp.seq
            # RFC 7323 §3.2: timestamps are used only if both SYNs carry the option.
            if self.timestamps and "Timestamp" not in dict(tcp.options):
                self.timestamps = False
        if self.rcv_nxt is not None and tcp.seq == self.rcv_nxt and "R" not in flags:
            self.rcv_nxt = seq_add(self.rcv_nxt, seg_len(tcp))
        if "A" in flags and seq_diff(tcp.ack, self.snd_una) > 0 and seq_diff(tcp.ack, self.snd_nxt) <= 0:
            self.snd_una = tcp.ack
        self.snd_wnd = tcp.window
        for name, value in tcp.options:
            if name == "Timestamp":
                self.ts_recent = value[0]

    def next_segment(self, within: float | None = None) -> TCP | None:
        deadline = time.monotonic() + (self.peer.timing.reply if within is None else within)
        pkt = self.peer.wire.next_for(self.sport, deadline)
        if pkt is None:
            return None
        tcp = pkt[TCP]
        self.received.append(tcp)
        self._absorb(tcp)
        return tcp

    def outstanding(self) -> bool:
        """The target has sent sequence space the peer has not acknowledged (so a retransmission
        of it may come, carrying an ACK the case expects)."""
        return self.rcv_nxt is not None and self.ack_sent is not None and seq_diff(self.rcv_nxt, self.ack_sent) > 0

    def _checked(self, wanted: Alternatives, tcp: TCP | None, outstanding: bool) -> None:
        if self.peer.on_check is not None:
            self.peer.on_check(self, wanted, tcp, outstanding)

    def expect(self, *specs, within: float | None = None) -> TCP:
        """Wait for a segment matching one of `specs`; others are skipped (and reported on failure)."""
        __tracebackhide__ = True  # a failure points at the case's line, not at the harness
        wanted = alternatives(*specs)
        within = self.peer.timing.reply if within is None else within
        deadline = time.monotonic() + within
        outstanding = self.outstanding()
        seen = []
        while True:
            tcp = self.next_segment(max(0.0, deadline - time.monotonic()))
            if tcp is None:
                self._checked(wanted, None, outstanding)
                raise self._failed(wanted, seen, within)
            if wanted.match(tcp, self.ack_sent):
                self._checked(wanted, tcp, outstanding)
                return tcp
            seen.append(tcp)

    def expect_next(self, *specs, within: float | None = None, why: str = "", skip=None) -> TCP:
        """The target's very next segment must match one of `specs`: nothing may come before it
        (so "the target stays silent until..." needs no silence window). `skip(tcp)` names
        segments that are no answer at all (a retransmission on the target's own timer) unless
        they match."""
        __tracebackhide__ = True
        wanted = alternatives(*specs)
        within = self.peer.timing.reply if within is None else within
        outstanding = self.outstanding()
        deadline = time.monotonic() + within
        tcp = self.next_segment(within)
        # A retransmission that carries what is expected (an ACK riding on it) is an answer.
        while tcp is not None and skip is not None and not wanted.match(tcp, self.ack_sent) and skip(tcp):
            tcp = self.next_segment(max(0.0, deadline - time.monotonic()))
        ok = tcp is not None and wanted.match(tcp, self.ack_sent)
        self._checked(wanted, tcp if ok else None, outstanding)
        if not ok:
            raise self._failed(wanted, [tcp] if tcp is not None else [], within, why)
        return tcp

    def check(self, tcp: TCP, *specs, why: str = "") -> TCP:
        """A segment already received must match one of `specs` (a second look at it, for
        another requirement than the one it was waited for under)."""
        __tracebackhide__ = True
        wanted = alternatives(*specs)
        ok = wanted.match(tcp, self.ack_sent) is not None
        self._checked(wanted, tcp if ok else None, False)
        if not ok:
            raise self._failed(wanted, [tcp], None, why)
        return tcp

    def expect_silence(self, for_: float | None = None) -> None:
        """Nothing at all from the target on this connection for `for_` seconds."""
        __tracebackhide__ = True
        for_ = self.peer.timing.silence if for_ is None else for_
        self.peer.wire.waited += for_
        tcp = self.next_segment(for_)
        if tcp is not None:
            raise Mismatch(f"expected silence for {for_:.2f} s on {self.endpoints()}, "
                           f"{self.isns()}, but the target sent:\n    {describe(tcp, self.view, True)}",
                           self.sport, [f"silence for {for_:.2f} s"], getattr(tcp, "synfin_t", None))

    # -- reporting ------------------------------------------------------------------------
    def endpoints(self) -> str:
        a = self.peer.addr
        return f"peer {a.peer_ip}:{self.sport} ⇄ target {a.target_ip}:{self.dport}"

    def isns(self) -> str:
        irs = "unknown" if self.irs is None else f"{self.irs:#010x}"
        return f"peer ISS {self.iss:#010x}, target ISS {irs}"

    def _failed(self, wanted: Alternatives, seen: list, within: float | None, why: str = "") -> Mismatch:
        return Mismatch(self._mismatch(wanted, seen, within, why), self.sport,
                        [spec.describe(self.view) for spec in wanted.options],
                        getattr(seen[0], "synfin_t", None) if seen else None)

    def _mismatch(self, wanted: Alternatives, seen: list, within: float | None, why: str = "") -> str:
        """First line: what was expected and what came (or that nothing came); then the case's
        explanation, the alternatives and every segment seen, in full."""
        expected = " or ".join(spec.describe(self.view) for spec in wanted.options)
        got = describe(seen[0], self.view, True) + (f" (+{len(seen) - 1} more)" if len(seen) > 1 else "") \
            if seen else f"nothing within {within:.2f} s"
        lines = [f"expected {expected}; received {got}"]
        if why:
            lines.append(why)
        waited = f"waited up to {within:.2f} s for:" if within is not None else "the segment had to match:"
        lines.append(f"on {self.endpoints()} ({self.isns()}; numbers relative to the ISNs), {waited}")
        for i, spec in enumerate(wanted.options):
            lines.append(f"    {'   ' if i == 0 else 'or '}{spec.describe(self.view)}")
            if spec.pure_ack:
                lines.append("       or that ACK piggybacked on a retransmission (RFC 9293 §3.10.7.4 seventh)")
        if seen:
            lines.append("received instead:")
            lines += [f"    {describe(t, self.view, True)}" for t in seen]
        else:
            lines.append("received nothing")
        return "\n".join(lines)
