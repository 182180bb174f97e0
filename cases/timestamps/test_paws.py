"""PAWS, Protection Against Wrapped Sequences (RFC 7323 §5.2, §5.3): old TSvals are rejected, RSTs never."""
import pytest

from harness.markers import requirement
from harness.segments import Seg, seq_add

from ..time_wait.closing import into_time_wait
from .tsopt import data_acked_at, timestamps_open, ts_option, tsecr, tsval


@requirement("RFC7323-5.3", "MUST")
def test_data_with_an_older_tsval_is_acked_and_dropped(lab):
    """RFC 7323 §5.3 R1: "If there is a Timestamps option in the arriving segment, SEG.TSval <
    TS.Recent, TS.Recent is valid (see later discussion), and if the RST bit is not set, then treat
    the arriving segment as not acceptable: Send an acknowledgment in reply as specified in Section
    3.9 of [RFC0793], page 69, and drop the segment"; "PAWS processing MUST take precedence over
    the regular TCP acceptability check". ESTABLISHED: data with TSval T makes TS.Recent = T; then
    100 bytes exactly at RCV.NXT (in window) with TSval T-100 must get <SEQ=SND.NXT><ACK=RCV.NXT>
    with TSecr = TS.Recent = T (Appendix D), and must not be delivered: fresh bytes sent at the
    same RCV.NXT afterwards are ACKed and are what recv() returns."""
    conn, _, sock = timestamps_open(lab)
    recent = conn.tsval()
    first = b"a" * 100
    data_acked_at(lab, conn, first, recent)
    rcv_nxt = conn.snd_nxt
    conn.send(b"o" * 100, options=[ts_option(conn, seq_add(recent, -100))])
    conn.snd_nxt = rcv_nxt  # the old segment must not be taken: the next bytes go at the same RCV.NXT
    reply = conn.expect_next(
        Seg("A", seq=conn.rcv_nxt, ack=rcv_nxt, length=0, note="PAWS: ACK of RCV.NXT, segment dropped"),
        why="a segment whose TSval is older than TS.Recent must be ACKed and dropped")
    assert tsecr(reply) == recent, (
        f"the ACK of the PAWS-rejected segment echoes TSecr {tsecr(reply)}, not TS.Recent {recent}")
    fresh = b"n" * 100
    conn.send(fresh)
    conn.expect(Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="ACK of the fresh bytes"))
    got = lab.target.recv_exactly(sock, len(first) + len(fresh), timeout=1.0)
    assert got == first + fresh, "recv() returned the bytes of the PAWS-rejected segment"


@requirement("RFC7323-5.3", "MUST")
def test_syn_with_an_older_tsval_does_not_reopen_time_wait(lab):
    """RFC 7323 §5.3: PAWS "MUST be performed on all incoming segments for a synchronized
    connection", TIME-WAIT included; §5.2: "PAWS protects against old duplicate non-<SYN> segments
    and duplicate <SYN> segments received while there is a synchronized connection". R1: a segment
    with SEG.TSval < TS.Recent and no RST is not acceptable: "Send an acknowledgment in reply ...
    and drop the segment". In TIME-WAIT (TS.Recent = the TSval of the peer's FIN), a SYN whose
    SEQ lies 100000 above RCV.NXT (which the sequence rule of MAY-2 alone would admit) but whose
    TSval is 100 below TS.Recent must get TIME-WAIT's ACK <SEQ=SND.NXT><ACK=RCV.NXT> with TSecr =
    TS.Recent, not a SYN,ACK, and TIME-WAIT stays. (A retransmitted FIN would not tell: it is
    ACKed whether PAWS rejects it or not.)"""
    lab.target.require("timestamps")
    old, _, fin = into_time_wait(lab, timestamps=True)
    lab.need(old.timestamps, "the target's SYN,ACK carried no Timestamps option", "net.ipv4.tcp_timestamps")
    recent = tsval(fin)
    new = lab.peer.connection(old.dport, sport=old.sport, iss=seq_add(old.snd_nxt, 100000), timestamps=True)
    new.syn(options=[("MSS", new.mss), ("Timestamp", (seq_add(recent, -100), 0))])
    reply = old.expect_next(Seg("A", seq=old.rcv_nxt, ack=old.snd_nxt, length=0, note="PAWS: TIME-WAIT's ACK"),
                            why="a SYN whose TSval is older than TS.Recent must be ACKed and dropped in TIME-WAIT")
    assert tsecr(reply) == recent, f"the ACK echoes TSecr {tsecr(reply)}, not TS.Recent {recent}"
    assert lab.target.conn_state(old.dport, old.sport) == "TIME-WAIT"


@requirement("RFC7323-5.2", "MUST")
@pytest.mark.parametrize("tsopt", ["stale_tsval", "without_tsopt"])
def test_rst_is_not_subject_to_paws(lab, tsopt):
    """RFC 7323 §5.2: "When an <RST> segment is received, it MUST NOT be subjected to the PAWS
    check by verifying an acceptable value in SEG.TSval, and information from the Timestamps
    option MUST NOT be used to update connection state information." With timestamps negotiated
    and TS.Recent = T, a RST exactly at RCV.NXT resets the connection (RFC 9293 §3.10.7.4 second)
    whether its TSval is T-10^6 or it carries no Timestamps option at all (RFC 1323 "recommended
    that <RST> segments NOT carry timestamps and that they be acceptable regardless of their
    timestamp"): no reply, and a later segment is answered from CLOSED with a RST."""
    conn, _, _ = timestamps_open(lab)
    recent = conn.tsval()
    data_acked_at(lab, conn, b"d" * 100, recent)
    # Without ACK the RST's TSecr is not valid: §3.2 "the sender of that segment SHOULD set the TSecr field to zero".
    conn.rst(options=[("Timestamp", (seq_add(recent, -10**6), 0))] if tsopt == "stale_tsval" else [])
    conn.send(b"probe")
    conn.expect_next(Seg("R", seq=conn.rcv_nxt, tolerate="A", note="the probe's RST: the connection was reset"),
                     why="the RST at RCV.NXT must reset the connection, whatever its timestamp, without a reply")
    assert lab.target.conn_state(conn.dport, conn.sport) == "CLOSED"
