"""Data on a SYN to a listener (RFC 9293 §3.10.7.2 third, §3.10.7.4 fifth, §3.10.7.3): queued
for after ESTABLISHED, or discarded; never delivered before."""
import pytest

from harness.agent import OpError
from harness.markers import requirement
from harness.segments import Seg, seq_add

SYN_DATA = b"0123456789"
LATER = b"sent after the handshake"


def _syn_with_data(lab):
    """The peer's SYN carries 10 bytes; the SYN,ACK acknowledges the SYN alone (x+1: the bytes
    were discarded) or the bytes too (x+11: queued). Returns (listener, conn, synack, queued)."""
    port = lab.port()
    listener = lab.target.listen(port)
    conn = lab.peer.connection(port)
    conn.send_raw("S", seq=conn.iss, data=SYN_DATA)
    synack = conn.expect(Seg("SA", ack=seq_add(conn.iss, 1), note="the SYN alone: the data discarded")
                         | Seg("SA", ack=seq_add(conn.iss, 1 + len(SYN_DATA)), note="SYN and data: queued"))
    queued = synack.ack == seq_add(conn.iss, 1 + len(SYN_DATA))
    lab.choice("data_on_syn", "queued: the SYN,ACK acknowledges them (ack = x+11)" if queued
               else "discarded: the SYN,ACK acknowledges the SYN alone (ack = x+1)")
    if not queued:
        conn.snd_nxt = seq_add(conn.iss, 1)  # unacknowledged: the peer's next byte is x+1 again
    return listener, conn, synack, queued


@requirement("R9293-3.10.7.2/third", "MUST", row="A15")
def test_data_on_syn_reaches_the_application_only_once_established_and_only_if_acked(lab):
    """§3.10.7.2 third: "Set RCV.NXT to SEG.SEQ+1, IRS is set to SEG.SEQ, and any other control or
    text should be queued for processing later"; "any other incoming control or data (combined
    with SYN) will be processed in the SYN-RECEIVED state, but processing of SYN and ACK should not
    be repeated". Before the ACK completes the handshake nothing can be accepted, so the
    application cannot read the bytes; after it, recv() returns them first if the SYN,ACK
    acknowledged them, and never if it did not (the peer sends other bytes at x+1 instead)."""
    listener, conn, synack, queued = _syn_with_data(lab)

    with lab.step("nothing reaches the application in SYN-RECEIVED", "R9293-3.10.7.2/third"):
        assert lab.target.conn_state(conn.dport, conn.sport) == "SYN-RECEIVED"
        with pytest.raises(OpError) as early:
            lab.target.accept(listener, timeout=0.05)
        assert early.value.errno == "timeout", f"accept() before the handshake's ACK: {early.value}"

    conn.ack()  # <SEQ=x+1 or x+11><ACK=ISS+1>: ESTABLISHED
    sock = lab.target.accept(listener)
    conn.send(LATER)
    conn.expect(Seg("A", seq=seq_add(synack.seq, 1), ack=conn.snd_nxt, length=0,
                    note="ACK of the bytes sent after the handshake"))
    expected = SYN_DATA + LATER if queued else LATER
    got = lab.target.recv_exactly(sock, len(expected))
    assert got == expected, (
        f"recv() gave {got!r}, expected {expected!r}: the SYN's data was "
        + ("acknowledged but not delivered in order" if queued else "not acknowledged, yet delivered"))


@requirement("R9293-3.10.7.2/third", "MUST", row="A15")
def test_data_on_syn_is_never_delivered_when_the_handshake_is_reset(lab):
    """§3.10.7.2 third: the SYN's text "should be queued for processing later"; a RST in
    SYN-RECEIVED instead ends the attempt (§3.10.7.4 second: "If this connection was initiated with
    a passive OPEN (i.e., came from the LISTEN state), then return this connection to LISTEN state
    and return"). The connection never reaches ESTABLISHED, so its bytes reach no application: the
    next connection the listener accepts is a new one from another port, and it reads only its
    own bytes."""
    listener, conn, synack, queued = _syn_with_data(lab)
    conn.rst(seq=synack.ack)  # at the target's RCV.NXT: in the window whichever it chose

    later = lab.peer.connect(conn.dport)
    with lab.step("the listener accepts the next connection", "R9293-3.10.7.2/third", gate=True):
        sock = lab.target.accept(listener)
    # The accepted socket is the new connection's (a socket for the reset one would send elsewhere).
    lab.target.send(sock, b"who")
    later.expect(Seg("A", seq=later.rcv_nxt, ack=later.snd_nxt, payload=b"who",
                     note="the accepted socket is the new connection's"))
    later.send(LATER)
    later.expect(Seg("A", seq=later.rcv_nxt, ack=later.snd_nxt, length=0, note="ACK of its bytes"))
    got = lab.target.recv_exactly(sock, len(LATER))
    assert got == LATER, f"recv() on the new connection gave {got!r}, expected only its own {LATER!r}"
