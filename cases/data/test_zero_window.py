"""A closed receive window (RFC 9293 §3.4 Table 5, MUST-66; §3.8.6.1): the application never
reads, the target's window falls to zero, and only ACKs and controls get through."""
from harness.agent import OpError
from harness.markers import requirement
from harness.segments import Seg

RCVBUF = 8192  # SO_RCVBUF where the target has it: a few segments close the window


def fill_the_window(lab, conn, bound: int) -> int:
    """Send at SND.NXT whatever the target's window allows, until it advertises 0; returns the
    bytes it took. UNSUPPORTED when `bound` bytes did not close it."""
    taken = 0
    while conn.snd_wnd:
        lab.need(taken < bound, f"the target's window reaches 0 within {bound} unread bytes "
                                f"(still {conn.snd_wnd} after {taken})")
        left = min(conn.snd_wnd, bound - taken)
        while left:
            n = min(left, conn.mss)
            conn.send(b"z" * n)
            left -= n
            taken += n
        # The ACK of everything sent carries the window left (ACK = SND.NXT).
        conn.expect(Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="ACK of the unread data"))
    return taken


@requirement("MUST-66", "MUST")
def test_zero_window_refuses_data_but_honours_rst(lab):
    """§3.4 Table 5: with segment length > 0 and receive window 0 the segment is "not
    acceptable"; "Note that when the receive window is zero no segments should be acceptable
    except ACK segments ... A TCP receiver MUST process the RST and URG fields of all incoming
    segments, even when the receive window is zero (MUST-66)." §3.8.6.1: "When the receiving TCP
    peer has a zero window and a segment arrives, it must still send an acknowledgment showing
    its next expected sequence number and current window (zero)." A 1-byte probe at RCV.NXT is
    ACKed with ack=RCV.NXT, win=0 (the byte not taken); a RST at RCV.NXT then resets the
    connection (§3.10.7.4 second): the next segment is answered from CLOSED and the user is told
    "connection reset"."""
    with lab.step("passive open", "R9293-3.10.7.2/third", gate=True):
        port = lab.port()
        # A small buffer bounds the data it takes to close the window; without SO_RCVBUF the
        # stack's fixed window (its SYN-ACK's) does.
        small = "so_rcvbuf" in lab.target.spec.capabilities
        listener = lab.target.listen(port, **({"rcvbuf": RCVBUF} if small else {}))
        conn = lab.peer.connect(port)
        sock = lab.target.accept(listener)
    offered = conn.snd_wnd
    with lab.step("the unread data closes the window", "R9293-3.10.7.4/seventh/established", gate=True):
        taken = fill_the_window(lab, conn, bound=4 * (RCVBUF if small else offered))
    lab.note("zero_window_after", f"{taken} unread bytes (window offered in the SYN-ACK: {offered})")
    with lab.step("a 1-byte probe is ACKed, its byte not taken", "R9293-3.4"):
        rcv_nxt = conn.snd_nxt
        conn.send(b"p")
        conn.snd_nxt = rcv_nxt  # the probe's byte is not acceptable: RCV.NXT stays
        conn.expect_next(Seg("A", seq=conn.rcv_nxt, ack=rcv_nxt, window=0, length=0,
                             note="ACK of the probe: RCV.NXT unchanged, window 0"),
                         why="a zero window must ACK a probe without taking its byte")
    conn.rst()
    conn.send(b"after the RST")
    conn.expect_next(Seg("R", seq=conn.rcv_nxt, tolerate="A", note="the follow-up answered from CLOSED"),
                     why="a RST at RCV.NXT must reset the connection even with the window closed")
    assert lab.target.conn_state(conn.dport, conn.sport) == "CLOSED"
    # The user learns of the reset (the unread data may still be handed out before it).
    got = 0
    while True:
        try:
            chunk = lab.target.recv(sock, timeout=1.0)
        except OpError as exc:
            assert exc.errno == "ECONNRESET", f"recv() after the RST failed with {exc.errno}, not ECONNRESET"
            break
        assert chunk, "recv() reported end of stream instead of the reset"
        got += len(chunk)
        assert got <= taken, "recv() returned more bytes than the target took"
