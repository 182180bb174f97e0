"""The state × event matrix: one case per row of the oracle (harness/oracle.py).

Each cell brings a fresh connection into the row's state (harness/states.py), sends the row's
segment and checks the answer against the answers the row allows, then asks the agent which state
the connection is in. A fresh connection per cell also keeps Linux's one-answer-per-500-ms limit
on out-of-window segments out of the way.

Silence is proven without a silence window where the protocol allows: the probe is followed by a
segment the target must answer, and a stack processes segments in order, so an answer to the
probe would have come first — in LISTEN a SYN from another port; in SYN-SENT the handshake's
SYN,ACK; in SYN-RECEIVED, ESTABLISHED and FIN-WAIT-1/2 one octet of data, whose ACK also says
what the probe did to RCV.NXT (accepted, held or dropped). After the peer's FIN (CLOSE-WAIT,
CLOSING, LAST-ACK, TIME-WAIT) every answer a stack can give is the same ACK <SEQ=SND.NXT>
<ACK=RCV.NXT>, and Linux limits TIME-WAIT's ACKs to one per 500 ms: there the target's silence
window decides.
"""
import time

import pytest

from harness import oracle, states
from harness.agent import OpError
from harness.markers import requirement
from harness.segments import Seg, describe, seg_len, seq_add, seq_diff

CELLS = [pytest.param(row, id=row.id, marks=requirement(row.requirement, row.level, row=row.catalogue_row))
         for row in oracle.TABLE]
