"""A FIN that arrives before the data in front of it (RFC 9293 §3.10.7.4 eighth, §3.4)."""
from harness.agent import OpError
from harness.markers import requirement
from harness.segments import Seg, seq_add, seq_diff


@requirement("R9293-3.10.7.4/eighth", "MUST", row="D10")
def test_fin_beyond_a_gap_is_acted_on_only_once_the_gap_is_filled(lab):
    """§3.10.7.4 first: "In the following it is assumed that the segment is the idealized segment
    that begins at RCV.NXT ... only processing further if the segment then begins at RCV.NXT.
    Segments with higher beginning sequence numbers SHOULD be held for later processing
    (SHLD-31)"; eighth: "If the FIN bit is set, signal the user "connection closing" and return
    any pending RECEIVEs with same message, advance RCV.NXT over the FIN, and send an
    acknowledgment for the FIN." Data [RCV.NXT+10, RCV.NXT+20) with FIN, ahead of a 10-byte gap,
    is not acted on: RCV.NXT stays, the state stays ESTABLISHED, a pending RECEIVE is not told
    "closing". Once [RCV.NXT, RCV.NXT+10) fills the gap, one ACK covers the held 20 bytes and the
    FIN (ack=RCV.NXT+21), and the user gets the 20 bytes, then end of stream."""
    conn, _, sock = lab.passive_open()
    rcv_nxt = conn.snd_nxt
    data = b"0123456789abcdefghij"
    end = seq_add(rcv_nxt, len(data) + 1)  # RCV.NXT once the 20 bytes and the FIN are in
    # A RECEIVE pending before the FIN arrives: a FIN acted on too early ends it with "closing".
    pending = lab.target.start("recv", sock=sock, max=len(data), timeout=5.0)
    conn.send(data[10:], flags="FPA", seq=seq_add(rcv_nxt, 10))
    # A keep-alive (SEG.SEQ = RCV.NXT-1, no text) is unacceptable and owed an ACK (§3.10.7.4
    # first); in order, its answer comes after any to the segment before it (MAY-13 lets that one
    # be ACKed at once, or not).
    conn.ack(seq=seq_add(rcv_nxt, -1))
    at_nxt = Seg("A", seq=conn.rcv_nxt, ack=rcv_nxt, length=0, note="ACK at RCV.NXT: nothing past the gap taken")
    conn.expect_next(at_nxt, why="a FIN beyond a gap must not be acknowledged")
    assert lab.target.conn_state(conn.dport, conn.sport) == "ESTABLISHED", \
        "the FIN beyond the gap moved the connection out of ESTABLISHED"
    try:
        early = pending.wait(timeout=0.0)
    except OpError as exc:
        assert exc.errno == "timeout", f"the pending recv() failed with {exc.errno} before the gap was filled"
        early = None
    assert early is None, (f"the pending recv() returned {early['data']!r} before the gap was filled"
                           + (" (end of stream: the FIN was acted on)" if early["data"] == b"" else ""))

    conn.send(data[:10], seq=rcv_nxt)
    with lab.step("the held segment and its FIN taken once the gap is filled", "SHLD-31", "SHOULD"):
        final = Seg("A", seq=conn.rcv_nxt, ack=end, length=0, note="ACK of the 20 bytes and the FIN")
        got = conn.expect_next(at_nxt, final, why="the held data and FIN must be taken when the gap is filled")
        if at_nxt.matches(got):  # the second of the ACKs at RCV.NXT (the segment's and the keep-alive's)
            conn.expect_next(final, why="the held data and FIN must be taken when the gap is filled")
    taken = conn.received[-1].ack
    conn.snd_nxt = taken
    if seq_diff(taken, end) < 0:
        # What the target did not hold, the peer sends again (as its retransmission would).
        with lab.step("the rest sent again is taken", "R9293-3.10.7.4/seventh/established", gate=True):
            conn.send(data[seq_diff(taken, rcv_nxt):], flags="FPA")
            conn.expect(Seg("A", seq=conn.rcv_nxt, ack=end, length=0, note="ACK of the rest and the FIN"))
    got = pending.wait(timeout=2.0)["data"]
    got += lab.target.recv_exactly(sock, len(data) - len(got))
    assert got == data, f"recv() gave {got!r}, not the 20 bytes in order"
    assert lab.target.recv(sock, timeout=1.0) == b"", "after the 20 bytes recv() must report end of stream"
    assert lab.target.conn_state(conn.dport, conn.sport) == "CLOSE-WAIT"
