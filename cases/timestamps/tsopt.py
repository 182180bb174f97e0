"""The Timestamps option (RFC 7323 §3.2) as the cases read and write it."""
from harness.segments import Seg


def tsval(tcp) -> int | None:
    """The TSval of a segment's Timestamps option, or None."""
    for name, value in tcp.options:
        if name == "Timestamp":
            return value[0]
    return None


def tsecr(tcp) -> int | None:
    """The TSecr of a segment's Timestamps option, or None."""
    for name, value in tcp.options:
        if name == "Timestamp":
            return value[1]
    return None


def ts_option(conn, value: int | None = None):
    """A Timestamps option from the peer: TSval `value` (default: the peer's clock now), TSecr the
    target's last TSval (§3.2: "the sender MUST echo a recently received TSval")."""
    return ("Timestamp", ((conn.tsval() if value is None else value) % (1 << 32), conn.ts_recent or 0))


def timestamps_open(lab):
    """Passive open with the Timestamps option in the peer's SYN; UNSUPPORTED if the target does
    not answer with it (§3.2: negotiated only when "both <SYN> and <SYN,ACK> contain TSopt")."""
    lab.target.require("timestamps")
    conn, listener, sock = lab.passive_open(timestamps=True)
    lab.need(conn.timestamps, "the target's SYN,ACK carried no Timestamps option", "net.ipv4.tcp_timestamps")
    return conn, listener, sock


def data_acked_at(lab, conn, data: bytes, value: int):
    """The peer sends `data` at SND.NXT with TSval `value`; the target ACKs exactly it. Afterwards
    the target's TS.Recent is `value` (§4.3 (2): SEG.TSval >= TS.Recent, SEG.SEQ <= Last.ACK.sent)."""
    with lab.step("data acknowledged", "R9293-3.10.7.4/seventh/established", gate=True):
        conn.send(data, options=[ts_option(conn, value)])
        return conn.expect(Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="ACK of the peer's data"))
