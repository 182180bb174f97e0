"""A RST from the peer (RFC 9293 §3.10.7.4 second; RFC 5961 §3.2; RFC 9293 §3.6 MUST-12)."""
from harness.agent import OpError
from harness.markers import requirement
from harness.segments import Seg


def recv_or_errno(lab, sock):
    """One recv(): (bytes, None), or (b"", errno name) when the call fails."""
    try:
        return lab.target.recv(sock, timeout=1.0), None
    except OpError as exc:
        return b"", exc.errno


def reset_with_unread_data(lab, data):
    """ESTABLISHED, `data` received and ACKed but not read, then RST(seq=RCV.NXT)."""
    conn, _, sock = lab.passive_open()
    lab.data_acked(conn, data, note="ACK of the unread data")
    conn.rst()
    return conn, sock


@requirement("RFC5961-3.2", "MUST")
def test_rst_at_rcv_nxt_resets_the_connection_silently(lab):
    """RFC 5961 §3.2 / RFC 9293 §3.10.7.4 second: "If the RST bit is set and the sequence number
    exactly matches the next expected sequence number (RCV.NXT), then TCP endpoints MUST reset the
    connection"; ESTABLISHED: "Users should also receive an unsolicited general "connection reset"
    signal. Enter the CLOSED state, delete the TCB". Nothing is sent in reply; a later segment is
    answered from CLOSED (§3.10.7.1: <SEQ=SEG.ACK><CTL=RST>)."""
    data = b"u" * 100
    conn, sock = reset_with_unread_data(lab, data)
    assert lab.target.conn_state(conn.dport, conn.sport) == "CLOSED"
    conn.send(b"probe")
    # The first segment after the RST must be the probe's RST: the RST itself got no reply.
    reply = conn.expect_next(Seg("R", seq=conn.rcv_nxt, tolerate="A", note="the probe's RST"),
                             why="the RST must get no reply and delete the TCB")
    with lab.step("answered from CLOSED", "R9293-3.10.7.1"):
        conn.check(reply, Seg("R", seq=conn.rcv_nxt, note="from CLOSED: SEQ = SEG.ACK, no ACK flag"))
    # The application learns of the reset (data queued before it may still be handed out first).
    got, errno = b"", None
    while errno is None and len(got) <= len(data):
        chunk, errno = recv_or_errno(lab, sock)
        assert chunk or errno, "recv() reported end of stream instead of a reset"
        got += chunk
    assert errno == "ECONNRESET", f"recv() gave {errno or 'more bytes than the peer sent'}, not ECONNRESET"
    assert got == data[:len(got)], "recv() returned bytes the peer did not send"


@requirement("R9293-3.10.7.4/second", "SHOULD")
def test_rst_flushes_unread_data(lab):
    """§3.10.7.4 second, ESTABLISHED: "If the RST bit is set, then any outstanding RECEIVEs and SEND
    should receive "reset" responses. All segment queues should be flushed." (lowercase should):
    data received but not yet read is not handed out after the reset."""
    data = b"u" * 100
    _, sock = reset_with_unread_data(lab, data)
    got, errno = recv_or_errno(lab, sock)
    outcome = f"{len(got)} bytes of unread data" if got else (errno or "end of stream")
    lab.note("first_recv_after_rst", outcome)
    assert not got, f"recv() after the RST returned {len(got)} bytes of unread data instead of failing"
    assert errno == "ECONNRESET", f"recv() after the RST gave {errno or 'end of stream'}, not ECONNRESET"


@requirement("MUST-12", "MUST")
def test_application_tells_fin_from_rst(lab):
    """§3.6: "If the local TCP connection is closed by the remote side due to a FIN or RST received
    from the remote side, then the local application MUST be informed whether it closed normally or
    was aborted (MUST-12)": FIN → end of stream, RST → connection reset."""
    fin_conn, _, fin_sock = lab.passive_open()
    with lab.step("the peer's FIN is ACKed", "R9293-3.10.7.4/eighth", gate=True):
        fin_conn.fin()
        fin_conn.expect(Seg("A", seq=fin_conn.rcv_nxt, ack=fin_conn.snd_nxt, length=0, note="ACK of the FIN"))
    assert lab.target.recv(fin_sock, timeout=1.0) == b"", "after a FIN recv() must report end of stream"

    rst_conn, _, rst_sock = lab.passive_open()
    rst_conn.rst()
    got, errno = recv_or_errno(lab, rst_sock)
    assert errno == "ECONNRESET", f"after a RST recv() must fail with ECONNRESET, not give {got!r} ({errno})"
