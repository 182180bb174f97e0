"""One listener, several handshakes at once (RFC 9293 §3.9.1.1, MUST-41 and MUST-42)."""
from harness.markers import requirement
from harness.segments import Seg, seq_add


@requirement("MUST-42", "MUST")
def test_listener_accepts_others_while_one_handshake_is_half_open(lab):
    """RFC 9293 §3.9.1.1: "A TCP implementation that supports multiple concurrent connections MUST
    provide an OPEN call that will functionally allow an application to LISTEN on a port while a
    connection block with the same local port is in SYN-SENT or SYN-RECEIVED state (MUST-42)", and
    "Every passive OPEN call either creates a new connection record in LISTEN state, or it returns
    an error; it MUST NOT affect any previously created connection record (MUST-41)". With A's
    handshake left in SYN-RECEIVED, B's SYN gets its own SYN,ACK, B completes and is accepted; a
    passive OPEN on another port leaves both alone; A then completes and is accepted."""
    port = lab.port()
    listener = lab.target.listen(port)
    a = lab.peer.connection(port)
    b = lab.peer.connection(port)

    a.syn()
    synack_a = a.expect(Seg("SA", ack=seq_add(a.iss, 1), note="A's SYN,ACK"))
    assert lab.target.conn_state(port, a.sport) == "SYN-RECEIVED", "A's handshake is not half-open"

    b.syn()
    synack_b = b.expect(Seg("SA", ack=seq_add(b.iss, 1), note="B's SYN,ACK, with A in SYN-RECEIVED"))
    # How the ISS is chosen is F1/F2's concern (lwIP's counter gives both the same one in its first
    # 500 ms tick); here each connection must simply be completed on its own numbers.
    lab.note("ISS of B minus ISS of A", (synack_b.seq - synack_a.seq) % (1 << 32))

    b.ack()  # completes B while A stays half-open
    sock_b = lab.target.accept(listener)
    lab.target.send(sock_b, b"to B")
    b.expect(Seg("A", seq=seq_add(synack_b.seq, 1), ack=b.snd_nxt, payload=b"to B",
                 note="the accepted socket is B's"))
    b.ack()
    assert lab.target.conn_state(port, a.sport) == "SYN-RECEIVED", "A's half-open connection did not survive B"

    with lab.step("another passive OPEN disturbs neither", "MUST-41"):
        lab.target.listen(lab.port())
        assert lab.target.conn_state(port, a.sport) == "SYN-RECEIVED", "A left SYN-RECEIVED at another listen()"
        assert lab.target.conn_state(port, b.sport) == "ESTABLISHED", "B left ESTABLISHED at another listen()"

    a.ack()  # <SEQ=ISS+1><ACK=A's ISS+1>: A completes after all
    sock_a = lab.target.accept(listener)
    lab.target.send(sock_a, b"to A")
    a.expect(Seg("A", seq=seq_add(synack_a.seq, 1), ack=a.snd_nxt, payload=b"to A",
                 note="the second accepted socket is A's"))
    a.ack()

    # B still carries data after A's completion.
    b.send(b"from B")
    b.expect(Seg("A", seq=b.rcv_nxt, ack=b.snd_nxt, length=0, note="ACK of B's 6 bytes"))
    assert lab.target.recv(sock_b) == b"from B"
