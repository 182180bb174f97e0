"""Negotiating and carrying the Timestamps option (RFC 7323 §3.2)."""
from harness.markers import requirement
from harness.segments import Seg, seq_add

from .tsopt import timestamps_open, tsecr, tsval


@requirement("RFC7323-3.2", "MUST")
def test_syn_without_timestamps_gets_syn_ack_without_timestamps(lab):
    """§3.2: "A TCP MAY send the TSopt in an initial <SYN> segment (i.e., segment containing a SYN
    bit and no ACK bit), and MAY send a TSopt in <SYN,ACK> only if it received a TSopt in the
    initial <SYN> segment for the connection." The peer's SYN carries MSS alone: the SYN,ACK must
    carry no Timestamps option."""
    conn, _, _ = lab.passive_open()
    synack = conn.received[0]
    assert tsval(synack) is None, "the SYN,ACK carries a Timestamps option although the SYN had none"


@requirement("RFC7323-3.2", "INFO")
def test_target_offers_timestamps_in_its_syn(lab):
    """§3.2: "A TCP MAY send the TSopt in an initial <SYN> segment"; "If the ACK bit is not set in
    the outgoing TCP header, the sender of that segment SHOULD set the TSecr field to zero." Whether
    the target's own SYN offers the option is recorded; if it does, its TSecr is checked as zero."""
    lab.setting("net.ipv4.tcp_timestamps")
    conn, _ = lab.active_open()
    syn = conn.received[0]
    if tsval(syn) is None:
        lab.choice("timestamps_in_syn", "not offered")
        return
    lab.choice("timestamps_in_syn", "offered")
    with lab.step("the SYN's TSecr is zero", "RFC7323-3.2", level="SHOULD"):
        assert tsecr(syn) == 0, f"the SYN (no ACK bit) carries TSecr {tsecr(syn)}, not zero"


@requirement("RFC7323-3.2", "MUST")
def test_every_segment_carries_timestamps_echoing_the_last_tsval(lab):
    """§3.2: "Once TSopt has been successfully negotiated, that is both <SYN> and <SYN,ACK> contain
    TSopt, the TSopt MUST be sent in every non-<RST> segment for the duration of the connection";
    "When the ACK bit is set in an outgoing segment, the sender MUST echo a recently received TSval
    sent by the remote TCP", by §4.3's rule: TS.Recent takes SEG.TSval when "SEG.TSval >= TS.Recent
    and SEG.SEQ <= Last.ACK.sent", and "When a TSopt is sent, its TSecr field is set to the current
    TS.Recent value". The peer sends one segment at a time and waits for the answer, each TSval
    no lower than the last, so every segment of the target — SYN,ACK, the ACK of data, its data,
    its FIN, TIME-WAIT's ACK — must carry the option with TSecr = the TSval of the peer's last
    segment."""
    lab.target.require("timestamps")
    # The opening by hand: the SYN as sent is the segment the SYN,ACK must echo.
    with lab.step("passive open", "R9293-3.10.7.2/third", gate=True):
        port = lab.port()
        listener = lab.target.listen(port)
        conn = lab.peer.connection(port, timestamps=True)
        syn = conn.syn()
        synack = conn.expect(Seg("SA", ack=seq_add(conn.iss, 1), note="SYN-ACK for our SYN"))
        conn.ack()
        sock = lab.target.accept(listener)
    lab.need(conn.timestamps, "the target's SYN,ACK carried no Timestamps option", "net.ipv4.tcp_timestamps")

    def carries(tcp, peer_seg, what):
        assert tsval(tcp) is not None, f"{what} carries no Timestamps option on a connection that negotiated it"
        assert tsecr(tcp) == tsval(peer_seg), (
            f"{what} echoes TSecr {tsecr(tcp)}, not the TSval {tsval(peer_seg)} of the peer's last segment")

    carries(synack, syn, "the SYN,ACK")
    sent = conn.send(b"p" * 100)
    carries(conn.expect(Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="ACK of the peer's data")),
            sent, "the ACK of the peer's data")
    # Read what the peer sent: close() with unread data would reset instead (RFC 2525 §2.17).
    assert lab.target.recv_exactly(sock, 100, timeout=1.0) == b"p" * 100
    lab.target.send(sock, b"t" * 100)
    data = conn.expect(Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=100, note="the target's data"))
    carries(data, sent, "the target's data segment")
    before, sent = sent, conn.ack()
    fin = lab.target_fin(conn, sock)
    # Nothing answers the pure ACK, so the FIN may be built before the ACK is in: TS.Recent is
    # then still the data's TSval (§4.3: it follows the segments received), and either is right.
    if tsecr(fin) != tsval(sent):
        carries(fin, before, "the target's FIN (built before the peer's last ACK arrived)")
    with lab.step("the peer's FIN is ACKed: TIME-WAIT", "R9293-3.10.7.4/eighth", gate=True):
        conn.ack()
        lab.peer.wait(0.002)  # the FIN's TSval a tick above the ACK's: which one is echoed shows
        sent = conn.fin()
        last = conn.expect(Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="ACK of the peer's FIN"))
    carries(last, sent, "TIME-WAIT's ACK of the peer's FIN")


