"""The matrix's oracle: RFC 9293 §3.10.7 event processing (with RFC 5961's and RFC 1337's
alternatives) as a table, one row per (state, segment class, position, ACK kind), each with the
answers the RFCs allow, the state afterwards and the §3.10.7 step it encodes.

An answer is written in RFC terms: the reply's control bits and its SEQ and ACK as expressions of
the probe (SEG.SEQ, SEG.ACK, SEG.LEN) and of the target's connection (SND.UNA, SND.NXT, RCV.NXT,
RCV.WND, ISS); no reply is silence (`flags=None`). `follow` is the ACK the target owes the
follow-up segment the matrix sends after the probe (see cases/matrix/test_cells.py): it says what
the probe did to RCV.NXT (data accepted, held, or dropped). Every row names the requirement id of
the catalogue and the catalogue row it checks; where the RFCs allow several answers the row lists
them all, and the cell records which one the stack gave (its fingerprint).

Read a row against the RFC text: `step` is the §3.10.7 step, `rfc` the sentence.
"""
import re
from dataclasses import dataclass

# The segment classes a cell sends: control bits, and payload length.
CLASSES = {
    "SYN": ("S", 0), "SYN+ACK": ("SA", 0), "ACK": ("A", 0), "FIN+ACK": ("FA", 0), "FIN": ("F", 0),
    "RST": ("R", 0), "RST+ACK": ("RA", 0), "data+ACK": ("PA", 10), "SYN+FIN": ("SF", 0), "no flags": ("", 0),
}

# Where a probe's SEQ lies against the target's receive window [RCV.NXT, RCV.NXT+RCV.WND). Outside
# right is past any window an unscaled connection can have: a stack may keep more window than it
# last advertised (Linux does), and a segment there must still be outside.
POSITIONS = {"outside-left": "RCV.NXT-1", "left-edge": "RCV.NXT", "inside": "RCV.NXT+1",
             "right-edge": "RCV.NXT+RCV.WND-1", "outside-right": "RCV.NXT+65535"}

# The probe's ACK field. Synchronized states: SND.UNA acknowledges nothing new (a FIN still out
# stays unacknowledged); old is below SND.UNA; unsent is beyond SND.NXT. SYN-SENT and SYN-RECEIVED:
# only SND.NXT (ISS+1) is acceptable, ISS is old.
ACKS = {None: "SND.UNA", "old": "SND.UNA-1", "unsent": "SND.NXT+1"}
OPENING_ACKS = {"acceptable": "SND.NXT", "old": "ISS", "unsent": "SND.NXT+1"}

SYNCHRONIZED = ("ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT")
PEER_FIN_SEEN = ("CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT")  # text after the peer's FIN is ignored


@dataclass(frozen=True)
class Reply:
    """An allowed answer: `flags` (None: no segment at all), SEQ and ACK as RFC expressions
    (None: not checked), flags it may also carry, the name the stack's choice is recorded under,
    the state afterwards when it differs from the row's, and the ACK owed to the follow-up."""

    flags: str | None
    seq: str | None = None
    ack: str | None = None
    name: str = ""
    after: str | None = None
    tolerate: str = ""
    follow: str | None = None


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
    ack_kind: str | None = None       # the probe's ACK: None (nothing new), "old", "unsent", "acceptable"
    follow_at: str = "RCV.NXT"        # where the follow-up goes, when it is sent before the answer
    settings: tuple = ()              # the target's sysctls that decide which answer it gives

    @property
    def id(self) -> str:
        parts = (self.state, self.cls.replace(" ", "_"), self.position, self.ack_kind and f"ack_{self.ack_kind}")
        return "-".join(p for p in parts if p)

    @property
    def title(self) -> str:
        """`RST at RCV.NXT+1 (inside) in ESTABLISHED: challenge ACK (RFC 5961) or reset (...)`."""
        where = f" at {POSITIONS[self.position]} ({self.position})" if self.position else ""
        ack = f" with ACK {self.seg_ack} ({self.ack_kind})" if self.ack_kind else ""
        answers = " or ".join(a.name for a in self.answers)
        return f"{self.cls}{where}{ack} in {self.state}: {answers}; then {self.after}"

    @property
    def seg_ack(self) -> str:
        opening = self.state.startswith("SYN-")
        return (OPENING_ACKS if opening else ACKS)[self.ack_kind or ("acceptable" if opening else None)]


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


