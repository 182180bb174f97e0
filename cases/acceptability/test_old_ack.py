"""The ACK field's lower bound (RFC 9293 §3.10.7.4 fifth, MAY-12; RFC 5961 §5.2)."""
from harness.markers import requirement
from harness.segments import Seg, seq_add


@requirement("MAY-12", "INFO")
def test_data_whose_ack_is_below_snd_una_minus_max_snd_wnd(lab):
    """RFC 9293 §3.10.7.4 fifth: RFC 5961 §5 describes a blind data injection attack, "and
    mitigation that implementations MAY choose to include (MAY-12). TCP stacks that implement RFC
    5961 MUST add an input check that the ACK value is acceptable only if it is in the range of
    ((SND.UNA - MAX.SND.WND) =< SEG.ACK =< SND.NXT). All incoming segments whose ACK value doesn't
    satisfy the above condition MUST be discarded and an ACK sent back." RFC 5961 §5.2: without
    it, RFC 793's "If the ACK is a duplicate (SEG.ACK < SND.UNA), it can be ignored" means "the
    processing of the incoming data segment continues". The target has sent nothing but its SYN
    (SND.UNA = SND.NXT = ISS+1) and the peer's window was 65535, unscaled, throughout (MAX.SND.WND):
    100 bytes in window at RCV.NXT with ACK = SND.UNA - 65536 are either discarded and answered
    with <SEQ=SND.NXT><ACK=RCV.NXT> (adopted; fresh bytes at the same RCV.NXT are then what recv()
    returns) or taken and ACKed (not adopted). Which is recorded."""
    conn, _, sock = lab.passive_open()
    rcv_nxt = conn.snd_nxt
    injected = b"i" * 100
    conn.send(injected, ack=seq_add(conn.rcv_nxt, -(conn.window + 1)))
    taken = seq_add(rcv_nxt, len(injected))
    reply = conn.expect(
        Seg("A", seq=conn.rcv_nxt, ack=rcv_nxt, length=0, note="RFC 5961 §5.2: discarded, ACK sent back")
        | Seg("A", seq=conn.rcv_nxt, ack=taken, length=0, note="RFC 793: old ACK ignored, data taken"))
    if reply.ack == taken:
        got = lab.target.recv_exactly(sock, len(injected), timeout=1.0)
        assert got == injected, f"the data was ACKed but recv() returned {got[:16]!r}"
        lab.choice("ack_lower_bound", "not adopted (RFC 793): the old ACK ignored, the data taken")
        return
    # Adopted: the discarded bytes must not surface; fresh ones at the same RCV.NXT are taken.
    conn.snd_nxt = rcv_nxt
    fresh = b"f" * 100
    conn.send(fresh)
    conn.expect(Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="ACK of the fresh bytes"))
    got = lab.target.recv_exactly(sock, len(fresh), timeout=1.0)
    assert got == fresh, f"the segment was answered as discarded, but recv() returned {got[:16]!r}"
    lab.choice("ack_lower_bound", "adopted (RFC 5961 §5.2): discarded and ACKed")
