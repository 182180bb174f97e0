"""The live system under learning: words of abstract inputs run on a target, many at once.

Each word runs in its own *lane*: its own listener (or bound connect) on a fresh target port and
its own peer connection on a fresh peer port, so words never meet. Lanes step together: every
lane's i-th input is sent, then one *barrier* proves that the stack has answered all of them.
The barrier is an ACK to a port nobody listens on, which every stack must answer with a RST
(RFC 9293 §3.10.7.1); a stack works through its input in order, so once the barrier's RST is
back, whatever the earlier inputs caused has been sent, and silence is proven without a silence
window. A stack that answers each connection on a thread of its own gets its profile's bound on
how far an answer may trail the barrier's (`Timing.barrier_lag`); a stack that holds ACKs back (a
delayed-ACK timer) gets its profile's ACK-delay bound on the steps that may owe one; a stack that
does not answer the barrier gets that bound as a silence window after every step.

The mapper keeps the model finite (what the reference learnings found necessary): SEQ is the
target's last ACK, ACK is the peer's RCV.NXT, one accepted socket at most is held, listeners have
backlog 1, and copies of the target's SYN, FIN and data segments (its timers) are dropped. Every
RST (either way) ends the connection: on the server side the next segment opens a new one on a
new peer port; on the client side the target's socket stays connected to its port, and the peer
still acknowledges its SYN. Every CONNECT is a connection of its own, on a new peer port.
"""
import itertools
import os
import random
import time

from scapy.layers.inet import TCP

from ..agent import OpError
from ..errors import HarnessError, Unsupported
from ..peer import Connection
from ..segments import flag_letters, seg_len, seq_add
from .alphabet import CONSUMING, SEGMENTS, join, name_segment

BARRIER_SPORT = 61999  # outside the peer's port pool (harness/ports.py)
BARRIER_DPORT = 9      # discard: nobody listens there


class LearnError(HarnessError):
    """The learning cannot go on (the stack stopped answering, or stayed non-deterministic)."""


