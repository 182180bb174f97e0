"""A learned model read against the state × event matrix's oracle (harness/oracle.py).

Every learned transition whose (RFC 9293 state, input) is a row of the oracle table is checked:
the output the stack gave must be one of the answers the RFC allows there, written in the model's
own notation (harness/learn/alphabet.py), and where the mapper can still see the connection, the
state it is in afterwards must be the one that answer leaves it in. An answer the RFC does not
allow is a "forbidden" finding, with the requirement id, the §3.10.7 step and the RFC sentence.

What an abstract input is on the wire (harness/learn/lanes.py) decides which row it meets:

* SEQ is the target's last ACK (RCV.NXT: the oracle's position "left-edge"); before the target
  ACKed anything, a SYN carries the peer's ISS and anything else ISS+1. In LISTEN and SYN-SENT the
  table's rows have no position.
* ACK is the peer's RCV.NXT, the target's SND.NXT: in SYN-SENT and SYN-RECEIVED the acceptable
  ACK; in a synchronized state an ACK of nothing new (the oracle's SND.UNA), except where the
  target's FIN is out (FIN-WAIT-1, CLOSING, LAST-ACK): there it acknowledges the FIN, which no row
  of the table does. A SYN or a RST is decided at §3.10.7.4's second or fourth step, before the
  ACK field is looked at, so its ACK never matters there.
* An answer's SEQ is written against the peer's RCV.NXT (a SYN's against the target's first ISN)
  and its ACK against the peer's SND.NXT after the input: SEG.SEQ+SEG.LEN, SYN and FIN counted.
  So <SEQ=SND.NXT><ACK=RCV.NXT> to one octet of data or a SYN at RCV.NXT is "A(a-1)", to an ACK
  "A"; the ACK of a FIN <ACK=SEG.SEQ+1> is "A"; RST <SEQ=SEG.ACK> is "R", or "R(s=0)" where the
  peer knows no RCV.NXT yet (a fresh connection in LISTEN), since its ACK field is then 0.

The position is left-edge as long as the target acknowledged everything it accepted: lanes.py
waits the stack's ACK-delay bound for an ACK it is owed, so a delayed ACK is seen in its own step.

    results = check(model)          # one dict per checked transition
    requirement_for("ESTABLISHED", "RST")   # "RFC5961-3.2"
    coverage("server")              # {(tcp_state, input): row id, or why the table has no row}
"""
import re
from dataclasses import dataclass

from harness import oracle
from harness.segments import seq_diff

from .alphabet import ALPHABETS, SEGMENTS, offset
from .model import SILENT, Model

# The oracle's segment class of each peer input (alphabet.SEGMENTS gives its flags and payload).
CLASS_OF = {"SYN": "SYN", "SYNACK": "SYN+ACK", "ACK": "ACK", "FIN": "FIN+ACK", "RST": "RST", "DATA": "data+ACK"}
STATES = ("CLOSED", "LISTEN", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2",
          "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT")
FIN_OUT = ("FIN-WAIT-1", "CLOSING", "LAST-ACK")  # the target's FIN is out, not yet acknowledged
AFTER_CLOSE = ("FIN-WAIT-1", "FIN-WAIT-2", "CLOSING")  # entered only by close(): the application reads no more
_IGNORED = frozenset("PECN")  # as harness/segments.py: PSH and the ECN bits unless an answer names them
_ORDER = "SFRPAUECN"          # scapy's order, as the mapper writes flags
_INDEX = {(r.state, r.cls, r.position, r.ack_kind): r for r in oracle.TABLE}

# Data after the application closed: what the mapper's CLOSE (close(), not shutdown(SHUT_WR) as the
# matrix drives these states) adds to the table's answers for text in FIN-WAIT-1/2 and CLOSING.
_DATA_AFTER_CLOSE = oracle.Reply("R", name="reset: data after the application closed (SHLD-3)", after="CLOSED",
                                 tolerate="A")
