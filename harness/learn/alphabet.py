"""The learner's abstract inputs and outputs, and how a segment is named.

Inputs are the reference's (Fiterau-Brostean et al., CAV 2016): segments the peer sends on one
connection, and the socket calls the target's application makes. Outputs name the target's
segments by their control bits, annotated only where SEQ or ACK is not what the connection
expects, so a model stays finite and reads like the RFC's pictures:

    SA          a SYN-ACK                  A(a-1)    an ACK one below the peer's SND.NXT
    RA(s=0)     a RST,ACK with SEQ 0       A+FA      an ACK, then a FIN
    TIMEOUT     nothing before the barrier ok;FA     the call returned, and a FIN went out
"""
from ..segments import seq_diff

SILENT = "TIMEOUT"

# Peer segments: control bits, payload.
SEGMENTS = {"SYN": ("S", b""), "SYNACK": ("SA", b""), "ACK": ("A", b""), "FIN": ("FA", b""),
            "RST": ("R", b""), "DATA": ("PA", b"x")}
SERVER = ["SYN", "ACK", "FIN", "RST", "DATA", "ACCEPT", "CLOSE"]
CLIENT = ["CONNECT", "SYNACK", "ACK", "FIN", "RST", "DATA", "CLOSE"]
ALPHABETS = {"server": SERVER, "client": CLIENT}
# Inputs that consume sequence space: the target may owe a (delayed) ACK for them.
CONSUMING = {"SYN", "SYNACK", "FIN", "DATA"}


def offset(prefix: str, d: int) -> str:
    """'' when d is 0, `s+1`, `a-2` for small offsets, `s?` for any other."""
    if d == 0:
        return ""
    return f"{prefix}{d:+d}" if -2 <= d <= 2 else f"{prefix}?"


def name_segment(flags: str, seq: int, ack: int, length: int, rcv_nxt: int | None, snd_nxt: int,
                 irs: int | None) -> str:
    """One target segment in the model's notation: its flags, then what deviates. SEQ is
    compared with the peer's RCV.NXT (a SYN's with the target's first ISN), ACK with the peer's
    SND.NXT after its input."""
    notes = []
    if "S" in flags:
        expected = irs
    else:
        expected = rcv_nxt
    if seq == 0 and expected != 0:
        notes.append("s=0")
    elif expected is not None:
        note = offset("s", seq_diff(seq, expected))
        if note:
            notes.append(note)
    if "A" in flags:
        if ack == 0 and snd_nxt != 0:
            notes.append("a=0")
        else:
            note = offset("a", seq_diff(ack, snd_nxt))
            if note:
                notes.append(note)
    if length:
        notes.append(f"len={length}")
    return flags + (f"({','.join(notes)})" if notes else "")


def join(segments: list[str], call: str | None = None) -> str:
    """A step's output: the call's result (socket inputs), then the segments, or TIMEOUT."""
    seen = "+".join(segments)
    if call is not None:
        return f"{call};{seen}" if seen else call
    return seen or SILENT