# -- SYN-SENT (§3.10.7.3) -----------------------------------------------------------------
def _syn_sent() -> list[Row]:
    first = ('§3.10.7.3 first: "If SEG.ACK =< ISS or SEG.ACK > SND.NXT, send a reset (unless the RST bit '
             'is set, if so drop the segment and return)" "<SEQ=SEG.ACK><CTL=RST>" "and discard the segment."')
    second = ('§3.10.7.3 second: "If the ACK was acceptable, then signal to the user \'error: connection reset\', '
              'drop the segment, enter CLOSED state, delete TCB, and return. Otherwise (no ACK), drop the segment '
              'and return."')
    fifth = '§3.10.7.3 fifth: "Fifth, if neither of the SYN or RST bits is set, then drop the segment and return."'
    fourth = ('§3.10.7.3 fourth: "Otherwise, enter SYN-RECEIVED, form a SYN,ACK segment" '
              '"<SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>" "and send it." (simultaneous open, §3.5 Figure 7)')
    refused = Reply(None, name="connection refused", after="CLOSED")
    rows = [
        ("ACK", "old", "first", "R9293-3.10.7.3/first", (_RST_FROM_ACK,), "SYN-SENT", first),
        ("ACK", "unsent", "first", "R9293-3.10.7.3/first", (_RST_FROM_ACK,), "SYN-SENT", first),
        ("SYN+ACK", "old", "first", "R9293-3.10.7.3/first", (_RST_FROM_ACK,), "SYN-SENT", first),
        ("SYN+ACK", "unsent", "first", "R9293-3.10.7.3/first", (_RST_FROM_ACK,), "SYN-SENT", first),
        ("data+ACK", "unsent", "first", "R9293-3.10.7.3/first", (_RST_FROM_ACK,), "SYN-SENT", first),
        ("RST+ACK", "old", "first", "R9293-3.10.7.3/second", (SILENCE,), "SYN-SENT", first),
        ("RST", None, "second", "R9293-3.10.7.3/second", (SILENCE,), "SYN-SENT", second),
        ("RST+ACK", "acceptable", "second", "R9293-3.10.7.3/second", (refused,), "CLOSED", second),
        ("ACK", "acceptable", "fifth", "R9293-3.10.7.3/fifth", (SILENCE,), "SYN-SENT", fifth),
        ("FIN+ACK", "acceptable", "fifth", "R9293-3.10.7.3/fifth", (SILENCE,), "SYN-SENT", fifth),
        ("data+ACK", "acceptable", "fifth", "R9293-3.10.7.3/fifth", (SILENCE,), "SYN-SENT", fifth),
        ("FIN", None, "fifth", "R9293-3.10.7.3/fifth", (SILENCE,), "SYN-SENT", fifth),
        ("no flags", None, "fifth", "R9293-3.10.7.3/fifth", (SILENCE,), "SYN-SENT", fifth),
        ("SYN", None, "fourth", "MUST-10",
         (Reply("SA", seq="ISS", ack="SEG.SEQ+1", name="SYN,ACK <SEQ=ISS><ACK=SEG.SEQ+1>", follow="SEG.SEQ+2"),),
         "SYN-RECEIVED-active", fourth),
    ]
    return [Row("SYN-SENT", cls, None, f"§3.10.7.3 {step}", rid, "MUST", answers, after, rfc, ack_kind=kind)
            for cls, kind, step, rid, answers, after, rfc in rows]


# -- SYN-RECEIVED (§3.10.7.4 for SYN-RECEIVED) -------------------------------------------
_CHALLENGE = Reply("A", seq="SND.NXT", ack="RCV.NXT", name="challenge ACK (RFC 5961)")
_ACK = Reply("A", seq="SND.NXT", ack="RCV.NXT", name="ACK <SEQ=SND.NXT><ACK=RCV.NXT>")