_SHLD3 = ('RFC 9293 §3.6.1 (SHLD-3, RFC 1122 4.2.2.13): "If such a host is ... closed ... and new data arrives, '
          'it SHOULD send a RST to show that data was lost" (catalogue D5); the mapper closes with close(), so '
          'the application can no longer read')


@dataclass(frozen=True)
class Case:
    """What the table says about one (state, input) as the mapper sends it."""
    row: oracle.Row
    answers: tuple            # of oracle.Reply
    requirement: str
    position: str | None      # where the mapper's segment lies ("left-edge"; None in LISTEN, SYN-SENT)
    note: str = ""


def _oracle_state(tcp_state: str, side: str) -> str:
    # On the client side SYN-RECEIVED can only be a simultaneous open: the table's active variant.
    return "SYN-RECEIVED-active" if side == "client" and tcp_state == "SYN-RECEIVED" else tcp_state


def case(tcp_state: str | None, letter: str, side: str = "server") -> "Case | str":
    """The oracle row the mapper's segment for `letter` meets in `tcp_state`, or why there is none."""
    if letter not in SEGMENTS:
        return "a socket call: the table holds segment events only"
    if tcp_state is None:
        return "the stack did not report the connection's state"
    state = _oracle_state(tcp_state, side)
    cls = CLASS_OF[letter]
    flags = SEGMENTS[letter][0]
    if state in ("LISTEN", "SYN-SENT"):
        position = None
        kind = "acceptable" if state == "SYN-SENT" and "A" in flags else None
    elif state.startswith("SYN-RECEIVED") or state in oracle.SYNCHRONIZED:
        position = "left-edge"
        if "A" not in flags:
            kind = None
        elif state.startswith("SYN-RECEIVED"):
            kind = "acceptable"     # ACK = ISS+1
        elif "S" in flags or "R" in flags:
            kind = None             # decided before the ACK field is read (§3.10.7.4 second, fourth)
        elif state in FIN_OUT:
            kind = "fin"            # ACK = SND.NXT > SND.UNA: it acknowledges the FIN
        else:
            kind = None             # ACK = SND.NXT = SND.UNA: nothing new
    elif state == "CLOSED":
        # No TCB and no listener: §3.10.7.1, which the table has no rows for (the closed-port cases
        # check it, catalogue A5 and C9).
        return "CLOSED: §3.10.7.1 (no TCB) has no rows in the table"
    else:
        return f"{tcp_state}: not a state of the table"
    row = _INDEX.get((state, cls, position, kind))
    note = ""
    if row is None and "S" in flags and position == "left-edge" and kind is None:
        # The table probes a SYN below RCV.NXT (a retransmission) and inside the window (RCV.NXT+1);
        # the mapper's SYN lies at RCV.NXT, in the window too and not the original SYN (that had the
        # peer's ISS). §3.10.7.4 fourth treats every such SYN alike ("irrespective of the sequence
        # number": challenge ACK; RFC 793 reset an in-window SYN; SYN-RECEIVED goes back to LISTEN),
        # so the inside row's answers are the ones. TIME-WAIT has no inside row (a SYN there may
        # open a new incarnation, MAY-2): skipped below.
        row = _INDEX.get((state, cls, "inside", kind))
        if row is not None:
            note = ("the mapper's SYN lies at RCV.NXT; the table's in-window SYN row (probed at RCV.NXT+1) "
                    "holds for it: §3.10.7.4 fourth does not depend on where in the window the SYN is")
    if row is None:
        return _why_not(state, cls, kind)
    answers, requirement = row.answers, row.requirement
    if cls == "data+ACK" and state in AFTER_CLOSE:
        # The table drives these states with shutdown(SHUT_WR), so text there is still deliverable
        # and acknowledged; after the mapper's close() RFC 9293 asks for a RST instead (SHOULD):
        # both are answers the RFC allows, and the requirement this transition touches is SHLD-3.
        answers = answers + (_DATA_AFTER_CLOSE,)
        requirement = "SHLD-3"
        note = _SHLD3
    return Case(row, answers, requirement, position, note)


