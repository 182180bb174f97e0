"""TIME-WAIT at the active closer (RFC 9293 §3.6, §3.6.1, §3.10.7.4; RFC 1337)."""
import time

import pytest

from harness.markers import requirement
from harness.segments import Seg, describe, seq_add

from .closing import into_time_wait, read_sysctl


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
    """Re-send the peer's FIN after a RST in TIME-WAIT: an ACK means TIME-WAIT survived, a RST
    (from the listener or CLOSED, SEQ = the FIN's ACK field) or nothing means it was ended."""
    conn.send_raw("FA", seq=seq_add(conn.snd_nxt, -1))
    reply = conn.next_segment(within=lab.timing.reply)
    state = lab.target.conn_state(conn.dport, conn.sport)
    if reply is not None and Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0).matches(reply):
        assert state == "TIME-WAIT", f"the FIN was ACKed as in TIME-WAIT, but the stack lists {state}"
        return "ignored (RFC 1337 F1): TIME-WAIT kept"
    if reply is None or Seg("R", seq=conn.rcv_nxt, tolerate="A").matches(reply):
        assert state == "CLOSED", f"no TIME-WAIT answer to the FIN, but the stack lists {state}"
        return "accepted (RFC 9293): TIME-WAIT assassinated" + (", FIN then got RST" if reply else "")
    raise AssertionError(f"unexpected answer to the FIN after the RST: {describe(reply, conn.view, True)}")


@requirement("RFC1337-3", "INFO")
def test_rst_in_time_wait_policy(lab):
    """RFC 9293 §3.10.7.4 second, TIME-WAIT: "If the RST bit is set, then enter the CLOSED state,
    delete the TCB"; RFC 1337 §3 fix (F1): "Ignore RST segments in TIME-WAIT state" (§4: "the best
    short-term solution"). Which one the stack applies is recorded, with Linux's switch."""
    lab.note("net.ipv4.tcp_rfc1337", read_sysctl(lab, "net.ipv4.tcp_rfc1337"))
    conn, _, _ = into_time_wait(lab)
    conn.rst()
    lab.note("rst_in_time_wait", _probe_after_rst(lab, conn))


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
