"""TIME-WAIT at the active closer (RFC 9293 §3.6, §3.6.1, §3.10.7.4; RFC 1337)."""
import time

import pytest

from harness.markers import requirement
from harness.peer import Mismatch
from harness.segments import Seg, seq_add

from .closing import into_time_wait


@requirement("R9293-3.6", "MUST")
def test_closer_enters_time_wait_after_the_four_way_close(lab):
    """§3.6 case 1 / Figure 12: the side that closes first sends FIN (FIN-WAIT-1), gets it ACKed
    (FIN-WAIT-2), ACKs the remote FIN and enters TIME-WAIT (§3.10.7.4 eighth, FIN-WAIT-2:
    "Enter the TIME-WAIT state. Start the time-wait timer")."""
    conn, _, _ = into_time_wait(lab)
    assert lab.target.conn_state(conn.dport, conn.sport) == "TIME-WAIT"


@requirement("R9293-3.10.7.4/fifth", "MUST", row="E2")
def test_retransmitted_fin_in_time_wait_is_acked_again(lab):
    """§3.10.7.4 fifth, TIME-WAIT: "The only thing that can arrive in this state is a
    retransmission of the remote FIN. Acknowledge it, and restart the 2 MSL timeout." The ACK is
    <SEQ=SND.NXT><ACK=RCV.NXT>, i.e. the same as the one that answered the first FIN."""
    conn, _, _ = into_time_wait(lab)
    conn.send_raw("FA", seq=seq_add(conn.snd_nxt, -1))
    conn.expect(Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="ACK of the FIN again"))
    assert lab.target.conn_state(conn.dport, conn.sport) == "TIME-WAIT"


def _probe_after_rst(lab, conn) -> str:
    """Re-send the peer's FIN after a RST in TIME-WAIT; its answer tells which policy holds. If
    TIME-WAIT survived, the FIN is a retransmission to ACK (§3.10.7.4 fifth: "Acknowledge it");
    if it ended, the FIN,ACK reaches the still open listener, which resets it (§3.10.7.2 second:
    "An acceptable reset segment should be formed for any arriving ACK-bearing segment ...
    <SEQ=SEG.ACK><CTL=RST>"). Silence tells neither: it fails the step, charged to whichever
    answer the stack owed by its own table."""
    conn.send_raw("FA", seq=seq_add(conn.snd_nxt, -1))
    with lab.step("the old FIN is answered", "R9293-3.10.7.4/fifth", gate=True) as step:
        try:
            reply = conn.expect(Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="TIME-WAIT kept: ACK")
                                | Seg("R", seq=conn.rcv_nxt, tolerate="A", note="TIME-WAIT ended: RST at SEG.ACK"))
        except Mismatch:
            if lab.target.conn_state(conn.dport, conn.sport) != "TIME-WAIT":
                step.requirement = "R9293-3.10.7.2/second"  # the listener owed the RST
            raise
    listed = lab.target.conn_state(conn.dport, conn.sport)
    if "R" in str(reply.flags):
        assert listed == "CLOSED", f"the old FIN got a RST, but the stack lists the tuple as {listed}"
        return "accepted (RFC 9293): TIME-WAIT assassinated, the old FIN then got RST"
    assert listed == "TIME-WAIT", f"the old FIN was ACKed as in TIME-WAIT, but the stack lists {listed}"
    return "ignored (RFC 1337 F1): TIME-WAIT kept"


@requirement("RFC1337-3", "INFO")
def test_rst_in_time_wait_policy(lab):
    """RFC 9293 §3.10.7.4 second, TIME-WAIT: "If the RST bit is set, then enter the CLOSED state,
    delete the TCB"; RFC 1337 §3 fix (F1): "Ignore RST segments in TIME-WAIT state" (§4: "the best
    short-term solution"). Which one the stack applies is recorded, with Linux's switch."""
    lab.setting("net.ipv4.tcp_rfc1337")
    conn, _, _ = into_time_wait(lab)
    conn.rst()
    lab.choice("rst_in_time_wait", _probe_after_rst(lab, conn))


@requirement("RFC1337-3", "SHOULD")
def test_rst_in_time_wait_is_ignored_when_rfc1337_is_on(lab):
    """RFC 1337 §3 (F1) "Ignore RST segments in TIME-WAIT state", recommended in §4; Linux
    applies it when net.ipv4.tcp_rfc1337 = 1. A RST at RCV.NXT must then leave TIME-WAIT intact:
    the retransmitted FIN is still ACKed."""
    lab.target.sysctl("net.ipv4.tcp_rfc1337", 1)
    conn, _, _ = into_time_wait(lab)
    conn.rst()
    outcome = _probe_after_rst(lab, conn)
    assert outcome.startswith("ignored"), f"with tcp_rfc1337=1 the RST in TIME-WAIT was {outcome}"


# RFC 9293 §3.4.2: "For this specification the MSL is taken to be 2 minutes."
TWO_MSL = 240.0


@requirement("MUST-13", "MUST")
@pytest.mark.slow
def test_time_wait_lasts_two_msl(lab):
    """RFC 9293 §3.6.1: "When a connection is closed actively, it MUST linger in the TIME-WAIT state
    for a time 2xMSL (Maximum Segment Lifetime) (MUST-13)", and "For this specification the MSL is
    taken to be 2 minutes" (§3.4.2): 240 s. Measured by polling the stack's table once a second
    without sending anything, since segments restart the timer (§3.10.7.4 fifth/eighth). The length
    found is the stack's fingerprint (Linux: a fixed 60 s)."""
    conn, _, _ = into_time_wait(lab)
    entered = time.monotonic()  # the ACK of the peer's FIN has just arrived
    last_seen = 0.0
    while time.monotonic() - entered < TWO_MSL + 5.0:
        state = lab.target.conn_state(conn.dport, conn.sport)
        now = time.monotonic() - entered
        if state != "TIME-WAIT":
            assert state == "CLOSED", f"TIME-WAIT turned into {state}"
            break
        last_seen = now
        lab.peer.wait(1.0)
    else:
        lab.choice("TIME-WAIT", f"> {TWO_MSL:.0f} s")
        return
    assert last_seen > 0.0, "the connection was never seen in TIME-WAIT"
    lab.note("TIME-WAIT seconds", f"{last_seen:.1f}..{now:.1f}")
    # To 5 s, so the choice stays the same run to run (polled once a second) and a change is news.
    lab.choice("TIME-WAIT", f"about {round(last_seen / 5) * 5:.0f} s")
    assert last_seen >= TWO_MSL, (
        f"TIME-WAIT ended after {last_seen:.1f}..{now:.1f} s, less than 2xMSL = {TWO_MSL:.0f} s")