NO_CONNECTION_ACK = 0x1234567  # in LISTEN no ACK value is acceptable
IN_ORDER = ("SYN-SENT", "SYN-RECEIVED", "SYN-RECEIVED-active", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2")


@pytest.mark.parametrize("row", CELLS)
def test_cell(lab, row):
    """One cell of the matrix: the row's segment in the row's state gets one of the answers the
    row allows, and leaves the connection in the state the row says (the RFC sentence is recorded
    with the verdict)."""
    lab.describe(f"{row.title}\n\n{row.rfc}")
    for name in row.settings:
        lab.setting(name)
    if row.state == "LISTEN":
        _listen_cell(lab, row)
    else:
        Cell(lab, row).run()


def _expected(reply: oracle.Reply, seg: dict) -> Seg:
    return Seg(reply.flags, seq=None if reply.seq is None else oracle.value(reply.seq, seg),
               ack=None if reply.ack is None else oracle.value(reply.ack, seg), tolerate=reply.tolerate,
               note=reply.name)


class Cell:
    def __init__(self, lab, row):
        self.lab, self.row = lab, row
        self.reached = states.drive(lab, row.state)
        conn = self.conn = self.reached.conn
        # The target's connection, in RFC terms, as the peer knows it.
        self.seg = {"RCV.NXT": conn.snd_nxt, "RCV.WND": conn.snd_wnd, "SND.NXT": conn.rcv_nxt,
                    "SND.UNA": self.reached.snd_una, "ISS": conn.irs}

    def after(self, reply) -> str:
        return reply.after or self.row.after

    # -- the probe and the follow-up --------------------------------------------------------
    def probe(self):
        row, conn, seg = self.row, self.conn, self.seg
        flags, length = oracle.CLASSES[row.cls]
        seq = oracle.value(oracle.POSITIONS[row.position] if row.position else "RCV.NXT", seg)
        ack = oracle.value(row.seg_ack, seg) if "A" in flags else 0
        offset = seq_diff(seq, seg["RCV.NXT"])
        where = f" at {row.position} (RCV.NXT{offset:+d}, RCV.WND {seg['RCV.WND']})" if row.position else ""
        kind = f", SEG.ACK = {row.seg_ack} ({row.ack_kind})" if row.ack_kind and "A" in flags else ""
        self.lab.note("probe", f"{row.cls}{where}{kind}")
        before = conn.snd_nxt
        conn.send_segment(conn.segment(flags, seq=seq, ack=ack, data=b"x" * length))
        conn.snd_nxt = before  # what the probe did to the target's RCV.NXT is the cell's question
        seg.update({"SEG.SEQ": seq, "SEG.ACK": ack, "SEG.LEN": length + ("S" in flags) + ("F" in flags)})

    def follow_up(self, state: str, reply=None):
        """Send, and return, the segment `state` must answer (`reply` given: the probe's answer is
        known, and the follow-up goes where that answer leaves RCV.NXT)."""
        conn, seg = self.conn, self.seg
        if state == "SYN-SENT":  # the handshake's SYN,ACK: ESTABLISHED and its ACK
            tcp = conn.segment("SA", seq=conn.iss, ack=seq_add(conn.irs, 1))
        else:
            if reply is not None and reply.follow:
                at = seq_add(oracle.value(reply.follow, seg), -1)
            else:
                at = oracle.value(self.row.follow_at, seg)
            ack = seq_add(conn.irs, 1) if state.startswith("SYN-RECEIVED") else self.reached.snd_una
            tcp = conn.segment("PA", seq=at, ack=ack, data=b"f")
        conn.send_segment(tcp)
        return tcp

    def owed(self, follow, reply) -> Seg:
        """What the target owes the follow-up once the probe got `reply`."""
        state, conn = self.after(reply), self.conn
        if state in ("CLOSED", "LISTEN"):  # its shape is checked in its own step
            return Seg("R", seq=follow.ack, tolerate="A", note=f"the follow-up answered from {state}")
        if "S" in str(follow.flags):
            return Seg("A", seq=follow.ack, ack=seq_add(follow.seq, 1), length=0,
                       note="the handshake's ACK: ESTABLISHED")
        ack = oracle.value(reply.follow, self.seg) if reply.follow else seq_add(follow.seq, seg_len(follow))
        return Seg("A", seq=conn.rcv_nxt, ack=ack, length=0, note=f"the follow-up ACKed ({state})")

    def settled(self, reply, followed: bool) -> str:
        """The state once the probe got `reply` and the follow-up (if any) was answered."""
        state = self.after(reply)
        if followed and (state == "SYN-SENT" or state.startswith("SYN-RECEIVED")):
            return "ESTABLISHED"
        return "CLOSED" if state == "LISTEN" else state  # a listener holds no TCB for this tuple

    # -- the cell ---------------------------------------------------------------------------
    def run(self):
        row = self.row
        self.probe()
        replies = [(r, _expected(r, self.seg)) for r in row.answers if r.flags is not None]
        quiet = [r for r in row.answers if r.flags is None]
        if row.state not in IN_ORDER:
            candidates, followed = self.windowed(replies, quiet), False
        elif quiet:
            candidates, followed = self.in_order(replies, quiet), True
        else:
            first = self.next(*(s for _, s in replies), why=row.rfc)
            answered = self.fitting(replies, first)
            state = self.after(answered[0])
            followed = state in IN_ORDER or state in ("CLOSED", "LISTEN")
            candidates = answered
            if followed:
                follow = self.follow_up(state, answered[0])
                candidates = self.followed_by(follow, answered, f"after the {answered[0].name}")
        chosen = self.confirm_state(candidates, followed)
        if len(row.answers) > 1:
            self.lab.choice("answer", chosen.name)
        self.application(chosen, followed)

    def in_order(self, replies, quiet) -> list:
        """The follow-up goes right behind the probe: the first segment back is the probe's answer,
        or the follow-up's when the probe got none."""
        follow = self.follow_up(self.row.state)
        owed = [(r, self.owed(follow, r)) for r in quiet]
        first = self.next(*(s for _, s in replies), *(s for _, s in owed), why=self.row.rfc)
        answered = self.fitting(replies, first)
        if answered:
            why = f"after the {answered[0].name}"
            if seq_diff(follow.seq, self.seg["RCV.NXT"]) > 0 and first.ack == self.seg["RCV.NXT"]:
                # The follow-up lies beyond RCV.NXT: its own duplicate ACK looks like this answer.
                why += (" (or, if that ACK was the follow-up's duplicate ACK, after no answer at all: the probe was "
                        "dropped silently)")
            return self.followed_by(follow, answered, why)
        return self.fitting(owed, first)

    def followed_by(self, follow, answered: list, why: str) -> list:
        owed = [(r, self.owed(follow, r)) for r in answered]
        got = self.next(*dict.fromkeys(s for _, s in owed), why=f"{why}, the follow-up must be answered")
        return self.fitting(owed, got)

    def fitting(self, pairs, tcp) -> list:
        """The replies whose expected segment `tcp` is (an ACK riding on a retransmission counts)."""
        return [r for r, s in pairs if s.matches(tcp, self.conn.ack_sent)]

    def next(self, *specs, why: str):
        """conn.expect_next, past the target's own retransmissions (its timer, not an answer)."""
        return self.conn.expect_next(*specs, why=why, skip=self.retransmitted)

    def windowed(self, replies, quiet) -> list:
        """No follow-up can tell the answers apart here: the first segment within the target's
        silence window is the answer."""
        conn, row = self.conn, self.row
        if not quiet:
            first = self.next(*(s for _, s in replies), why=row.rfc)
            return self.fitting(replies, first)
        window = self.lab.timing.silence
        self.lab.peer.wire.waited += window
        deadline = time.monotonic() + window
        while True:
            first = conn.next_segment(within=max(0.0, deadline - time.monotonic()))
            if first is None:
                return quiet
            if not self.retransmitted(first):
                break
        if not replies:
            raise AssertionError(f"expected no answer (silence for {window:.2f} s); received "
                                 f"{describe(first, conn.view, True)}\n{row.rfc}")
        conn.check(first, *(s for _, s in replies), why=row.rfc)
        return self.fitting(replies, first)

    def retransmitted(self, tcp) -> bool:
        """The target's own SYN, SYN,ACK or FIN again, on its retransmission timer (Linux's RTO is
        200 ms on a lab link, PyTCP's 1 s): no answer to the probe."""
        flags, reached = str(tcp.flags), self.reached
        if bytes(tcp.payload) or "R" in flags:
            return False
        if reached.fin_unacked and "F" in flags:
            return tcp.seq == reached.snd_una
        if "S" in flags and reached.state in ("SYN-SENT", "SYN-RECEIVED", "SYN-RECEIVED-active"):
            return tcp.seq == self.conn.irs and not any(r.flags and "S" in r.flags for r in self.row.answers)
        return False

    def confirm_state(self, candidates: list, followed: bool):
        """The agent reports the state the answer leaves the connection in; where the answers
        differ only in that (a RST taken or ignored), the report decides."""
        lab, reached = self.lab, self.reached
        if "conns" not in lab.target.spec.capabilities:
            return candidates[0]
        seen = lab.target.conn_state(reached.port, self.conn.sport)
        fits = [r for r in candidates if self.settled(r, followed) == seen]
        if not fits:
            owed = " or ".join(dict.fromkeys(self.settled(r, followed) for r in candidates))
            raise AssertionError(f"after the {candidates[0].name} the connection must be {owed}; the target "
                                 f"reports {seen}\n{self.row.rfc}")
        chosen = fits[0]
        if self.after(chosen) == "CLOSED" and followed:
            last = self.conn.received[-1]
            with lab.step("answered from CLOSED", "R9293-3.10.7.1"):
                self.conn.check(last, Seg("R", seq=last.seq, note="from CLOSED: <SEQ=SEG.ACK><CTL=RST>, no ACK flag"))
        elif self.after(chosen) == "LISTEN" and followed:
            last = self.conn.received[-1]
            with lab.step("answered from LISTEN", "R9293-3.10.7.2/second"):
                self.conn.check(last, Seg("R", seq=last.seq, note="from LISTEN: <SEQ=SEG.ACK><CTL=RST>, no ACK flag"))
        return chosen

    def application(self, chosen, followed: bool) -> None:
        """What the application sees of an open the cell decided: connect() returns, or fails."""
        job = self.reached.job
        if job is None:
            return
        if self.settled(chosen, followed) == "ESTABLISHED":
            self.lab.target.adopt(job.wait(timeout=3.0)["sock"])
            return
        try:
            sock = job.wait(timeout=3.0)["sock"]
        except OpError as exc:
            assert exc.errno in ("ECONNREFUSED", "ECONNRESET"), f"connect() failed with {exc.errno}, not refused"
            return
        self.lab.target.adopt(sock)
        raise AssertionError(f"connect() succeeded although the connection is {self.settled(chosen, followed)}")


def _listener_answers(lab, port: int, why: str):
    """A SYN from another port gets its SYN,ACK: the listener is as it was (and, in order, every
    answer to what came before has arrived)."""
    other = lab.peer.connection(port)
    other.syn()
    other.expect_next(Seg("SA", ack=seq_add(other.iss, 1), note="the listener still answers a SYN"), why=why)
    other.rst(seq=seq_add(other.iss, 1))


def _listen_cell(lab, row):
    port = lab.port()
    listener = lab.target.listen(port)
    conn = lab.peer.connection(port)
    flags, length = oracle.CLASSES[row.cls]
    probe = conn.send_raw(flags, seq=conn.iss, ack=NO_CONNECTION_ACK if "A" in flags else 0, data=b"x" * length)
    seg = {"SEG.SEQ": probe.seq, "SEG.ACK": NO_CONNECTION_ACK, "SEG.LEN": seg_len(probe)}
    replies = [(r, _expected(r, seg)) for r in row.answers if r.flags is not None]
    if oracle.SILENCE in row.answers:
        _listener_answers(lab, port, why=f"{row.step}: the probe must leave the listener as it was")
        answered = conn.next_segment(within=0.0)
        if answered is not None and replies:
            conn.check(answered, *(s for _, s in replies), why=row.rfc)
        elif answered is not None:
            raise AssertionError(f"expected no answer (silence); received {describe(answered, conn.view, True)}\n"
                                 f"{row.rfc}")
        elif len(row.answers) > 1:
            lab.choice("answer", "silence")
    else:
        got = conn.expect_next(*(s for _, s in replies), why=row.rfc)
        if len(row.answers) > 1:
            lab.choice("answer", next(r.name for r, s in replies if s.matches(got, conn.ack_sent)))
        if row.after == "LISTEN":
            _listener_answers(lab, port, why=f"{row.step}: after the answer the listener is as it was")
    if row.after == "SYN-RECEIVED":
        conn.rst(seq=seq_add(conn.iss, 1))  # nothing lingers for the next cell
    lab.target.close(listener)
