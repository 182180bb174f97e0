"""Half-closed connections (RFC 9293 §3.6, §3.6.1): each direction closes on its own."""
from harness.markers import requirement
from harness.segments import Seg, seq_add


@requirement("R9293-3.6", "MUST", row="D8")
def test_after_shutdown_wr_the_target_still_receives_and_acks(lab):
    """§3.6: "The user who CLOSEs may continue to RECEIVE until the TCP receiver is told that the
    remote peer has CLOSED also"; case 1: "RECEIVEs are allowed in this state" (FIN-WAIT-1), and
    §3.10.7.4 seventh processes text in FIN-WAIT-1 and FIN-WAIT-2 as in ESTABLISHED."""
    conn, _, sock = lab.passive_open()
    fin = lab.target_fin(conn, sock, shutdown=True)
    after_fin = seq_add(fin.seq, 1)
    # FIN-WAIT-1: data whose ACK field does not yet cover the target's FIN (the ACK may ride on
    # the FIN's retransmission).
    conn.send(b"a" * 100, ack=fin.seq)
    conn.expect(Seg("A", seq=after_fin, ack=conn.snd_nxt, length=0, note="ACK of 100 bytes in FIN-WAIT-1"))
    assert lab.target.state(sock) == "FIN-WAIT-1"
    conn.ack()
    assert lab.target.state(sock) == "FIN-WAIT-2"
    conn.send(b"b" * 100)
    conn.expect(Seg("A", seq=after_fin, ack=conn.snd_nxt, length=0, note="ACK of 100 bytes in FIN-WAIT-2"))
    assert lab.target.recv_exactly(sock, 200) == b"a" * 100 + b"b" * 100
    conn.fin()
    conn.expect(Seg("A", seq=after_fin, ack=conn.snd_nxt, length=0, note="ACK of the peer's FIN"))
    assert lab.target.recv(sock, timeout=1.0) == b"", "recv() after the peer's FIN must report end of stream"
    assert lab.target.conn_state(conn.dport, conn.sport) == "TIME-WAIT"


@requirement("R9293-3.6", "MUST", row="D8")
def test_after_the_peer_fin_the_target_still_sends(lab):
    """§3.6.1: "a host is permitted to continue sending data in the open direction on a half-closed
    connection"; §3.10.4 CLOSE-WAIT SEND: "Queue this request until it can be sent"."""
    conn, _, sock = lab.passive_open()
    conn.fin()
    conn.expect(Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="ACK of the peer's FIN"))
    assert lab.target.recv(sock, timeout=1.0) == b"", "recv() after the peer's FIN must report end of stream"
    assert lab.target.state(sock) == "CLOSE-WAIT"
    data = bytes(range(256)) + b"half-closed"
    assert lab.target.send(sock, data) == len(data)
    conn.expect(Seg("A", seq=seq_add(conn.irs, 1), ack=conn.snd_nxt, payload=data,
                    note="data in CLOSE-WAIT, ACK still covering the peer's FIN"))
    conn.ack()
    lab.target.close(sock)
    conn.expect(Seg("FA", seq=seq_add(conn.irs, 1 + len(data)), ack=conn.snd_nxt, length=0,
                    note="FIN after the data"))
    conn.ack()
    assert lab.target.conn_state(conn.dport, conn.sport) == "CLOSED"