def _syn_received() -> list[Row]:
    passive_rst = ('§3.10.7.4 second, SYN-RECEIVED: "If this connection was initiated with a passive OPEN '
                   '(i.e., came from the LISTEN state), then return this connection to LISTEN state and return. '
                   'The user need not be informed."')
    active_rst = ('§3.10.7.4 second, SYN-RECEIVED: "If this connection was initiated with an active OPEN (i.e., '
                  'came from SYN-SENT state), then the connection was refused; signal the user \'connection '
                  'refused\'."')
    rst_window = ('§3.10.7.4 second (1) and (3) (RFC 5961 §3.2; §3.5.3: "In all states except SYN-SENT, all reset '
                  '(RST) segments are validated by checking their SEQ fields"): outside the window "silently drop the '
                  'segment"; inside it, not at RCV.NXT, "TCP endpoints MUST send an acknowledgment (challenge ACK)"')
    old_syn = ('§3.10.7.4 first: a retransmission of the SYN is not acceptable (it lies below RCV.NXT) and '
               '"an acknowledgment should be sent in reply"; a retransmitted SYN,ACK answers it as well')
    other_syn = ('§3.10.7.4 fourth, SYN-RECEIVED: "If the connection was initiated with a passive OPEN, then '
                 'return this connection to the LISTEN state and return"; RFC 5961 §4.2 answers a challenge ACK; '
                 'RFC 793 reset a connection on a SYN in the window')
    bad_ack = ('§3.10.7.4 fifth, SYN-RECEIVED: "If SND.UNA < SEG.ACK =< SND.NXT, then enter ESTABLISHED state ... '
               'If the segment acknowledgment is not acceptable, form a reset segment" "<SEQ=SEG.ACK><CTL=RST>" '
               '"and send it."')
    no_ack = '§3.10.7.4 fifth: "if the ACK bit is off, drop the segment and return"'
    fin = ('§3.10.7.4 fifth, then eighth: the acceptable ACK enters ESTABLISHED; the FIN then "Enter the CLOSE-WAIT '
           'state" and is acknowledged')
    accepted = ('§3.10.7.4 fifth, SYN-RECEIVED: "If SND.UNA < SEG.ACK =< SND.NXT, then enter ESTABLISHED state and '
                'continue processing"; seventh: "Once in the ESTABLISHED state, it is possible to deliver segment data"')
    to_listen = Reply(None, name="back to LISTEN", after="LISTEN")
    data_in = (Reply("A", ack="SEG.SEQ+SEG.LEN", name="ACK of the data", follow="SEG.SEQ+SEG.LEN+1"),
               Reply(None, name="ACK of the data delayed", follow="SEG.SEQ+SEG.LEN+1"))
    rows = [
        ("SYN-RECEIVED", "RST", "left-edge", None, "MUST-11", "A7", (to_listen,), "LISTEN", "second", passive_rst),
        ("SYN-RECEIVED", "RST", "inside", None, "RFC5961-3.2", "C2",
         (_CHALLENGE, Reply(None, name="reset (RFC 793)", after="LISTEN")), "SYN-RECEIVED", "second", rst_window),
        ("SYN-RECEIVED", "RST", "outside-right", None, "RFC5961-3.2", "C3", (SILENCE,), "SYN-RECEIVED", "second",
         rst_window),
        ("SYN-RECEIVED", "SYN", "outside-left", None, "R9293-3.10.7.4/first", "A12",
         (_ACK, Reply("SA", seq="ISS", ack="RCV.NXT", name="SYN,ACK retransmitted")), "SYN-RECEIVED", "first",
         old_syn),
        ("SYN-RECEIVED", "SYN", "inside", None, "R9293-3.10.7.4/first", "A12",
         (to_listen, _CHALLENGE, Reply("R", name="reset (RFC 793)", after="LISTEN", tolerate="A")),
         "SYN-RECEIVED", "fourth", other_syn),
        ("SYN-RECEIVED", "ACK", "left-edge", "old", "R9293-3.10.7.4/fifth", "A11", (_RST_FROM_ACK,), "SYN-RECEIVED",
         "fifth", bad_ack),
        ("SYN-RECEIVED", "ACK", "left-edge", "unsent", "R9293-3.10.7.4/fifth", "A11", (_RST_FROM_ACK,),
         "SYN-RECEIVED", "fifth", bad_ack),
        ("SYN-RECEIVED", "FIN", "left-edge", None, "R9293-3.10.7.4/fifth", "A11", (SILENCE,), "SYN-RECEIVED", "fifth",
         no_ack),
        ("SYN-RECEIVED", "no flags", "left-edge", None, "R9293-3.10.7.4/fifth", "A11", (SILENCE,), "SYN-RECEIVED",
         "fifth", no_ack),
        ("SYN-RECEIVED", "data+ACK", "left-edge", "acceptable", "R9293-3.10.7.4/fifth", "A11", data_in,
         "ESTABLISHED", "fifth", accepted),
        ("SYN-RECEIVED", "FIN+ACK", "left-edge", "acceptable", "R9293-3.10.7.4/fifth", "A11",
         (Reply("A", seq="SND.NXT", ack="SEG.SEQ+1", name="ACK of the FIN"),), "CLOSE-WAIT", "fifth", fin),
        ("SYN-RECEIVED-active", "RST", "left-edge", None, "MUST-11", "A7",
         (Reply(None, name="connection refused", after="CLOSED"),), "CLOSED", "second", active_rst),
        ("SYN-RECEIVED-active", "data+ACK", "left-edge", "acceptable", "MUST-10", "A6", data_in, "ESTABLISHED",
         "fifth", accepted),
        ("SYN-RECEIVED-active", "ACK", "left-edge", "unsent", "R9293-3.10.7.4/fifth", "A11", (_RST_FROM_ACK,),
         "SYN-RECEIVED-active", "fifth", bad_ack),
    ]
    out = []
    for state, cls, pos, kind, rid, crow, answers, after, step, rfc in rows:
        follow_at = "SEG.SEQ+SEG.LEN" if answers is data_in else "RCV.NXT"
        out.append(Row(state, cls, pos, f"§3.10.7.4 {step}", rid, "MUST", answers, after, rfc, crow, kind, follow_at))
    return out


