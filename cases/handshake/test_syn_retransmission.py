"""An unanswered SYN (RFC 9293 §3.8.3, MUST-22 and MUST-23): retransmitted, for at least three
minutes, before the open attempt is given up."""
import time

import pytest

from harness.agent import OpError
from harness.markers import requirement
from harness.segments import Seg

THREE_MINUTES = 180.0


def _waited(lab, since: float) -> None:
    # A protocol timer the case waits out, not harness overhead.
    lab.peer.wire.waited += time.monotonic() - since


@requirement("MUST-23", "MUST")
@pytest.mark.slow
def test_unanswered_syn_is_retransmitted_for_at_least_three_minutes(lab):
    """RFC 9293 §3.8.3: "SYN retransmissions MUST be handled in the general way just described for
    data retransmissions", and "R2 for a SYN segment MUST be set large enough to provide
    retransmission of the segment for at least 3 minutes (MUST-23). The application can close the
    connection (i.e., give up on the open attempt) sooner, of course." The application here does
    not: connect() to a peer that never answers must still be pending, the SYN retransmitted, 180 s
    after the first SYN. R2 is the point where the attempt is given up ((c): "close the
    connection"), so that is what is timed; the case stops at 180 s, or when connect() fails."""
    for name in ("net.ipv4.tcp_syn_retries", "net.ipv4.tcp_syn_linear_timeouts"):
        try:
            lab.setting(name)
        except OSError:
            pass  # a kernel without it (linear timeouts came in Linux 6.5)
    port = lab.peer.listen_port()
    # The agent's own deadline lies past the three minutes: only the stack may end the attempt.
    job = lab.target.start("connect", port=port, timeout=THREE_MINUTES + 20.0)
    conn = lab.peer.expect_syn(port)
    first = conn.received[-1].synfin_t
    syns = [0.0]
    gave_up = None
    while (elapsed := time.monotonic() - first) < THREE_MINUTES:
        since = time.monotonic()
        seg = conn.next_segment(within=min(1.0, THREE_MINUTES - elapsed))
        _waited(lab, since)
        if seg is not None:
            conn.check(seg, Seg("S", seq=conn.irs, length=0, note="the same SYN again"),
                       why="the peer never answers: only the SYN may come again")
            syns.append(seg.synfin_t - first)
            continue
        try:
            job.wait(timeout=0)
        except OpError as exc:
            if exc.errno == "timeout":  # still connecting
                continue
            gave_up = (time.monotonic() - first, exc.errno)
            break
        raise AssertionError("connect() succeeded although the peer never answered")

    lab.note("SYNs sent, s after the first", ", ".join(f"{t:.1f}" for t in syns))
    with lab.step("the SYN is retransmitted", "MUST-22"):
        assert len(syns) > 1, "the SYN was never retransmitted" + (f" before the attempt ended ({gave_up[1]})"
                                                                    if gave_up else " in 3 minutes")
    if gave_up is None:
        lab.note("open attempt given up after", f"more than {THREE_MINUTES:.0f} s: still in SYN-SENT")
        # The attempt has served: an acceptable RST ends it (§3.10.7.3 second: "connection reset").
        conn.rst(ack=True)
        try:
            job.wait(timeout=3.0)
        except OpError:
            pass
        return
    after, errno = gave_up
    lab.note("open attempt given up after", f"{after:.1f} s ({errno}), last SYN at {syns[-1]:.1f} s")
    # The first line holds what stays the same run to run: the seconds vary with the stack's
    # timer slack (and the job is polled once a second), the count of SYNs does not.
    raise AssertionError(
        f"the open attempt was given up (connect: {errno}) after {len(syns)} SYNs, within 3 minutes "
        f"of the first\ngiven up {after:.1f} s after the first SYN; SYNs at {', '.join(f'{t:.1f}' for t in syns)} s")