class Lane:
    """One word's connection, seen from the peer and from the target's application."""

    def __init__(self, system: "LiveSystem", side: str):
        self.system = system
        self.side = side
        self.tport = system.session.target_ports.next()
        self.listener: int | None = None  # server side
        self.sock: int | None = None      # the accepted (server) or connecting (client) socket
        self.conn: Connection | None = None
        self.left: list[tuple[int, int]] = []  # (peer port, SEQ) of connections a CONNECT left behind
        # The target's SYN, FIN and data segments so far: kept across the lane's connections, as
        # a stack still retransmits on one the mapper has ended (a SYN in SYN-SENT after a RST
        # the RFC says to drop).
        self.seen: set[tuple] = set()
        self._new_connection(self.system.session.peer_ports.next())
        self.owes_ack = False

    def _new_connection(self, sport: int, still_connected: Connection | None = None) -> None:
        self.conn = Connection(self.system.peer, sport, self.tport)
        self.last_ack: int | None = None
        self.ended = False
        if still_connected is not None and still_connected.irs is not None:
            # The client side after a RST: the target's socket may live on (SYN-SENT drops a RST
            # without ACK, RFC 9293 §3.10.7.3), so the peer still acknowledges what it sent.
            self.conn.irs, self.conn.rcv_nxt = still_connected.irs, still_connected.rcv_nxt
            self.conn.view.irs = still_connected.irs

    def _ended(self) -> None:
        """After a RST: on the server side the next segment opens a connection on a new peer port;
        on the client side the target's socket stays connected to the same one."""
        if self.side == "client":
            self._new_connection(self.conn.sport, still_connected=self.conn)
        else:
            self._new_connection(self.system.session.peer_ports.next())

    def _connecting(self) -> None:
        """A CONNECT makes a new socket: a connection of its own, on a new peer port."""
        if self.conn.irs is None and self.conn.snd_nxt == self.conn.iss:
            return  # nothing on this one yet
        self.left.append((self.conn.sport, self.last_ack if self.last_ack is not None else self.conn.snd_nxt))
        self._new_connection(self.system.session.peer_ports.next())

    # -- inputs ---------------------------------------------------------------------------
    def send_segment(self, letter: str) -> None:
        flags, data = SEGMENTS[letter]
        conn = self.conn
        if letter in ("SYN", "SYNACK") and self.last_ack is None:
            seq = conn.iss
        else:
            seq = self.last_ack if self.last_ack is not None else seq_add(conn.iss, 1)
        ack = (conn.rcv_nxt or 0) if "A" in flags else 0
        tcp = TCP(sport=conn.sport, dport=self.tport, flags=flags, seq=seq, ack=ack, window=conn.window,
                  options=[("MSS", conn.mss)] if "S" in flags else [])
        if data:
            tcp = tcp / data
        conn.snd_nxt = seq_add(seq, seg_len(tcp))
        if "A" in flags:
            conn.ack_sent = ack
        wire = self.system.wire
        wire.send(wire.frame(tcp))
        self.owes_ack = letter in CONSUMING
        if "R" in flags:
            self.ended = True

    def call_for(self, letter: str):
        """The agent call a socket input makes, or its output when it makes none."""
        ip = self.system.target.ip
        if letter == "ACCEPT":
            if self.listener is None:
                return None, "nolistener"
            if self.sock is not None:
                return None, "held"
            return ("accept", {"sock": self.listener, "timeout": 0}), None
        if letter == "CLOSE":
            if self.sock is None:
                return None, "nosock"
            self.owes_ack = True  # a FIN may go out on the stack's next timer, not in the call
            return ("close", {"sock": self.sock}), None
        if letter == "CONNECT":
            if self.sock is not None:
                return None, "held"
            self._connecting()
            self.owes_ack = True  # likewise the SYN
            return ("connect", {"addr": self.system.peer.addr.peer_ip, "port": self.conn.sport,
                                "bind_addr": ip, "bind_port": self.tport, "reuseaddr": True,
                                "nonblocking": True, "timeout": 0}), None
        raise ValueError(f"unknown input {letter!r}")

    def called(self, letter: str, reply) -> str:
        if isinstance(reply, Unsupported):
            raise LearnError(f"target {self.system.target.name} cannot {letter}: {reply}")
        if isinstance(reply, OpError):
            if letter == "CLOSE":
                self.sock = None
            return reply.errno
        if letter in ("ACCEPT", "CONNECT"):
            self.sock = reply["sock"]
        elif letter == "CLOSE":
            self.sock = None
        return "ok"

    # -- outputs --------------------------------------------------------------------------
    def collect(self) -> list[str]:
        """The target's segments to this lane since the last collect, named; copies of a SYN, FIN
        or data segment already seen dropped. A RST from the target ends the connection."""
        wire, conn, names = self.system.wire, self.conn, []
        while True:
            pkt = wire.next_for(conn.sport, time.monotonic())
            if pkt is None:
                break
            tcp = pkt[TCP]
            if tcp.sport != self.tport:
                continue
            flags = flag_letters(tcp.flags)
            length = len(bytes(tcp.payload))
            # A copy is a retransmission, however soon it comes: timers are not answers, and a
            # short one races the barrier (Linux re-arms its SYN timer to two jiffies after it
            # answers a bad ACK in SYN-SENT, RFC 9293 §3.10.7.3).
            key = (flags, tcp.seq, tcp.ack, length)
            if "S" in flags or "F" in flags or length:
                if key in self.seen:
                    continue
                self.seen.add(key)
            if self.side == "client" and "S" in flags and conn.irs is None:
                conn.dport = tcp.sport
            names.append(name_segment(flags, tcp.seq, tcp.ack, length, conn.rcv_nxt, conn.snd_nxt, conn.irs))
            if "S" in flags and conn.irs is not None and tcp.seq != conn.irs:
                # A new ISN: a new incarnation on the same ports (the old one closed without a
                # RST, or a new socket): the peer takes IRS from it, as in SYN-SENT (§3.10.7.3).
                conn.irs = conn.rcv_nxt = None
            conn._absorb(tcp)  # RCV.NXT follows the target's in-order segments
            if "A" in flags and "R" not in flags:
                self.last_ack = tcp.ack
            if "R" in flags:
                self.ended = True
            if "A" in flags or "R" in flags:
                self.owes_ack = False
        if self.ended:
            self._ended()
        return names

    def teardown_calls(self) -> list[tuple[str, dict]]:
        """What ends the lane on the target: its sockets closed with a RST where it can."""
        calls = []
        for sock in (self.sock, self.listener):
            if sock is None:
                continue
            if "so_linger" in self.system.target.spec.capabilities:
                calls.append(("setsockopt", {"sock": sock, "opt": "SO_LINGER", "value": [1, 0]}))
            calls.append(("close", {"sock": sock}))
        return calls

    def teardown_segment(self) -> None:
        """A RST at the target's last ACK on each of the lane's connections, so the stack forgets
        them now."""
        conn, wire = self.conn, self.system.wire
        ends = list(self.left)
        if conn.irs is not None or self.side == "server":
            ends.append((conn.sport, self.last_ack if self.last_ack is not None else conn.snd_nxt))
        for sport, seq in ends:
            wire.send(wire.frame(TCP(sport=sport, dport=self.tport, flags="R", seq=seq, window=0)))