# -- the synchronized states (§3.10.7.4) --------------------------------------------------
_RESET = Reply(None, name="reset (RFC 793: a RST in the window is valid)", after="CLOSED")
_F1 = Reply(None, name="RST ignored in TIME-WAIT (RFC 1337 F1)", after="TIME-WAIT")


def _rst_rows(state: str) -> list[Row]:
    rule1 = ('§3.10.7.4 second (1): "If the RST bit is set and the sequence number is outside the current '
             'receive window, silently drop the segment."')
    rule2 = ('§3.10.7.4 second (2): "If the RST bit is set and the sequence number exactly matches the next '
             'expected sequence number (RCV.NXT), then TCP endpoints MUST reset the connection"')
    rule3 = ('§3.10.7.4 second (3): "If the RST bit is set and the sequence number does not exactly match the '
             'next expected sequence value, yet is within the current receive window, TCP endpoints MUST send '
             'an acknowledgment (challenge ACK): <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>"; a stack without RFC 5961 '
             'accepts the RST ("For stacks implementing the protection described in RFC 5961, the three checks below '
             'apply")')
    reset = Reply(None, name="reset", after="CLOSED")
    exact = (reset, _F1) if state == "TIME-WAIT" else (reset,)
    window = (_CHALLENGE, _RESET, _F1) if state == "TIME-WAIT" else (_CHALLENGE, _RESET)
    if state == "TIME-WAIT":
        rule2 += '; RFC 1337 §3 (F1): "Ignore RST segments in TIME-WAIT state"'
    rows = [  # catalogue rows C1-C3 are RFC 5961 §3.2's rules 2, 3 and 1
        ("RST", "outside-left", (SILENCE,), state, rule1, "C3"),
        ("RST", "left-edge", exact, "CLOSED", rule2, "C1"),
        ("RST", "inside", window, state, rule3, "C2"),
        ("RST", "right-edge", window, state, rule3, "C2"),
        ("RST", "outside-right", (SILENCE,), state, rule1, "C3"),
        ("RST+ACK", "left-edge", exact, "CLOSED", rule2, "C1"),
    ]
    # Linux applies RFC 1337's F1 to a RST at RCV.NXT only with net.ipv4.tcp_rfc1337 = 1.
    settings = ("net.ipv4.tcp_rfc1337",) if state == "TIME-WAIT" else ()
    return [Row(state, cls, pos, "§3.10.7.4 second", "RFC5961-3.2", "MUST", answers, after, rfc, crow,
                settings=settings if pos == "left-edge" else ()) for cls, pos, answers, after, rfc, crow in rows]


