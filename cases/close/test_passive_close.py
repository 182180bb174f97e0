"""Passive close (RFC 9293 §3.6 case 2, Figure 12): the peer closes first, the target's user follows."""
import time

from harness.markers import requirement
from harness.segments import Seg


def close_wait(lab, conn, sock):
    """Peer FIN → ACK of it; the application reads end of stream in CLOSE-WAIT (§3.6 case 2)."""
    with lab.step("the peer's FIN: CLOSE-WAIT", "R9293-3.6", gate=True):
        conn.fin()
        conn.expect(Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="ACK of the peer's FIN"))
        assert lab.target.recv(sock, timeout=1.0) == b"", "recv() after the peer's FIN must report end of stream"
        assert lab.target.state(sock) == "CLOSE-WAIT"


@requirement("R9293-3.6", "MUST", row="D3")
def test_peer_fin_then_close_retransmits_fin_until_acked_then_deletes(lab):
    """§3.6 case 2: "the receiving TCP endpoint can ACK it and tell the user that the connection is
    closing. The user will respond with a CLOSE, upon which the TCP endpoint can send a FIN ...
    then waits until its own FIN is acknowledged whereupon it deletes the connection";
    case 1: segments up to and including FIN "will be retransmitted until acknowledged"."""
    conn, _, sock = lab.passive_open()
    close_wait(lab, conn, sock)
    lab.target.close(sock)
    fin = conn.expect(Seg("FA", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="FIN at SND.NXT"))
    assert lab.target.conn_state(conn.dport, conn.sport) == "LAST-ACK"
    # The peer withholds its ACK: the same FIN must come again.
    conn.expect(Seg("FA", seq=fin.seq, ack=conn.snd_nxt, length=0, note="retransmitted FIN"),
                within=lab.timing.retransmit)
    conn.ack()
    assert lab.target.conn_state(conn.dport, conn.sport) == "CLOSED"


@requirement("R9293-3.10.7.1", "MUST", row="C9")
def test_data_after_last_ack_completed_gets_rst_from_closed(lab):
    """§3.10.7.1 CLOSED: "If the ACK bit is on, <SEQ=SEG.ACK><CTL=RST>" — once LAST-ACK has deleted
    the TCB (§3.10.7.4 fifth: "If our FIN is now acknowledged, delete the TCB"), a segment for the
    old connection is treated as one for a closed port."""
    conn, _, sock = lab.passive_open()
    close_wait(lab, conn, sock)
    with lab.step("LAST-ACK: the FIN, its ACK deletes the TCB", "R9293-3.6", gate=True):
        lab.target.close(sock)
        conn.expect(Seg("FA", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="FIN at SND.NXT"))
        conn.ack()
        assert lab.target.conn_state(conn.dport, conn.sport) == "CLOSED"
    conn.send(b"late data")
    conn.expect_next(Seg("R", seq=conn.rcv_nxt, note="SEQ = SEG.ACK, no ACK flag"),
                     why="data for a deleted connection must get a RST")


@requirement("R9293-3.6", "INFO", row="D3")
def test_close_right_after_peer_fin_combines_ack_and_fin_or_not(lab):
    """§3.6 case 2 lets the endpoint "ACK it" and later "send a FIN"; Figure 12 shows the ACK and
    the FIN as separate segments, but an implementation may delay the ACK and let the FIN carry it.
    Recorded: whether a close right after the peer's FIN makes one FIN,ACK acknowledge that FIN."""
    conn, _, sock = lab.passive_open()
    # Data first: a delayed ACK is then longer (Linux: ~4 ms on a fresh connection, ~40 ms after
    # data), so the outcome reflects the stack's choice rather than how fast the agent answered.
    lab.data_acked(conn, b"request", note="ACK of the data")
    assert lab.target.recv(sock, timeout=1.0) == b"request"
    conn.fin()
    # Make sure the FIN was processed before the close (otherwise this would be a simultaneous close).
    deadline = time.monotonic() + 1.0
    while lab.target.state(sock) != "CLOSE-WAIT":
        assert time.monotonic() < deadline, "the peer's FIN did not move the target to CLOSE-WAIT"
    lab.target.close(sock)
    ack_of_fin = conn.snd_nxt
    first = conn.expect(Seg("FA", seq=conn.rcv_nxt, ack=ack_of_fin, length=0, note="FIN carrying the ACK")
                        | Seg("A", seq=conn.rcv_nxt, ack=ack_of_fin, length=0, note="ACK alone"))
    if "F" in str(first.flags):
        lab.choice("ack_of_peer_fin", "combined: one FIN,ACK segment")
    else:
        lab.choice("ack_of_peer_fin", "separate: ACK, then FIN,ACK")
        conn.expect(Seg("FA", seq=conn.rcv_nxt, ack=ack_of_fin, length=0, note="FIN at SND.NXT"))
    conn.ack()
    assert lab.target.conn_state(conn.dport, conn.sport) == "CLOSED"