@requirement("RFC7323-3.2", "SHOULD")
def test_segment_without_timestamps_is_dropped_silently_not_aborting(lab):
    """§3.2: "If a non-<RST> segment is received without a TSopt, a TCP SHOULD silently drop the
    segment. A TCP MUST NOT abort a TCP connection because any segment lacks an expected TSopt."
    With timestamps negotiated, 100 bytes X at RCV.NXT without the option, then 100 other bytes Y
    at the same RCV.NXT with it, then 100 bytes Z after them. The connection must stay up (Y and Z
    ACKed, no RST: MUST NOT); X should get no answer — the first segment back is Y's ACK, echoing
    Y's TSval, and the next one Z's ACK, no duplicate ACK between them — and recv() returns Y‖Z."""
    conn, _, sock = timestamps_open(lab)
    rcv_nxt = conn.snd_nxt
    x, y, z = b"x" * 100, b"y" * 100, b"z" * 100
    conn.send(x, options=[])
    conn.snd_nxt = rcv_nxt  # Y goes at the same sequence number
    sent_y = conn.send(y)
    with lab.step("the connection is not aborted", "RFC7323-3.2", level="MUST", gate=True):
        after_y = seq_add(rcv_nxt, len(y))
        first = conn.expect_next(
            Seg("A", seq=conn.rcv_nxt, ack=after_y, length=0, note="ACK of Y (or of X, taken)")
            | Seg("A", seq=conn.rcv_nxt, ack=rcv_nxt, length=0, note="X refused with an ACK"),
            why="a segment lacking the Timestamps option must not abort the connection")
        answers = [first]
        if first.ack == rcv_nxt:
            answers.append(conn.expect_next(Seg("A", seq=conn.rcv_nxt, ack=after_y, length=0, note="ACK of Y")))
        sent_z = conn.send(z)
        after_z = conn.snd_nxt
        answers.append(conn.expect_next(
            Seg("A", seq=conn.rcv_nxt, ack=after_z, length=0, note="ACK of Z")
            | Seg("A", seq=conn.rcv_nxt, ack=after_y, length=0, note="duplicate ACK: Y came after X was taken")))
        if answers[-1].ack != after_z:
            answers.append(conn.expect_next(Seg("A", seq=conn.rcv_nxt, ack=after_z, length=0, note="ACK of Z")))
        got = lab.target.recv_exactly(sock, 200, timeout=1.0)
        assert lab.target.state(sock) == "ESTABLISHED"
    taken = got.startswith(x)
    assert not taken, "the segment without a Timestamps option was taken: recv() returned its bytes"
    assert got == y + z, f"recv() returned {got[:16]!r}... instead of Y then Z"
    assert len(answers) == 2, (
        f"the segment without a Timestamps option was answered: {len(answers)} ACKs for Y and Z, not 2")
    assert tsecr(answers[0]) == tsval(sent_y) and tsecr(answers[1]) == tsval(sent_z), (
        "the ACKs do not echo the TSvals of Y and Z")