def _syn_rows(state: str) -> list[Row]:
    old = ('§3.10.7.4 first: a segment below the window is not acceptable: "an acknowledgment should be sent '
           'in reply ... <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>"; §3.10.7.4 fourth answers any SYN the same way')
    fourth = ('§3.10.7.4 fourth: "if the SYN bit is set, irrespective of the sequence number, TCP endpoints MUST '
              'send a \'challenge ACK\' to the remote peer:" "<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>" (RFC 5961 §4.2); '
              'RFC 793 answered a SYN in the window with a reset')
    rfc793 = Reply("R", name="reset (RFC 793)", after="CLOSED", tolerate="A")
    old_answers = (_ACK, SILENCE) if state == "TIME-WAIT" else (_ACK,)
    rows = [("SYN", "outside-left", old_answers, old, "first", "R9293-3.10.7.4/fourth", "C4" if state != "TIME-WAIT"
             else "E6")]
    if state != "TIME-WAIT":  # a SYN above RCV.NXT in TIME-WAIT may open a new incarnation (cases/time_wait)
        rows += [(cls, "inside", (_CHALLENGE, rfc793), fourth, "fourth", "RFC5961-4.2", "C4")
                 for cls in ("SYN", "SYN+ACK", "SYN+FIN")]
    return [Row(state, cls, pos, f"§3.10.7.4 {step}", rid, "MUST", answers, state, rfc, crow)
            for cls, pos, answers, rfc, step, rid, crow in rows]


def _ack_rows(state: str) -> list[Row]:
    unacceptable = ('§3.10.7.4 first: "If an incoming segment is not acceptable, an acknowledgment should be '
                    'sent in reply (unless the RST bit is set, if so drop the segment and return): '
                    '<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>"')
    duplicate = ('§3.10.7.4 fifth: "If the ACK is a duplicate (SEG.ACK =< SND.UNA), it can be ignored"; an ACK '
                 'of nothing new asks for no answer')
    unsent = ('§3.10.7.4 fifth: "If the ACK acks something not yet sent (SEG.ACK > SND.NXT), then send an ACK, '
              'drop the segment, and return."')
    no_ack = '§3.10.7.4 fifth: "if the ACK bit is off, drop the segment and return"'
    tw = state == "TIME-WAIT"
    # TIME-WAIT: "The only thing that can arrive in this state is a retransmission of the remote FIN"; the
    # catalogue (E3) lets a stack answer other segments or stay silent, never with a RST.
    answered = (_ACK, SILENCE) if tw else (_ACK,)
    unsent_answers = (_ACK, SILENCE) if state in ("LAST-ACK", "TIME-WAIT") else (_ACK,)
    row_b1 = "E3" if tw else "B1"
    rows = [
        # "it can be ignored" lets a stack answer too (smoltcp ACKs a duplicate in LAST-ACK, deliberately)
        ("ACK", "left-edge", None, (SILENCE, _ACK) if state in ("LAST-ACK", "TIME-WAIT") else (SILENCE,), "fifth",
         "R9293-3.10.7.4/first" if tw else "R9293-3.10.7.4/fifth", "E3" if tw else "B5", duplicate),
        ("ACK", "outside-left", None, answered, "first", "R9293-3.10.7.4/first", row_b1, unacceptable),
        ("ACK", "outside-right", None, answered, "first", "R9293-3.10.7.4/first", row_b1, unacceptable),
        ("ACK", "left-edge", "unsent", unsent_answers, "fifth", "R9293-3.10.7.4/fifth", "B5", unsent),
        ("FIN", "left-edge", None, (SILENCE,), "fifth", "R9293-3.10.7.4/fifth/noack", "G3", no_ack),
        ("no flags", "left-edge", None, (SILENCE,), "fifth", "R9293-3.10.7.4/fifth/noack", "G3", no_ack),
    ]
    return [Row(state, cls, pos, f"§3.10.7.4 {step}", rid, "MUST", answers, state, rfc, crow, kind)
            for cls, pos, kind, answers, step, rid, crow, rfc in rows]