def _why_not(state: str, cls: str, kind: str | None) -> str:
    """Why the table has no row for the mapper's segment (each reason is a skip, never a verdict)."""
    if kind == "fin":
        return (f"in {state} the mapper's ACK field acknowledges the target's FIN (SEG.ACK = SND.NXT > SND.UNA); "
                "the table's rows there carry an ACK of nothing new, an old one or an unsent one")
    if state.startswith("SYN-RECEIVED") and cls == "ACK":
        return ("the acceptable ACK that completes the handshake: the table checks an acceptable ACK in "
                "SYN-RECEIVED only carrying data or a FIN (catalogue A1, A11)")
    if state == "SYN-SENT" and cls == "SYN+ACK":
        return "the acceptable SYN,ACK of an active open: the table checks only unacceptable ACKs in SYN-SENT (G1)"
    if cls == "FIN+ACK" and state in oracle.PEER_FIN_SEEN:
        return (f"after the peer's FIN the mapper's next FIN lies at RCV.NXT, past the first one: the table's FIN "
                f"rows in {state} are retransmissions of it (below RCV.NXT)")
    if cls.startswith("SYN") and state == "TIME-WAIT":
        return ("a SYN at RCV.NXT in TIME-WAIT: the table has rows only for one below RCV.NXT; one at or above it "
                "may open a new incarnation (MAY-2, RFC 6191), which cases/time_wait checks")
    return f"the table has no row for {cls} at RCV.NXT with ACK {kind or 'SND.UNA'} in {state}"


# -- the model's notation ---------------------------------------------------------------------
def _note(prefix: str, value: int, reference: int | None) -> str:
    """What alphabet.name_segment writes for a field `value` against `reference` ('' for none)."""
    if value == 0 and reference != 0:
        return f"{prefix}=0"
    if reference is None:
        return ""
    return offset(prefix, seq_diff(value, reference))


def _flag_order(flags) -> str:
    return "".join(f for f in _ORDER if f in flags)


@dataclass(frozen=True)
class Answer:
    """An oracle Reply as the model writes it: flags (None: TIMEOUT), flags it may carry or not,
    and the annotation its SEQ and ACK must show ('' none; None: not checked, any)."""
    flags: str | None
    tolerate: str
    seq: str | None
    ack: str | None
    name: str
    after: str

    def spelled(self) -> list[str]:
        """Every output this answer can be, readably: `*` where a field is not checked."""
        if self.flags is None:
            return [SILENT]
        out = []
        extra = [t for t in self.tolerate if t not in self.flags]
        for k in range(1 << len(extra)):
            flags = _flag_order(set(self.flags) | {t for i, t in enumerate(extra) if k >> i & 1})
            notes = [n for n in ("s*" if self.seq is None else self.seq,) if n]
            if "A" in flags:
                notes += [n for n in ("a*" if self.ack is None else self.ack,) if n]
            out.append(flags + (f"({','.join(notes)})" if notes else ""))
        return out

    def matches(self, output: str) -> bool:
        if self.flags is None:
            return output == SILENT
        segments = _segments_of(output)
        if len(segments) != 1:  # every answer the table allows is one segment (or none)
            return False
        flags, seq, ack = _parse(segments[0])
        want, got = set(self.flags), set(flags)
        loose = (_IGNORED - want) | set(self.tolerate)
        if want - loose != got - loose:
            return False
        if self.seq is not None and seq != self.seq:
            return False
        if self.ack is not None and ack != self.ack:
            return False
        return True


_SEGMENT = re.compile(r"([A-Z]*)(?:\(([^)]*)\))?$")


def _parse(name: str) -> tuple[str, str, str]:
    """'RA(s=0,a+1)' -> ('RA', 's=0', 'a+1'); '' where a field carries no annotation."""
    m = _SEGMENT.match(name)
    if m is None:
        return name, "?", "?"
    notes = (m.group(2) or "").split(",")
    seq = next((n for n in notes if n.startswith("s")), "")
    ack = next((n for n in notes if n.startswith("a")), "")
    return m.group(1), seq, ack


