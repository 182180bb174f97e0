"""A RST that carries text (RFC 9293 §3.5.3 SHLD-2): it is still a RST."""
from harness.markers import requirement
from harness.segments import Seg

from .test_rst_received import recv_or_errno


@requirement("SHLD-2", "SHOULD")
def test_rst_carrying_data_resets_the_connection(lab):
    """§3.5.3: "TCP implementations SHOULD allow a received RST segment to include data (SHLD-2).
    It has been suggested that a RST segment could contain diagnostic data that explains the cause
    of the RST." A RST at RCV.NXT with 20 bytes of text resets the connection as any RST at
    RCV.NXT does (§3.10.7.4 second): no reply, the TCB deleted, a later segment answered from
    CLOSED (§3.10.7.1: <SEQ=SEG.ACK><CTL=RST>), the user told "connection reset"."""
    conn, _, sock = lab.passive_open()
    rcv_nxt = conn.snd_nxt
    conn.rst(data=b"diagnostic: 20 bytes")
    # The RST's text occupies no sequence space the target takes: the follow-up goes at RCV.NXT.
    conn.snd_nxt = rcv_nxt
    conn.send(b"probe")
    # The first segment back must be the probe's RST: the RST itself got no reply (no ACK of its text).
    reply = conn.expect_next(Seg("R", seq=conn.rcv_nxt, tolerate="A", note="the probe's RST"),
                             why="a RST carrying data must reset the connection without a reply")
    with lab.step("answered from CLOSED", "R9293-3.10.7.1"):
        conn.check(reply, Seg("R", seq=conn.rcv_nxt, note="from CLOSED: SEQ = SEG.ACK, no ACK flag"))
    assert lab.target.conn_state(conn.dport, conn.sport) == "CLOSED"
    got, errno = recv_or_errno(lab, sock)
    assert errno == "ECONNRESET", f"recv() after the RST gave {got!r} ({errno}), not ECONNRESET"