_NEXT_ON_FIN = {"ESTABLISHED": "CLOSE-WAIT", "FIN-WAIT-1": "CLOSING", "FIN-WAIT-2": "TIME-WAIT"}


def _text_rows(state: str) -> list[Row]:
    """Data and FIN: §3.10.7.4 first (acceptability, trimming), seventh (text), eighth (FIN)."""
    if state in PEER_FIN_SEEN:
        ignored = ('§3.10.7.4 seventh, CLOSE-WAIT/CLOSING/LAST-ACK/TIME-WAIT: "This should not occur since a FIN '
                   'has been received from the remote side. Ignore the segment text."')
        again = ('§3.10.7.4 first: a retransmitted FIN lies below RCV.NXT, "an acknowledgment should be sent in reply"; '
                 'eighth, TIME-WAIT: "Remain in the TIME-WAIT state. Restart the 2 MSL time-wait timeout."')
        rows = [Row(state, "data+ACK", "left-edge", "§3.10.7.4 seventh", "R9293-3.10.7.4/seventh", "MUST",
                    (_ACK, Reply(None, name="silence")), state, ignored, "D9"),
                Row(state, "FIN+ACK", "outside-left", "§3.10.7.4 eighth",
                    "R9293-3.10.7.4/fifth" if state == "TIME-WAIT" else "R9293-3.10.7.4/first", "MUST",
                    (_ACK,), state, again, "E2" if state == "TIME-WAIT" else "B1")]
        return rows
    accepted = ('§3.10.7.4 first: "If a segment\'s contents straddle the boundary between old and new, only the '
                'new parts are processed"; seventh: the text is accepted and RCV.NXT advanced')
    held = ('§3.10.7.4 first: "Segments with higher beginning sequence numbers SHOULD be held for later '
            'processing"; the segment may be acknowledged at once (MAY-13)')
    edge = ('§3.10.7.4 first: the first octet lies in the window, so the segment is acceptable, trimmed to the '
            'window ("only the new parts are processed") and held beyond RCV.NXT')
    unacceptable = ('§3.10.7.4 first: "If an incoming segment is not acceptable, an acknowledgment should be sent '
                    'in reply ... <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>"')
    unsent = ('§3.10.7.4 fifth: "If the ACK acks something not yet sent (SEG.ACK > SND.NXT), then send an ACK, '
              'drop the segment, and return."')
    old_ack = ('§3.10.7.4 fifth: "If the ACK is a duplicate (SEG.ACK =< SND.UNA), it can be ignored"; the text is '
               'processed (seventh); RFC 5961 §5.2 (MAY-12) may discard it with an ACK instead')
    fin = (f'§3.10.7.4 eighth: "If the FIN bit is set, signal the user \'connection closing\' ... advance RCV.NXT '
           f'over the FIN, and send an acknowledgment for the FIN"; {state} → {_NEXT_ON_FIN[state]}')
    taken = (Reply("A", seq="SND.NXT", ack="SEG.SEQ+SEG.LEN", name="ACK of the data", follow="SEG.SEQ+SEG.LEN+1"),
             Reply(None, name="ACK of the data delayed", follow="SEG.SEQ+SEG.LEN+1"))
    hold = (Reply("A", seq="SND.NXT", ack="RCV.NXT", name="held, duplicate ACK at once", follow="SEG.SEQ+SEG.LEN"),
            Reply(None, name="held, no ACK", follow="SEG.SEQ+SEG.LEN"))
    edge_answers = (Reply("A", seq="SND.NXT", ack="RCV.NXT", name="duplicate ACK at once"),
                    Reply(None, name="no ACK"))
    dropped = (Reply("A", seq="SND.NXT", ack="RCV.NXT", name="ACK <SEQ=SND.NXT><ACK=RCV.NXT>"),)
    # SND.UNA-1 on a connection where the target has sent nothing acknowledges octets before its ISS:
    # RFC 5961 §5.2 (MAY-12) lets a stack discard it with an ACK; RFC 9293 lets it ignore the ACK.
    strict = (Reply("A", seq="SND.NXT", ack="RCV.NXT", name="discarded with an ACK (RFC 5961 §5.2)",
                    follow="RCV.NXT"),)  # the follow-up then lies beyond a gap: a duplicate ACK
    rows = [
        ("data+ACK", "outside-left", None, taken, "first", "R9293-3.10.7.4/first", "B4", accepted, "SEG.SEQ+SEG.LEN"),
        ("data+ACK", "left-edge", None, taken, "seventh", "R9293-3.10.7.4/first", "B1", accepted, "SEG.SEQ+SEG.LEN"),
        ("data+ACK", "inside", None, hold, "first", "SHLD-31", "B3", held, "RCV.NXT"),
        ("data+ACK", "right-edge", None, edge_answers, "first", "R9293-3.10.7.4/first", "B1", edge, "RCV.NXT"),
        ("data+ACK", "outside-right", None, dropped, "first", "R9293-3.10.7.4/first", "B1", unacceptable, "RCV.NXT"),
        ("data+ACK", "left-edge", "unsent", dropped, "fifth", "R9293-3.10.7.4/fifth", "B5", unsent, "RCV.NXT"),
        ("data+ACK", "left-edge", "old", taken + strict, "fifth", "R9293-3.10.7.4/fifth", "B5", old_ack,
         "SEG.SEQ+SEG.LEN"),
    ]
    out = [Row(state, cls, pos, f"§3.10.7.4 {step}", rid, "SHOULD" if rid.startswith("SHLD") else "MUST", answers,
               state, rfc, crow, kind, follow_at)
           for cls, pos, kind, answers, step, rid, crow, rfc, follow_at in rows]
    out.append(Row(state, "FIN+ACK", "left-edge", "§3.10.7.4 eighth", "R9293-3.6", "MUST",
                   (Reply("A", seq="SND.NXT", ack="SEG.SEQ+1", name="ACK of the FIN"),), _NEXT_ON_FIN[state], fin,
                   {"ESTABLISHED": "D3", "FIN-WAIT-1": "D4", "FIN-WAIT-2": "D1"}[state]))
    return out


def _synchronized() -> list[Row]:
    return [row for state in SYNCHRONIZED
            for row in _rst_rows(state) + _syn_rows(state) + _ack_rows(state) + _text_rows(state)]


TABLE: tuple = tuple(_listen() + _syn_sent() + _syn_received() + _synchronized())


def value(expr: str, seg: dict) -> int:
    """An RFC expression over the probe (`seg`: SEG.SEQ, SEG.ACK, SEG.LEN) and the connection
    (SND.UNA, SND.NXT, RCV.NXT, RCV.WND, ISS as the target's): "SEG.SEQ+SEG.LEN", "SEG.ACK", "0"."""
    total = 0
    for sign, term in re.findall(r"([+-]?)([A-Z.]+|\d+)", expr.replace(" ", "")):
        n = int(term) if term.isdigit() else seg[term]
        total += -n if sign == "-" else n
    return total % (1 << 32)