def _segments_of(output: str) -> list[str]:
    """The target's segments in a segment input's output."""
    return [] if output == SILENT else output.split("+")


def _segments(letter: str, output: str) -> list[str]:
    """The target's segments in any step's output (a socket call's come after its result and ';')."""
    if letter in SEGMENTS:
        return _segments_of(output)
    return output.split(";", 1)[1].split("+") if ";" in output else []


def _resets(letter: str, output: str) -> bool:
    """The step ended the lane's connection: the next input opens a new one on a new peer port."""
    return letter == "RST" or any("R" in _parse(s)[0] for s in _segments(letter, output))


def answers(c: Case, letter: str, peer_knows_rcv_nxt: bool = True) -> list[Answer]:
    """The Case's replies in the model's notation, for the segment the mapper sends for `letter`.

    The connection in numbers, as the mapper has it: the peer's RCV.NXT (the target's SND.NXT and
    SND.UNA: the target sends no data, and the rows used have no FIN of its out) or none yet; the
    segment at SEG.SEQ = the target's RCV.NXT; its ACK field the peer's RCV.NXT, 0 when unknown."""
    flags, data = SEGMENTS[letter]
    rcv_nxt = 0x10000000 if peer_knows_rcv_nxt else None
    seq = 0x50000000
    length = len(data) + ("S" in flags) + ("F" in flags)
    seg_ack = (rcv_nxt or 0) if "A" in flags else 0
    irs = None if rcv_nxt is None else rcv_nxt - 1  # SYN-SENT, SYN-RECEIVED: SND.NXT = ISS+1
    known = rcv_nxt if rcv_nxt is not None else 0x70000000  # never read where the peer knows nothing
    env = {"SEG.SEQ": seq, "SEG.ACK": seg_ack, "SEG.LEN": length, "RCV.NXT": seq, "RCV.WND": 65535,
           "SND.NXT": known, "SND.UNA": known, "ISS": known - 1}
    snd_nxt = seq + length  # the peer's SND.NXT after the input
    out = []
    for reply in c.answers:
        after = reply.after or c.row.after
        if reply.flags is None:
            out.append(Answer(None, "", None, None, reply.name, after))
            continue
        s = None if reply.seq is None else _note("s", oracle.value(reply.seq, env),
                                                 irs if "S" in reply.flags else rcv_nxt)
        a = None if reply.ack is None else _note("a", oracle.value(reply.ack, env), snd_nxt)
        out.append(Answer(reply.flags, reply.tolerate, s, a, reply.name, after))
    return out


def _same_state(expected: str, observed: str) -> bool:
    # A listener holds no TCB for the tuple: the mapper reports LISTEN (or CLOSED) where the RFC
    # says the connection is CLOSED or back in LISTEN.
    def norm(s):
        return "none" if s in ("CLOSED", "LISTEN") else ("SYN-RECEIVED" if s.startswith("SYN-RECEIVED") else s)
    return norm(expected) == norm(observed)


def _peer_knows_rcv_nxt(model: Model, word) -> bool:
    """After `word`, has the lane's connection seen the target's SYN (so the peer's RCV.NXT, the
    ACK field it sends, is known)? Every RST, either way, starts a fresh connection."""
    state, known = model.initial, False
    for letter in word:
        output, state = model.transitions[(state, letter)]
        if _resets(letter, output):
            known = False
        elif any("S" in _parse(s)[0] for s in _segments(letter, output)):
            known = True
    return known


def _catalogue_row(c: Case) -> str | None:
    if c.requirement == c.row.requirement and c.row.catalogue_row:
        return c.row.catalogue_row
    try:
        from harness.requirements import lookup
        return lookup(c.requirement).row
    except (KeyError, OSError):
        return None


