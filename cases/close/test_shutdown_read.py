"""Closing the receiving half (RFC 9293 §3.6.1 MAY-1, SHLD-3): what becomes of data that arrives after it."""
from harness.agent import OpError
from harness.markers import requirement
from harness.segments import Seg, seq_add


@requirement("MAY-1", "MAY", row="D7")
def test_data_after_shutdown_rd_is_discarded_reset_or_delivered(lab):
    """§3.6.1: "A host MAY implement a "half-duplex" TCP close sequence, so that an application
    that has called CLOSE cannot continue to read data from the connection (MAY-1). If such a host
    issues a CLOSE call while received data is still pending in the TCP connection, or if new data
    is received after CLOSE is called, its TCP implementation SHOULD send a RST to show that data
    was lost (SHLD-3)." After shutdown(SHUT_RD) the peer sends data; recorded: whether the stack
    ACKs and drops it, resets the connection, or still hands it to recv(). Once the sending half
    is shut too (shutdown(SHUT_WR): nothing can be read or sent any more), new data gets a RST
    (SHLD-3)."""
    lab.target.require("shutdown_rd")
    conn, _, sock = lab.passive_open()
    lab.target.shutdown(sock, "rd")
    data = b"sent after SHUT_RD"
    conn.send(data)
    first = conn.expect_next(Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="the data ACKed"),
                             Seg("R", seq=conn.rcv_nxt, tolerate="A", note="RST: the data is lost"),
                             why="data after shutdown(SHUT_RD) is either ACKed or answered with a RST")
    if "R" in str(first.flags):
        lab.choice("data_after_shut_rd", "RST: the connection is reset")
        assert lab.target.conn_state(conn.dport, conn.sport) == "CLOSED"
        return
    try:
        got = lab.target.recv(sock, timeout=0.5)
        outcome = ("ACKed and still delivered: recv() returns it" if got == data else
                   "ACKed and discarded: recv() reports end of stream" if got == b"" else
                   f"ACKed; recv() returns {got!r}")
    except OpError as exc:
        outcome = ("ACKed and discarded: recv() blocks" if exc.errno == "timeout" else
                   f"ACKed; recv() fails with {exc.errno}")
    lab.choice("data_after_shut_rd", outcome)

    with lab.step("after shutdown(SHUT_WR) too, new data gets a RST", "SHLD-3", "SHOULD"):
        fin = lab.target_fin(conn, sock, shutdown=True)
        conn.ack()
        conn.send(b"sent after SHUT_RD and SHUT_WR")
        conn.expect_next(Seg("R", seq=seq_add(fin.seq, 1), tolerate="A", note="RST at SND.NXT (after the FIN)"),
                         why="data no application can read any more must get a RST")
