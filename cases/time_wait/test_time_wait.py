"""TIME-WAIT at the active closer (RFC 9293 §3.6, §3.6.1, §3.10.7.4; RFC 1337)."""
import time

import pytest

from harness.markers import requirement
from harness.segments import Seg, seq_add

from .closing import into_time_wait


@requirement("R9293-3.6", "MUST")
def test_closer_enters_time_wait_after_the_four_way_close(lab):
    """§3.6 case 1 / Figure 12: the side that closes first sends FIN (FIN-WAIT-1), gets it ACKed
    (FIN-WAIT-2), ACKs the remote FIN and enters TIME-WAIT (§3.10.7.4 eighth, FIN-WAIT-2:
    "Enter the TIME-WAIT state. Start the time-wait timer")."""
    conn, _, _ = into_time_wait(lab)
    assert lab.target.conn_state(conn.dport, conn.sport) == "TIME-WAIT"


@requirement("R9293-3.10.7.4/fifth", "MUST")
def test_retransmitted_fin_in_time_wait_is_acked_again(lab):
    """§3.10.7.4 fifth, TIME-WAIT: "The only thing that can arrive in this state is a
    retransmission of the remote FIN. Acknowledge it, and restart the 2 MSL timeout." The ACK is
    <SEQ=SND.NXT><ACK=RCV.NXT>, i.e. the same as the one that answered the first FIN."""
    conn, _, _ = into_time_wait(lab)
    conn.send_raw("FA", seq=seq_add(conn.snd_nxt, -1))
    conn.expect(Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="ACK of the FIN again"))
    assert lab.target.conn_state(conn.dport, conn.sport) == "TIME-WAIT"


def _probe_after_rst(lab, conn) -> str:
    """Re-send the peer's FIN after a RST in TIME-WAIT. Either answer is owed, and only the answer
    (with the stack's own table beside it) tells whether TIME-WAIT survived; silence tells nothing
    and fails the step that owed the answer."""
    listed = lab.target.conn_state(conn.dport, conn.sport)
    conn.send_raw("FA", seq=seq_add(conn.snd_nxt, -1))
    if listed == "TIME-WAIT":
        # §3.10.7.4 fifth, TIME-WAIT: a retransmission of the remote FIN: "Acknowledge it".
        with lab.step("TIME-WAIT kept: the old FIN is ACKed", "R9293-3.10.7.4/fifth"):
            conn.expect(Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="ACK of the FIN again"))
        return "ignored (RFC 1337 F1): TIME-WAIT kept"
    # The tuple is gone and the listener is still open: §3.10.7.2 second, LISTEN: "An acceptable
    # reset segment should be formed for any arriving ACK-bearing segment ... <SEQ=SEG.ACK><CTL=RST>".
    with lab.step("TIME-WAIT ended: the listener resets the old FIN", "R9293-3.10.7.2/second"):
        assert listed == "CLOSED", f"after the RST the stack lists the tuple as {listed}"
        conn.expect(Seg("R", seq=conn.rcv_nxt, tolerate="A", note="RST at SEG.ACK"))
    return "accepted (RFC 9293): TIME-WAIT assassinated, the old FIN then got RST"


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


@pytest.mark.slow
@requirement("MUST-13", "INFO")
def test_time_wait_lasts_two_msl(lab):
    """§3.6.1: "When a connection is closed actively, it MUST linger in the TIME-WAIT state for a
    time 2xMSL (MUST-13)" (MSL = 2 min, so 240 s). Measured by polling the stack's table once a
    second without sending anything, since segments restart the timer (§3.10.7.4 fifth/eighth).
    Linux uses a fixed 60 s."""
    conn, _, _ = into_time_wait(lab)
    entered = time.monotonic()  # the ACK of the peer's FIN has just arrived
    last_seen = 0.0
    while time.monotonic() - entered < 300.0:
        state = lab.target.conn_state(conn.dport, conn.sport)
        now = time.monotonic() - entered
        if state != "TIME-WAIT":
            assert state == "CLOSED", f"TIME-WAIT turned into {state}"
            break
        last_seen = now
        lab.peer.wait(1.0)
    else:
        lab.note("time_wait_seconds", "> 300 (still TIME-WAIT when the case gave up)")
        return
    assert last_seen > 0.0, "the connection was never seen in TIME-WAIT"
    lab.note("time_wait_seconds", f"{last_seen:.1f}..{now:.1f} (2MSL with MSL = 2 min: 240)")
