"""The matrix's oracle: RFC 9293 §3.10.7 event processing as a table, one row per (state, segment
class, position), each with the answers the RFCs allow and the §3.10.7 step it encodes.

An answer is written in RFC terms: the reply's control bits and its SEQ and ACK as expressions of
the probe segment (SEG.SEQ, SEG.ACK, SEG.LEN) and of the connection (SND.NXT, RCV.NXT); no reply
is `SILENCE`. Every row names the requirement id of the catalogue it checks; cases/matrix/
generates one pytest case per row. Where the RFCs allow several answers the row lists them all,
and the cell records which one the stack gave.

Rows so far: LISTEN (§3.10.7.2); a RST in ESTABLISHED at each window position (§3.10.7.4
second, RFC 5961 §3.2). The other synchronized states, SYN-SENT and the other classes follow.
"""
import re
from dataclasses import dataclass

# The segment classes a cell sends: control bits, and payload length.
CLASSES = {
    "SYN": ("S", 0), "SYN+ACK": ("SA", 0), "ACK": ("A", 0), "FIN+ACK": ("FA", 0), "FIN": ("F", 0),
    "RST": ("R", 0), "RST+ACK": ("RA", 0), "data+ACK": ("PA", 10), "SYN+FIN": ("SF", 0), "no flags": ("", 0),
}


@dataclass(frozen=True)
class Reply:
    """An allowed answer: `flags` (None: no segment at all), SEQ and ACK as RFC expressions
    (None: not checked), the name the stack's choice is recorded under, and the state the
    connection is in afterwards when it differs from the row's."""

    flags: str | None
    seq: str | None = None
    ack: str | None = None
    name: str = ""
    after: str | None = None


SILENCE = Reply(None, name="silence")


@dataclass(frozen=True)
class Row:
    state: str
    cls: str
    position: str | None
    step: str            # the §3.10.7 step the row encodes, as the RFC numbers it
    requirement: str     # catalogue id
    level: str
    answers: tuple       # of Reply
    after: str           # the state afterwards (what the next segment must find)
    rfc: str             # the sentence the row checks
    catalogue_row: str | None = None  # when the requirement id is cited by several catalogue rows

    @property
    def id(self) -> str:
        return "-".join(p for p in (self.state, self.cls.replace(" ", "_"), self.position) if p)


_RST_FROM_ACK = Reply("R", seq="SEG.ACK", name="RST <SEQ=SEG.ACK>")
_SYN_ACK = Reply("SA", ack="SEG.SEQ+1", name="SYN,ACK <ACK=SEG.SEQ+1>")


def _listen() -> list[Row]:
    first = ('§3.10.7.2 first: "An incoming RST should be ignored. Return."')
    second = ('§3.10.7.2 second: "An acceptable reset segment should be formed for any arriving '
              'ACK-bearing segment ... <SEQ=SEG.ACK><CTL=RST>"')
    third = ('§3.10.7.2 third: "Set RCV.NXT to SEG.SEQ+1 ... any other control or text should be queued '
             'for processing later ... <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>"')
    fourth = '§3.10.7.2 fourth: "This should not be reached. Drop the segment and return."'
    rows = [
        ("RST", "first", "R9293-3.10.7.2/first", (SILENCE,), "LISTEN", first),
        ("RST+ACK", "first", "R9293-3.10.7.2/first", (SILENCE,), "LISTEN", first),
        ("ACK", "second", "R9293-3.10.7.2/second", (_RST_FROM_ACK,), "LISTEN", second),
        ("SYN+ACK", "second", "R9293-3.10.7.2/second", (_RST_FROM_ACK,), "LISTEN", second),
        ("FIN+ACK", "second", "R9293-3.10.7.2/second", (_RST_FROM_ACK,), "LISTEN", second),
        ("data+ACK", "second", "R9293-3.10.7.2/second", (_RST_FROM_ACK,), "LISTEN", second),
        ("SYN", "third", "R9293-3.10.7.2/third", (_SYN_ACK,), "SYN-RECEIVED", third),
        # The FIN is queued and reaches SYN-RECEIVED without an ACK, where it is dropped (§3.10.7.4 fifth).
        ("SYN+FIN", "third", "R9293-3.10.7.2/third", (_SYN_ACK,), "SYN-RECEIVED", third),
        ("FIN", "fourth", "R9293-3.10.7.2/fourth", (SILENCE,), "LISTEN", fourth),
        ("no flags", "fourth", "R9293-3.10.7.2/fourth", (SILENCE,), "LISTEN", fourth),
    ]
    return [Row("LISTEN", cls, None, f"§3.10.7.2 {step}", rid, "MUST", answers, after, rfc)
            for cls, step, rid, answers, after, rfc in rows]


# Where a probe's SEQ lies against the target's receive window [RCV.NXT, RCV.NXT+RCV.WND). Outside
# right is past any window an unscaled connection can have: a stack may keep more window than it
# last advertised (Linux does), and a RST there must still be outside.
POSITIONS = {"outside-left": "RCV.NXT-1", "left-edge": "RCV.NXT", "inside": "RCV.NXT+1",
             "right-edge": "RCV.NXT+RCV.WND-1", "outside-right": "RCV.NXT+65535"}

_CHALLENGE = Reply("A", seq="SND.NXT", ack="RCV.NXT", name="challenge ACK (RFC 5961 §3.2)")
_RESET = Reply(None, name="reset (RFC 793: a RST in the window is valid)", after="CLOSED")


def _established_rst() -> list[Row]:
    rule1 = ('§3.10.7.4 second (1): "If the RST bit is set and the sequence number is outside the current '
             'receive window, silently drop the segment."')
    rule2 = ('§3.10.7.4 second (2): "If the RST bit is set and the sequence number exactly matches the next '
             'expected sequence number (RCV.NXT), then TCP endpoints MUST reset the connection"')
    rule3 = ('§3.10.7.4 second (3): "If the RST bit is set and the sequence number does not exactly match the '
             'next expected sequence value, yet is within the current receive window, TCP endpoints MUST send '
             'an acknowledgment (challenge ACK): <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>"; a stack without RFC 5961 '
             'accepts the RST (the checks "apply for stacks implementing the protection")')
    rows = [  # catalogue rows C1-C3 are RFC 5961 §3.2's rules 2, 3 and 1
        ("outside-left", (SILENCE,), "ESTABLISHED", rule1, "C3"),
        ("left-edge", (Reply(None, name="reset", after="CLOSED"),), "CLOSED", rule2, "C1"),
        ("inside", (_CHALLENGE, _RESET), "ESTABLISHED", rule3, "C2"),
        ("right-edge", (_CHALLENGE, _RESET), "ESTABLISHED", rule3, "C2"),
        ("outside-right", (SILENCE,), "ESTABLISHED", rule1, "C3"),
    ]
    return [Row("ESTABLISHED", "RST", pos, "§3.10.7.4 second", "RFC5961-3.2", "MUST", answers, after, rfc, crow)
            for pos, answers, after, rfc, crow in rows]


TABLE: tuple = tuple(_listen() + _established_rst())


def value(expr: str, seg: dict) -> int:
    """An RFC expression over the probe (`seg`: SEG.SEQ, SEG.ACK, SEG.LEN) and the connection
    (SND.NXT, RCV.NXT as the target's): "SEG.SEQ+SEG.LEN", "SEG.ACK", "0"."""
    total = 0
    for sign, term in re.findall(r"([+-]?)([A-Z.]+|\d+)", expr.replace(" ", "")):
        n = int(term) if term.isdigit() else seg[term]
        total += -n if sign == "-" else n
    return total % (1 << 32)
