"""Active open (RFC 9293 §3.5 Figure 6, §3.10.7.3): the target connects, the peer answers."""
from harness.markers import requirement
from harness.segments import Seg, seq_add


@requirement("R9293-3.10.7.3/fourth", "MUST")
def test_syn_ack_in_syn_sent_establishes_and_is_acked(lab):
    """§3.10.7.3 "Fourth, check the SYN bit": on a SYN whose ACK covers our SYN, "RCV.NXT is set to
    SEG.SEQ+1, IRS is set to SEG.SEQ ... change the connection state to ESTABLISHED, form an ACK
    segment <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>"; the connection then carries data both ways."""
    port = lab.peer.listen_port()
    job = lab.target.start("connect", port=port, timeout=3.0)
    conn = lab.peer.expect_syn(port)
    syn = conn.received[-1]
    # The opening SYN carries no ACK (nothing to acknowledge yet) and no other control bit; the ECN
    # setup bits of RFC 3168 §6.1.1 / RFC 9768 (ECE, CWR, AE) are a separate negotiation.
    control = set(str(syn.flags)) - set("ECN")
    assert control == {"S"}, f"the target's SYN has flags {syn.flags}, expected SYN (ECN bits aside)"
    lab.choice("ecn_setup_flags", "".join(sorted(set(str(syn.flags)) & set("ECN"))) or "none")
    assert syn.seq == conn.irs
    target_iss = syn.seq

    conn.syn(ack=True)  # <SEQ=y><ACK=ISS+1><CTL=SYN,ACK>
    conn.expect(Seg("A", seq=seq_add(target_iss, 1), ack=seq_add(conn.iss, 1), length=0,
                    note="<SEQ=ISS+1><ACK=y+1><CTL=ACK>"))
    sock = lab.target.adopt(job.wait(timeout=3.0)["sock"])
    assert lab.target.state(sock) == "ESTABLISHED"

    # Peer → target: delivered to recv() and acknowledged exactly.
    conn.send(b"from the peer")
    conn.expect(Seg("A", seq=seq_add(target_iss, 1), ack=seq_add(conn.iss, 1 + 13), length=0,
                    note="ACK of the peer's 13 bytes"))
    assert lab.target.recv(sock) == b"from the peer"

    # Target → peer: its first byte is ISS+1 and it carries the ACK of the peer's data.
    lab.target.send(sock, b"from the target")
    conn.expect(Seg("A", seq=seq_add(target_iss, 1), ack=seq_add(conn.iss, 1 + 13),
                    payload=b"from the target"))
    conn.ack()
    # The next segment continues right after the bytes the peer acknowledged.
    lab.target.send(sock, b"more")
    conn.expect(Seg("A", seq=seq_add(target_iss, 1 + 15), ack=seq_add(conn.iss, 1 + 13), payload=b"more"))