# -- the check --------------------------------------------------------------------------------
def _checked(model: Model):
    """(state, its access word, its TCP state, input, Case) of every transition the table checks."""
    for state, word in model.access().items():
        tcp = model.tcp_states.get(state)
        for letter in model.alphabet:
            c = case(tcp, letter, model.side)
            if not isinstance(c, Case):
                continue
            if tcp == "LISTEN" and letter == "SYN" and model.side == "server" and "SYN" in word:
                # An earlier connection of this listener may still sit in its backlog of 1 (reset
                # or not yet accepted); a SYN dropped there is the queue's limit, not §3.10.7.2.
                continue
            yield state, word, tcp, letter, c


def checked_words(model: Model) -> dict[tuple[str, str], list[str]]:
    """The (state, input) pairs check() judges, each with the word that makes that transition
    (the state's access word, then the input): the learner measures the state after each."""
    return {(state, letter): [*word, letter] for state, word, _, letter, _ in _checked(model)}


def check(model: Model, after: dict[tuple[str, str], str | None] | None = None) -> list[dict]:
    """Every learned transition the table has a row for, with its verdict: "conforms" when the
    output is one of the answers the RFC allows (and, where the lane still sees the connection,
    the state afterwards is the one that answer leaves), "forbidden" otherwise.

    `after`: (state, input) -> the TCP state the lane saw after that state's access word and the
    input. Without it the next learned state's label stands in, which misleads where the learner
    merged two TCP states the alphabet cannot tell apart (the label is its access word's)."""
    results = []
    for state, word, tcp, letter, c in _checked(model):
        output, nxt = model.transitions[(state, letter)]
        allowed = answers(c, letter, _peer_knows_rcv_nxt(model, word))
        spelled = list(dict.fromkeys(s for a in allowed for s in a.spelled()))
        fits = [a for a in allowed if a.matches(output)]
        measured = after is not None and (state, letter) in after
        observed = after[(state, letter)] if measured else model.tcp_states.get(nxt)
        verdict, why = "conforms", ""
        if not fits:
            verdict = "forbidden"
            why = f"{output} is not among the answers {c.row.step} allows: {' | '.join(spelled)}"
        elif observed is not None and not _resets(letter, output):
            # After a RST the lane is on a new connection: the next state says nothing of this one.
            settled = [a for a in fits if _same_state(a.after, observed)]
            if not settled:
                verdict = "forbidden"
                expected = sorted({a.after for a in fits})
                why = (f"{output} is allowed, but the connection is {observed} afterwards, where that answer "
                       f"leaves it {' or '.join(expected)}")
            fits = settled or fits
        results.append({
            "state": state, "tcp_state": tcp, "input": letter, "output": output,
            "next": nxt, "next_tcp_state": observed, "next_tcp_state_measured": measured,
            "allowed": spelled, "answer": fits[0].name if fits and verdict == "conforms" else None,
            "verdict": verdict, "why": why,
            "requirement": c.requirement, "catalogue_row": _catalogue_row(c), "level": c.row.level,
            "step": c.row.step, "rfc": c.row.rfc, "row": c.row.id, "position": c.position,
            "note": c.note,
        })
    return results


def forbidden(results: list[dict]) -> list[dict]:
    return [r for r in results if r["verdict"] == "forbidden"]


def coverage(side: str = "server", alphabet=None) -> dict[tuple[str, str], str]:
    """For every RFC state and input: the oracle row the check uses, or why it skips the pair."""
    out = {}
    for tcp in STATES:
        for letter in alphabet or ALPHABETS[side]:
            c = case(tcp, letter, side)
            out[(tcp, letter)] = c.row.id if isinstance(c, Case) else f"skip: {c}"
    return out


