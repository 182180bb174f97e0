"""Full duplex (RFC 9293 §3.1, §3.10.7.4 "Seventh, process the segment text"): data crossing in flight."""
from harness.markers import requirement
from harness.segments import Seg, seq_add

TARGET_DATA = bytes(range(256)) * 4 + b"target-end"   # 1034 bytes: one segment at MSS 1460
PEER_DATA = b"peer-" * 140 + b"peer-end"               # 708 bytes


@requirement("R9293-3.10.7.4/seventh/established", "MUST")
def test_data_crossing_in_both_directions_is_acked_exactly(lab):
    """§3.10.7.4 seventh (ESTABLISHED): text is delivered and acknowledged with
    <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>; §3.1: "TCP ... provides ... full-duplex" service. The peer
    sends while the target's data is still unacknowledged: the target's ACK must cover exactly the
    peer's bytes and sit after its own unacknowledged ones, and the peer's ACK then completes the other way."""
    conn, _, sock = lab.passive_open()
    t_first = conn.rcv_nxt        # target ISS+1
    p_first = conn.snd_nxt        # peer ISS+1

    lab.target.send(sock, TARGET_DATA)
    conn.expect(Seg("A", seq=t_first, ack=p_first, payload=TARGET_DATA))
    t_end = seq_add(t_first, len(TARGET_DATA))

    # The peer's data crosses the target's: it still acknowledges only the SYN.
    conn.send(PEER_DATA, ack=t_first)
    p_end = seq_add(p_first, len(PEER_DATA))
    # (A retransmission of the target's own bytes may carry this ACK: segments.Seg.piggybacked.)
    conn.expect(Seg("A", seq=t_end, ack=p_end, length=0,
                    note="SEQ=SND.NXT after the unacked data, ACK covers exactly the peer's bytes"))
    assert lab.target.recv_exactly(sock, len(PEER_DATA)) == PEER_DATA

    conn.ack(ack=t_end)
    # Both directions continue from where the cumulative ACKs left them.
    conn.send(b"!")
    conn.expect(Seg("A", seq=t_end, ack=seq_add(p_end, 1), length=0))
    assert lab.target.recv(sock) == b"!"
    lab.target.send(sock, b"?")
    conn.expect(Seg("A", seq=t_end, ack=seq_add(p_end, 1), payload=b"?"))
