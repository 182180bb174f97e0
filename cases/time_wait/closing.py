"""Bringing the target into TIME-WAIT as the active closer (RFC 9293 §3.6, Figure 12)."""
from harness.segments import Seg, seq_add


def tsval(tcp) -> int | None:
    """The TSval of a segment's Timestamp option, or None."""
    for name, value in tcp.options:
        if name == "Timestamp":
            return value[0]
    return None


def close_first(lab, conn, sock):
    """The target closes; the peer ACKs its FIN, then sends its own FIN, which the target ACKs.

    Afterwards conn.rcv_nxt is the target's SND.NXT (its FIN + 1) and conn.snd_nxt the peer's
    (its FIN + 1). Returns the peer's FIN as sent: its TSval is the last one the target saw.
    """
    their_fin = lab.target_fin(conn, sock)
    # §3.10.7.4 eighth, FIN-WAIT-2: "Enter the TIME-WAIT state", after "an acknowledgment for the FIN".
    with lab.step("the peer's FIN is ACKed: TIME-WAIT", "R9293-3.10.7.4/eighth", gate=True):
        conn.ack()
        fin = conn.fin()
        conn.expect(Seg("A", seq=seq_add(their_fin.seq, 1), ack=conn.snd_nxt, length=0,
                        note="ACK of the peer's FIN"))
    return fin


def into_time_wait(lab, **conn_kw):
    """Passive open (the listener stays open), then close_first: (conn, listener, peer's FIN)."""
    conn, listener, sock = lab.passive_open(**conn_kw)
    fin = close_first(lab, conn, sock)
    return conn, listener, fin
