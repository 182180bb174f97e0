"""Abortive close (RFC 9293 §3.10.5 ABORT): SO_LINGER {on, 0 s} makes close() an ABORT."""
from harness.markers import requirement
from harness.segments import Seg


@requirement("R9293-3.10.5", "MUST")
def test_abort_sends_rst_at_snd_nxt_and_no_fin(lab):
    """§3.10.5 ABORT, ESTABLISHED: "Send a reset segment: <SEQ=SND.NXT><CTL=RST> ... all segments
    queued for transmission (except for the RST formed above) ... should be flushed. Delete the TCB,
    enter CLOSED state"; a later segment is then answered from CLOSED (§3.10.7.1)."""
    conn, _, sock = lab.passive_open()
    lab.target.linger(sock, 1, 0)
    lab.target.close(sock)
    conn.expect_next(Seg("R", seq=conn.rcv_nxt, tolerate="A", note="RST at SND.NXT"),
                     why="an abortive close must send a RST and no FIN")
    assert lab.target.conn_state(conn.dport, conn.sport) == "CLOSED"
    with lab.step("answered from CLOSED", "R9293-3.10.7.1"):
        conn.send(b"after abort")
        conn.expect_next(Seg("R", seq=conn.rcv_nxt, note="from CLOSED: SEQ = SEG.ACK"),
                         why="data after the abort must get a RST")