# -- requirements of transitions ----------------------------------------------------------------
# Segments the table has no row for (see _why_not), by (state, input): the catalogue row the
# transition still belongs to.
_SEGMENT_REQUIREMENTS = {
    ("SYN-RECEIVED", "ACK"): "R9293-3.10.7.4/fifth",      # A11: an acceptable ACK establishes
    ("SYN-RECEIVED-active", "ACK"): "MUST-10",            # A6: the simultaneous open completes
    ("SYN-SENT", "SYNACK"): "R9293-3.10.7.3/fourth",      # G1
    ("FIN-WAIT-1", "ACK"): "R9293-3.6",                   # D1: the ACK of the FIN, FIN-WAIT-2
    ("FIN-WAIT-1", "FIN"): "R9293-3.10.7.4/eighth",       # D2: FIN with the ACK of ours, TIME-WAIT
    ("FIN-WAIT-1", "DATA"): "SHLD-3",                     # D5: data after close
    ("CLOSING", "ACK"): "R9293-3.6",                      # D4: simultaneous close, TIME-WAIT
    ("CLOSING", "FIN"): "R9293-3.6",
    ("CLOSING", "DATA"): "SHLD-3",
    ("LAST-ACK", "ACK"): "R9293-3.6",                     # D3: the ACK of the FIN ends the connection
    ("LAST-ACK", "FIN"): "R9293-3.6",
    ("LAST-ACK", "DATA"): "R9293-3.6",
    ("CLOSE-WAIT", "FIN"): "R9293-3.10.7.4/eighth",       # a FIN after the FIN: CLOSE-WAIT stays
    ("TIME-WAIT", "FIN"): "R9293-3.10.7.4/eighth",        # E2
    ("TIME-WAIT", "SYN"): "R9293-3.10.7.4/fourth",        # E6 (and MAY-2's new incarnation, E4)
    ("TIME-WAIT", "SYNACK"): "R9293-3.10.7.4/fourth",
}


def requirement_for(tcp_state: str | None, letter: str, side: str = "server", unread: bool | None = None) -> str | None:
    """The catalogue id a transition from `tcp_state` on `letter` touches: the oracle row's for a
    segment (the one check() uses), else the catalogue row the event belongs to; for a socket
    call, the close or accept requirement that applies there. `unread`: the held connection has
    data the application never read (unread_data()), which makes close() a reset (SHLD-3)."""
    if tcp_state is None:
        return None
    if letter in SEGMENTS:
        c = case(tcp_state, letter, side)
        if isinstance(c, Case):
            return c.requirement
        if tcp_state == "CLOSED":
            return "R9293-3.10.7.1"  # A5, C9: no TCB, a RST shaped for the segment
        return _SEGMENT_REQUIREMENTS.get((_oracle_state(tcp_state, side), letter))
    if letter == "CLOSE":
        if tcp_state in ("ESTABLISHED", "CLOSE-WAIT", "SYN-RECEIVED"):
            # RFC 1122 4.2.2.13 / RFC 9293 §3.6.1 (D6): close with data unread sends a RST; else a
            # FIN follows the data (§3.6, D1 active close, D3 passive close).
            return "SHLD-3" if unread else "R9293-3.6"
        # Elsewhere the lane holds no socket of this connection: it was closed already (FIN-WAIT-1
        # on), or the socket held is an earlier connection's, reset (LISTEN, CLOSED).
        return None
    if letter == "ACCEPT":
        if tcp_state in ("LISTEN", "CLOSED"):
            # No connection on the tuple: what accept can still return is one that was reset before
            # the application took it, and how it learns of the reset is MUST-12 (C8).
            return "MUST-12"
        if tcp_state == "SYN-RECEIVED" or tcp_state in oracle.SYNCHRONIZED:
            # A1: accept() returns once the acceptable ACK completes the handshake, not before.
            return "R9293-3.10.7.2/third"
        return None
    return None  # CONNECT: the active OPEN (§3.10.1) has no row of its own in the catalogue


def unread_data(model: Model, state: str) -> bool:
    """Does the connection reached by `state`'s access sequence hold data the application never
    read? The learner's application never reads: any DATA the target acknowledged since the
    connection began (an ACK covering it) is unread; every RST starts a fresh connection."""
    current, unread = model.initial, False
    for letter in model.access()[state]:
        tcp = model.tcp_states.get(current)
        output, current = model.transitions[(current, letter)]
        if _resets(letter, output):
            unread = False
        elif letter == "DATA" and tcp in ("SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2"):
            unread = unread or any("A" in f and ack == "" for f, _, ack in map(_parse, _segments(letter, output)))
    return unread
