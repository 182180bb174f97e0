"""Passive open (RFC 9293 §3.5 Figure 6, §3.10.7.2): the target listens, the peer connects."""
from harness.markers import requirement
from harness.segments import Seg, seq_add


@requirement("R9293-3.10.7.2/third", "MUST")
def test_syn_to_listener_gets_syn_ack_for_exactly_the_syn(lab):
    """"...the TCP endpoint should set RCV.NXT to SEG.SEQ+1, IRS is set to SEG.SEQ ... and a SYN
    segment sent of the form <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>"; an acceptable ACK completes it."""
    port = lab.port()
    listener = lab.target.listen(port)
    conn = lab.peer.connection(port)
    conn.syn()
    conn.expect(Seg("SA", ack=seq_add(conn.iss, 1), note="ack = SEG.SEQ+1"))
    conn.ack()
    sock = lab.target.accept(listener)
    assert lab.target.state(sock) == "ESTABLISHED"
    conn.send(b"hello")
    conn.expect(Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="ACK of the 5 bytes"))
    assert lab.target.recv(sock) == b"hello"
    lab.target.send(sock, b"world")
    conn.expect(Seg("A", seq=seq_add(conn.irs, 1), ack=conn.snd_nxt, payload=b"world"))
