"""Passive open, seen through the API (RFC 9293 §3.10.7.2, §3.10.7.4 fifth): SYN-RECEIVED until the ACK."""
import pytest

from harness.agent import OpError
from harness.markers import requirement
from harness.segments import Seg, seq_add


@requirement("R9293-3.10.7.2/third", "MUST")
def test_listener_holds_syn_received_until_the_acceptable_ack(lab):
    """§3.10.7.2 third: after sending <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK> "The connection state should
    be changed to SYN-RECEIVED"; §3.10.7.4 fifth: "If SND.UNA < SEG.ACK =< SND.NXT, then enter
    ESTABLISHED state". Nothing is accepted before the ACK; the listener stays in LISTEN."""
    port = lab.port()
    listener = lab.target.listen(port)
    conn = lab.peer.connection(port)
    conn.syn()
    conn.expect(Seg("SA", ack=seq_add(conn.iss, 1)))
    assert lab.target.conn_state(port, conn.sport) == "SYN-RECEIVED"
    with pytest.raises(OpError) as refused:
        lab.target.accept(listener, timeout=0.05)
    assert refused.value.errno == "timeout", f"accept() before the ACK: {refused.value}"

    conn.ack()  # <SEQ=ISS+1><ACK=T.ISS+1>
    sock = lab.target.accept(listener)
    assert lab.target.state(sock) == "ESTABLISHED"
    assert lab.target.state(listener) == "LISTEN"
    assert lab.target.conn_state(port, conn.sport) == "ESTABLISHED"
