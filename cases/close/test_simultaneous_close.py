"""Simultaneous close (RFC 9293 §3.6 case 3, Figure 13): FINs cross, both ends pass CLOSING."""
from harness.markers import requirement
from harness.segments import Seg, describe, seq_add


@requirement("R9293-3.6", "MUST", row="D4")
def test_fin_not_acking_ours_leads_to_closing_then_time_wait(lab):
    """§3.10.7.4 eighth, FIN-WAIT-1: if our FIN is not ACKed "enter the CLOSING state" (after sending
    "an acknowledgment for the FIN"); §3.6 case 1: the FIN is "retransmitted until acknowledged";
    fifth, CLOSING: "if the ACK acknowledges our FIN, then enter the TIME-WAIT state"."""
    conn, _, sock = lab.passive_open()
    fin = lab.target_fin(conn, sock, shutdown=True)
    # The peer's FIN crosses the target's: its ACK field stops short of the target's FIN.
    start = len(conn.received)
    conn.fin(ack=fin.seq)
    ack = conn.expect(Seg("A", seq=seq_add(fin.seq, 1), ack=conn.snd_nxt, length=0, note="ACK of the peer's FIN"))
    extra = [t for t in conn.received[start:-1] if "F" not in str(t.flags)]
    assert not extra, "before the ACK of the peer's FIN the target sent: " + "; ".join(
        describe(t, conn.view, True) for t in extra)
    assert lab.target.state(sock) == "CLOSING"
    if "F" not in str(ack.flags):  # the ACK came alone; else it rode on the FIN's retransmission
        conn.expect(Seg("FA", seq=fin.seq, ack=conn.snd_nxt, length=0, note="FIN retransmitted in CLOSING"),
                    within=lab.timing.retransmit)
    conn.ack()
    assert lab.target.conn_state(conn.dport, conn.sport) == "TIME-WAIT"
