"""Active close (RFC 9293 §3.6 case 1, Figure 12; §3.10.7.4 eighth): the target's user closes first."""
from harness.markers import requirement
from harness.segments import Seg, seq_add


@requirement("R9293-3.6", "MUST")
def test_close_sends_fin_then_fin_wait_2_then_time_wait(lab):
    """§3.6 case 1: on CLOSE "a FIN segment can be constructed ... and it enters the FIN-WAIT-1
    state"; §3.10.7.4 fifth, FIN-WAIT-1: "if the FIN segment is now acknowledged, then enter
    FIN-WAIT-2"; eighth, FIN-WAIT-2: "Enter the TIME-WAIT state", after sending "an acknowledgment
    for the FIN" (Figure 12: <SEQ=101><ACK=301><CTL=ACK>)."""
    conn, _, sock = lab.passive_open()
    fin = lab.target_fin(conn, sock)
    assert lab.target.conn_state(conn.dport, conn.sport) == "FIN-WAIT-1"
    conn.ack()
    assert lab.target.conn_state(conn.dport, conn.sport) == "FIN-WAIT-2"
    conn.fin()
    # The ACK of our FIN must be the first thing the target sends after its FIN was ACKed.
    conn.expect_next(Seg("A", seq=seq_add(fin.seq, 1), ack=conn.snd_nxt, length=0,
                          note="ACK of the peer's FIN"), why="FIN-WAIT-2 must stay silent until the peer's FIN")
    assert lab.target.conn_state(conn.dport, conn.sport) == "TIME-WAIT"


@requirement("R9293-3.10.7.4/eighth", "MUST")
def test_fin_carrying_the_ack_of_our_fin_goes_from_fin_wait_1_to_time_wait(lab):
    """§3.10.7.4 eighth, FIN-WAIT-1: "If our FIN has been ACKed (perhaps in this segment), then
    enter TIME-WAIT"; the FIN is acknowledged (RFC 1122 §4.2.2.8: three-way close)."""
    conn, _, sock = lab.passive_open()
    fin = lab.target_fin(conn, sock)
    # One segment: our FIN, acknowledging the target's FIN (conn.rcv_nxt is already past it).
    conn.fin()
    conn.expect_next(Seg("A", seq=seq_add(fin.seq, 1), ack=conn.snd_nxt, length=0,
                          note="ACK of the peer's FIN"), why="the FIN,ACK must be answered by one ACK")
    assert lab.target.conn_state(conn.dport, conn.sport) == "TIME-WAIT"
