"""Data the application can no longer read (RFC 9293 §3.6.1 SHLD-3; RFC 1122 §4.2.2.13; RFC 2525
§2.16, §2.17): the stack shows the loss with a RST instead of a graceful FIN."""
from harness.markers import requirement
from harness.segments import Seg, seq_add


@requirement("SHLD-3", "SHOULD", row="D6")
def test_close_with_unread_data_sends_rst_not_fin(lab):
    """§3.6.1: "If such a host issues a CLOSE call while received data is still pending in the TCP
    connection ... its TCP implementation SHOULD send a RST to show that data was lost (SHLD-3)"
    (RFC 2525 §2.17 "Failure to RST on close with data pending"); the RST is the ABORT form of
    §3.10.5, <SEQ=SND.NXT><CTL=RST>."""
    conn, _, sock = lab.passive_open()
    lab.data_acked(conn, b"u" * 1000, note="ACK of the unread 1000 bytes")
    lab.target.close(sock)
    conn.expect_next(Seg("R", seq=conn.rcv_nxt, tolerate="A", note="RST at SND.NXT"),
                     why="close() with unread data must send a RST and no FIN")
    assert lab.target.conn_state(conn.dport, conn.sport) == "CLOSED"


@requirement("RFC2525-2.16", "SHOULD")
def test_data_after_full_close_gets_rst(lab):
    """RFC 2525 §2.16 / RFC 1122 §4.2.2.13: "if new data is received after CLOSE is called, its TCP
    SHOULD send a RST to show that data was lost". After the FIN, SND.NXT is the FIN's SEQ+1, which
    is also the data's ACK field (§3.10.5 <SEQ=SND.NXT>, as in RFC 2525's "better behavior" trace)."""
    conn, _, sock = lab.passive_open()
    fin = lab.target_fin(conn, sock)
    with lab.step("the ACK of the FIN: FIN-WAIT-2", "R9293-3.6", gate=True):
        conn.ack()
        assert lab.target.conn_state(conn.dport, conn.sport) == "FIN-WAIT-2"
    conn.send(b"d" * 100)
    conn.expect_next(Seg("R", seq=seq_add(fin.seq, 1), tolerate="A", note="RST at SND.NXT (after the FIN)"),
                     why="data after close() must get a RST")
    assert lab.target.conn_state(conn.dport, conn.sport) == "CLOSED"