class LiveSystem:
    """Runs words on the target of a started Session (harness/session.py)."""

    def __init__(self, session, side: str = "server", ack_delay: float | None = None):
        self.session = session
        self.side = side
        self.peer, self.target = session.new_case()
        self.wire = self.peer.wire
        self.agent = session.instance.agent
        timing = session.spec.timing
        self.ack_delay = timing.ack_delay if ack_delay is None else ack_delay
        self.window = max(timing.ack_delay, 0.05)  # silence window where the barrier is not answered
        self._nonce = itertools.count(random.getrandbits(31))
        self.barrier_works = self._barrier_answered()
        # Run the stack's delayed-ACK timer after a step that may owe an ACK (an agent with the
        # "tick" op), instead of waiting the ACK-delay bound: set by harness/learn/settings.py.
        self.tick = False
        self.rounds = 0
        self.waited = 0.0
        # Pinned to one core, the peer's frames enter the kernel's receive path on one CPU's
        # queue, in the order they were sent: the barrier's order argument needs that.
        try:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        except OSError:
            pass

    # -- the barrier ----------------------------------------------------------------------
    def _barrier_answered(self) -> bool:
        for _ in range(3):
            if self._barrier(timeout=self.session.spec.timing.reply):
                return True
        return False

    def _barrier(self, timeout: float = 1.0) -> bool:
        nonce = next(self._nonce) % (1 << 32)
        tcp = TCP(sport=BARRIER_SPORT, dport=BARRIER_DPORT, flags="A", seq=1, ack=nonce, window=0)
        self.wire.send(self.wire.frame(tcp))
        deadline = time.monotonic() + timeout
        while True:
            pkt = self.wire.next_for(BARRIER_SPORT, deadline)
            if pkt is None:
                return False
            if "R" in str(pkt[TCP].flags) and pkt[TCP].seq == nonce:
                return True

    def settle(self) -> None:
        """Wait until whatever the inputs so far caused has arrived."""
        if self.barrier_works:
            if not self._barrier(timeout=self.session.spec.timing.reply) and \
                    not self._barrier(timeout=self.session.spec.timing.reply):
                raise LearnError(f"target {self.target.name} stopped answering the barrier probe "
                                 f"(an ACK to its closed port {BARRIER_DPORT})")
            lag = self.session.spec.timing.barrier_lag
            if lag:  # a stack that answers each connection on a thread of its own
                self.waited += lag
                time.sleep(lag)
        else:
            self.waited += self.window
            time.sleep(self.window)

    # -- words ----------------------------------------------------------------------------
    def run(self, words: list, states: list | None = None) -> list[list[str]]:
        """The outputs of each word, every word in its own lane, all stepped together. With
        `states` (a list), the RFC 9293 state the stack reports for each lane's connection at
        the end is appended to it (None where it cannot tell)."""
        lanes = [Lane(self, self.side) for _ in words]
        outs: list[list[str]] = [[] for _ in words]
        try:
            if self.side == "server":
                replies = self.agent.call_many([("listen", {"addr": self.target.ip, "port": lane.tport, "backlog": 1})
                                                for lane in lanes])
                for lane, reply in zip(lanes, replies):
                    if isinstance(reply, Exception):
                        raise LearnError(f"listen on port {lane.tport} failed: {reply}")
                    lane.listener = reply["sock"]
            for i in range(max((len(w) for w in words), default=0)):
                self._round(lanes, [w[i] if i < len(w) else None for w in words], outs)
            if states is not None:
                states.extend(self._states(lanes))
        finally:
            self._end(lanes)
        return outs

    def _round(self, lanes, letters, outs) -> None:
        self.rounds += 1
        calls, called, given = [], [], {}
        for k, (lane, letter) in enumerate(zip(lanes, letters)):
            if letter is None:
                continue
            lane.owes_ack = False  # this step's input says whether an answer may still come
            if letter in SEGMENTS:
                lane.send_segment(letter)
            else:
                call, output = lane.call_for(letter)
                if call is None:
                    given[k] = output
                else:
                    calls.append(call)
                    called.append(k)
        results = dict(zip(called, self.agent.call_many(calls)))
        self.settle()
        segments = {k: lanes[k].collect() for k, letter in enumerate(letters) if letter is not None}
        if (self.tick or self.ack_delay > 0) and self.barrier_works and any(
                lanes[k].owes_ack and not segments[k] for k in segments):
            if self.tick:
                self.agent.call("tick")
            else:
                self.waited += self.ack_delay
                time.sleep(self.ack_delay)
            self.settle()
            for k in segments:
                segments[k] += lanes[k].collect()
        for k, letter in enumerate(letters):
            if letter is None:
                continue
            if k in results:
                outs[k].append(join(segments[k], lanes[k].called(letter, results[k])))
            elif k in given:
                outs[k].append(join(segments[k], given[k]))
            else:
                outs[k].append(join(segments[k]))

    def _states(self, lanes) -> list[str | None]:
        if "conns" not in self.target.spec.capabilities:
            return [None] * len(lanes)
        calls = [("conns", {"local_port": lane.tport, "remote_port": lane.conn.sport, "local_addr": self.target.ip,
                            "remote_addr": self.peer.addr.peer_ip}) for lane in lanes]
        out = []
        for lane, reply in zip(lanes, self.agent.call_many(calls)):
            if isinstance(reply, Exception):
                out.append(None)
                continue
            found = [c["state"] for c in reply["conns"]]
            out.append(found[0] if found else ("LISTEN" if lane.listener is not None else "CLOSED"))
        return out

    def _end(self, lanes) -> None:
        for lane in lanes:
            lane.teardown_segment()
        calls = [c for lane in lanes for c in lane.teardown_calls()]
        for reply in self.agent.call_many(calls):
            if isinstance(reply, Unsupported):
                raise LearnError(f"target {self.target.name}: {reply}")
        # What the lanes' ports still receive (retransmissions, answers to the teardown RST) is
        # never read again: drop it with the queues.
        self.wire.reset_queues()
        self.wire.trace.clear()
