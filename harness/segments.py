"""What a case expects of a segment, and how segments are written for people.

A `Seg` names only the fields a case cares about; everything else is ignored. Flags are compared
as a set: PSH, ECE, CWR and AE are ignored unless the case names them, and `tolerate` lists flags that
may or may not be present (RFC 9293 lets some RSTs carry ACK). `a | b` builds alternatives.

One rule holds for every expectation alike: an expected pure ACK <SEQ=s><ACK=a><CTL=ACK> may arrive
piggybacked on a retransmission of the target's earlier data or FIN (a segment ending at or before
s, past the peer's last ACK, that carries the same ACK): RFC 9293 §3.10.7.4 seventh, "This acknowledgment should be
piggybacked on a segment being transmitted if possible", and MUST-40 lets the ACK wait up to 0.5 s,
by when a retransmission may be the next segment out.
"""
from dataclasses import dataclass, field

from scapy.layers.inet import TCP

MOD = 1 << 32
_FLAG_NAMES = {"F": "FIN", "S": "SYN", "R": "RST", "P": "PSH", "A": "ACK", "U": "URG", "E": "ECE", "C": "CWR",
               "N": "AE"}
_ORDER = "SFRPAUECN"
_IGNORED = frozenset("PECN")  # PSH and the ECN bits (ECE, CWR, AE) unless a case names them


def seq_add(a: int, n: int) -> int:
    return (a + n) % MOD


def seq_diff(a: int, b: int) -> int:
    """a - b as a signed distance in sequence space (RFC 9293 §3.4 modular arithmetic)."""
    d = (a - b) % MOD
    return d - MOD if d >= MOD // 2 else d


def seq_lt(a: int, b: int) -> bool:
    return seq_diff(a, b) < 0


def flag_set(flags) -> frozenset:
    return frozenset(str(flags))


def flag_words(flags) -> str:
    return ",".join(_FLAG_NAMES[f] for f in _ORDER if f in str(flags)) or "<none>"


def flag_letters(flags) -> str:
    """The control bits that matter to a check, in a fixed order ("SA", "FA", "RA"): PSH and the
    ECN bits left out."""
    return "".join(f for f in _ORDER if f in str(flags) and f not in _IGNORED)


def seg_len(tcp: TCP) -> int:
    """SEG.LEN: payload plus one for SYN and one for FIN."""
    flags = str(tcp.flags)
    return len(bytes(tcp.payload)) + ("S" in flags) + ("F" in flags)


@dataclass(frozen=True)
class Seg:
    """An expected segment: `Seg("RA", seq=x, ack=y)`; fields left None are not checked."""

    flags: str
    seq: int | None = None
    ack: int | None = None
    payload: bytes | None = None
    length: int | None = None  # payload length, when the bytes themselves do not matter
    window: int | None = None
    tolerate: str = ""
    note: str = ""

    def __or__(self, other) -> "Alternatives":
        return Alternatives((self,)) | other

    @property
    def pure_ack(self) -> bool:
        """An ACK with no data and no other control bit, at a given SEQ and ACK."""
        return (flag_set(self.flags) == {"A"} and not self.tolerate and self.seq is not None
                and self.ack is not None and (self.length == 0 or self.payload == b""))

    def matches(self, tcp: TCP, acked: int | None = None) -> bool:
        """`acked`: the ACK field of the peer's last segment. Only sequence space past it (sent by
        the target, not yet acknowledged) can be retransmitted, so only then may a pure ACK ride
        on a retransmission."""
        return self.matches_exactly(tcp) or (self.pure_ack and acked is not None and self.piggybacked(tcp, acked))

    def piggybacked(self, tcp: TCP, acked: int) -> bool:
        """`tcp` retransmits sequence space before SEQ that the peer has not acknowledged, and
        carries this ACK."""
        got = flag_set(tcp.flags)
        if "A" not in got or got & {"S", "R"} or tcp.ack != self.ack % MOD or seg_len(tcp) == 0:
            return False
        if self.window is not None and tcp.window != self.window:
            return False
        end = seq_add(tcp.seq, seg_len(tcp))
        return (seq_diff(tcp.seq, self.seq) < 0 and seq_diff(end, self.seq) <= 0
                and seq_diff(end, acked) > 0)

    def matches_exactly(self, tcp: TCP) -> bool:
        want = flag_set(self.flags)
        got = flag_set(tcp.flags)
        loose = (_IGNORED - want) | flag_set(self.tolerate)
        if (want - loose) != (got - loose):
            return False
        if self.seq is not None and tcp.seq != self.seq % MOD:
            return False
        if self.ack is not None and tcp.ack != self.ack % MOD:
            return False
        data = bytes(tcp.payload)
        if self.payload is not None and data != self.payload:
            return False
        if self.length is not None and len(data) != self.length:
            return False
        if self.window is not None and tcp.window != self.window:
            return False
        return True

    def describe(self, view: "SeqView") -> str:
        parts = [flag_words(self.flags) + (f" (±{flag_words(self.tolerate)})" if self.tolerate else "")]
        if self.seq is not None:
            parts.append(f"seq={view.their(self.seq)}")
        if self.ack is not None:
            parts.append(f"ack={view.ours(self.ack)}")
        if self.window is not None:
            parts.append(f"win={self.window}")
        if self.payload is not None:
            parts.append(f"len={len(self.payload)} data={self.payload[:16]!r}")
        elif self.length is not None:
            parts.append(f"len={self.length}")
        if self.note:
            parts.append(f"({self.note})")
        return " ".join(parts)


@dataclass(frozen=True)
class Alternatives:
    options: tuple = field(default_factory=tuple)

    def __or__(self, other) -> "Alternatives":
        more = other.options if isinstance(other, Alternatives) else (other,)
        return Alternatives(self.options + more)

    def match(self, tcp: TCP, acked: int | None = None):
        return next((o for o in self.options if o.matches(tcp, acked)), None)


def alternatives(*specs) -> Alternatives:
    out = Alternatives()
    for s in specs:
        out = out | s
    return out


@dataclass
class SeqView:
    """Writes sequence numbers relative to the ISNs, as Wireshark does: ours from ISS, theirs from IRS."""

    iss: int | None = None
    irs: int | None = None

    def ours(self, n: int) -> str:
        return str(seq_diff(n, self.iss)) if self.iss is not None else f"{n:#x}"

    def their(self, n: int) -> str:
        # Before the target's SYN (a RST from a closed port) there is no IRS: absolute numbers.
        return str(seq_diff(n, self.irs)) if self.irs is not None else str(n)


def _options(tcp: TCP) -> str:
    out = []
    for name, value in tcp.options:
        if name == "MSS":
            out.append(f"mss {value}")
        elif name == "WScale":
            out.append(f"wscale {value}")
        elif name == "SAckOK":
            out.append("sackOK")
        elif name == "Timestamp":
            out.append(f"TS val={value[0]} ecr={value[1]}")
        elif name not in ("NOP", "EOL"):
            out.append(str(name))
    return f" [{', '.join(out)}]" if out else ""


def describe(tcp: TCP, view: SeqView, from_target: bool) -> str:
    """One segment in relative numbers: `SYN,ACK seq=0 ack=1 win=64240 len=0 [mss 1460]`."""
    flags = str(tcp.flags)
    seq = view.their(tcp.seq) if from_target else view.ours(tcp.seq)
    text = f"{flag_words(flags)} seq={seq}"
    if "A" in flags:
        text += f" ack={view.ours(tcp.ack) if from_target else view.their(tcp.ack)}"
    return text + f" win={tcp.window} len={len(bytes(tcp.payload))}" + _options(tcp)
