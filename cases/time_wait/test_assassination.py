"""TIME-WAIT assassination by an old duplicate (RFC 1337 §1, Figure 1)."""
from harness.markers import requirement
from harness.segments import Seg, seq_add

from .closing import into_time_wait
from .test_time_wait import _probe_after_rst


@requirement("RFC1337-1", "INFO")
def test_old_duplicate_in_time_wait_draws_the_rst_that_may_assassinate_it(lab):
    """RFC 1337 §1, Figure 1: "Here 5.1 is *any* old segment that is unacceptable to TCP A. ... In
    either case, TCP A sends an ACK segment 5.2 for its current SND.NXT and RCV.NXT. Since it has
    no state for this connection, TCP B reflects this as RST segment 5.3, which assassinates the
    TIME-WAIT state at A!" In TIME-WAIT, 100 bytes of old data (SEQ = RCV.NXT-5000, ACK =
    SND.NXT-3000) must draw <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> (RFC 9293 §3.10.7.4 first); the
    peer answers it as a host without state would (§3.10.7.1: "<SEQ=SEG.ACK><CTL=RST>"). Whether
    TIME-WAIT survives (RFC 1337 §3 fix F1, "Ignore RST segments in TIME-WAIT state") or is
    assassinated is recorded, told by the answer to the old FIN re-sent afterwards."""
    lab.setting("net.ipv4.tcp_rfc1337")
    conn, _, _ = into_time_wait(lab)
    conn.send(b"old duplicate " * 7 + b"!!", seq=seq_add(conn.snd_nxt, -5000), ack=seq_add(conn.rcv_nxt, -3000))
    # §3.10.7.4 first: "If an incoming segment is not acceptable, an acknowledgment should be sent
    # in reply"; without it there is nothing for the peer to reflect.
    with lab.step("the old duplicate is ACKed", "R9293-3.10.7.4/first", gate=True):
        ack = conn.expect_next(
            Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="5.2: ACK of SND.NXT, RCV.NXT"),
            why="an unacceptable segment in TIME-WAIT is answered with an ACK")
    conn.rst(seq=ack.ack)  # 5.3: SEQ = the ACK's SEG.ACK
    lab.choice("rst_after_old_duplicate", _probe_after_rst(lab, conn))
