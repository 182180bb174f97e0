"""Reopening a 4-tuple that is in TIME-WAIT (RFC 9293 §3.6.1 MAY-2, SHLD-4; RFC 6191)."""
from harness.agent import OpError
from harness.markers import requirement
from harness.peer import Mismatch
from harness.segments import Seg, seq_add, seq_diff

from .closing import close_first, into_time_wait, tsval


# Attempts at reopening, each on a TIME-WAIT incarnation of its own 4-tuple. A stack whose new
# ISS lands below the old SND.NXT by chance (a hash of the tuple, unrelated to the old ISS) does
# so about every other time: it shows in none of 14 with probability 2^-14 < 10^-4.
ATTEMPTS = 14


def _above(new: int, old: int) -> bool:
    """new lies above old in sequence (or timestamp) space: (new - old) mod 2^32 in (0, 2^31)."""
    return seq_diff(new, old) > 0


def _reopens_above(lab, reopen, rule: str, ack_kw=dict) -> bool:
    """MAY-2 (1) over up to ATTEMPTS reopened incarnations: `reopen()` brings a fresh 4-tuple into
    TIME-WAIT and sends the new SYN; it returns (old, listener, new, SYN,ACK), or None when the
    stack refused (False is returned then, at the first attempt only; a later refusal fails).
    A reopening is recorded as the choice `rule` before its ISS is judged.
    The first reopened connection is completed and must stay ESTABLISHED; the others are reset
    in SYN-RECEIVED once their ISS is known. Stops at the first ISS not above the old SND.NXT;
    every difference new ISS - old SND.NXT is noted."""
    differences = []
    try:
        for attempt in range(1, ATTEMPTS + 1):
            got = reopen()
            if got is None:
                assert attempt == 1, f"the stack reopened TIME-WAIT {attempt - 1} times, then refused"
                return False
            old, listener, new, synack = got
            lab.choice("reopen_rule", rule)
            differences.append(seq_diff(synack.seq, old.rcv_nxt))
            if attempt == 1:
                new.ack(**ack_kw())
                # §3.10.7.4 fifth, SYN-RECEIVED: the ACK of the SYN,ACK enters ESTABLISHED; the new
                # incarnation's user has not closed, so no FIN may follow.
                with lab.step("the reopened connection is ESTABLISHED", "R9293-3.10.7.4/fifth"):
                    sock = lab.target.accept(listener)
                    new.expect_silence()
                    assert lab.target.state(sock) == "ESTABLISHED"
            else:
                new.rst()
            if not _above(synack.seq, old.rcv_nxt):
                break
    finally:
        if differences:
            lab.note("new_iss_minus_old_snd_nxt", differences)
    assert _above(synack.seq, old.rcv_nxt), (
        f"MAY-2 (1): the new ISS {synack.seq:#010x} is not above the old connection's SND.NXT "
        f"{old.rcv_nxt:#010x} (attempt {len(differences)} of up to {ATTEMPTS}; new ISS - old SND.NXT: {differences})")
    return True


@requirement("MAY-2", "INFO")
def test_syn_with_higher_sequence_number_reopens_time_wait(lab):
    """§3.6.1: TIME-WAIT "MAY accept a new SYN from the remote TCP endpoint to reopen the connection
    directly from TIME-WAIT state (MAY-2), if it: (1) assigns its initial sequence number for the
    new connection to be larger than the largest sequence number it used on the previous
    connection incarnation". The SYN carries no timestamps and SEQ = old RCV.NXT + 100000, so
    only the sequence rule can admit it. Whether the stack reopens is recorded; if it does, (1)
    is checked on up to 14 incarnations, each of a fresh 4-tuple (an ISS below the old SND.NXT
    by chance shows in one of them), and the first reopened connection must be ESTABLISHED."""

    def reopen():
        old, listener, _ = into_time_wait(lab)
        new = lab.peer.connection(old.dport, sport=old.sport, iss=seq_add(old.snd_nxt, 100000))
        new.syn()
        # Not reopening is allowed, but the SYN is owed an answer: it lies beyond RCV.WND, so
        # §3.10.7.4 first: "If an incoming segment is not acceptable, an acknowledgment should be
        # sent in reply" (<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>); not a RST (RFC 793 reset only an
        # in-window SYN). Silence cannot tell a refusal from a lost answer.
        with lab.step("the SYN in TIME-WAIT is answered", "R9293-3.10.7.4/first", gate=True):
            reply = new.expect(Seg("SA", ack=seq_add(new.iss, 1), note="reopened")
                               | Seg("A", seq=old.rcv_nxt, ack=old.snd_nxt, length=0,
                                     note="refused: TIME-WAIT's ACK"))
        return (old, listener, new, reply) if "S" in str(reply.flags) else None

    if not _reopens_above(lab, reopen, "sequence (SYN without timestamps, SEQ above RCV.NXT, accepted)"):
        lab.choice("reopen_rule", "sequence rule not used: the SYN got TIME-WAIT's ACK <SEQ=SND.NXT><ACK=RCV.NXT>")


@requirement("SHLD-4", "SHOULD")
def test_syn_with_newer_timestamp_reopens_time_wait(lab):
    """§3.6.1: "When the TCP Timestamp Options are available, an improved algorithm is described
    in [40] (RFC 6191) ... that SHOULD be implemented (SHLD-4)"; §3.10.7.4 first: with it, the
    sequence check "is not applicable for incoming SYN segments with Timestamp Options, received
    on a connection in the TIME-WAIT state". Old connection with timestamps; the new SYN has a
    LOWER SEQ (old RCV.NXT - 10^6) but a TSval 1000 above the last one the target saw, so only the
    timestamp rule can admit it: SYN,ACK with ISS above the old SND.NXT (MAY-2 (1): "assigns its
    initial sequence number for the new connection to be larger than the largest sequence number
    it used on the previous connection incarnation", checked on up to 14 incarnations of fresh
    4-tuples), then accept() and ESTABLISHED."""
    lab.target.require("timestamps")
    current = {}

    def reopen():
        old, listener, fin = into_time_wait(lab, timestamps=True)
        lab.need(old.timestamps and old.ts_recent is not None, "the old connection did not negotiate timestamps",
                 "net.ipv4.tcp_timestamps")
        new = lab.peer.connection(old.dport, sport=old.sport, iss=seq_add(old.snd_nxt, -10**6), timestamps=True)
        syn_ts = seq_add(tsval(fin), 1000)
        new.syn(options=[("MSS", new.mss), ("Timestamp", (syn_ts, 0))])
        synack = new.expect(Seg("SA", ack=seq_add(new.iss, 1), note="SYN,ACK: the tuple is reopened"))
        echoed = [v[1] for n, v in synack.options if n == "Timestamp"]
        assert echoed == [syn_ts], f"SYN,ACK TSecr {echoed} should echo the SYN's TSval {syn_ts}"
        current.update(old=old, new=new)
        return old, listener, new, synack

    def ack_kw():
        # The new incarnation's clock continues the old one's, 1000 ticks ahead (so >= syn_ts).
        old, new = current["old"], current["new"]
        return {"options": [("Timestamp", (seq_add(old.tsval(), 1000), new.ts_recent or 0))]}

    _reopens_above(lab, reopen, "timestamps (SYN with lower SEQ but newer TSval accepted)", ack_kw)


def _reconnect(lab, old, local_port: int | None, **conn_kw):
    """connect() again to the same peer address and port, from `local_port` (bound, with
    SO_REUSEADDR) or from a port the stack picks: (new connection with its handshake completed,
    its SYN, None), or (None, None, errno) when the stack refuses."""
    args = {"port": old.sport, "timeout": 3.0}
    if local_port is not None:
        args.update(bind_addr=lab.target.ip, bind_port=local_port, reuseaddr=True)
    job = lab.target.start("connect", **args)
    try:
        job.wait(timeout=0.05)  # a refusal (bind/connect errno) comes at once
    except OpError as exc:
        if exc.errno != "timeout":
            return None, None, exc.errno
    else:
        raise AssertionError("connect() returned before the peer answered any SYN")
    try:
        new = lab.peer.expect_syn(old.sport, **conn_kw)
    except Mismatch:
        # No SYN: only connect() failing with an errno of its own is a refusal; still pending
        # (the agent's "timeout") is no answer at all.
        try:
            job.wait(timeout=3.0)
        except OpError as exc:
            if exc.errno != "timeout":
                return None, None, exc.errno
            raise AssertionError("connect() sent no SYN and did not fail within 3 s") from None
        raise AssertionError("connect() succeeded without a SYN on the wire") from None
    syn = new.received[-1]
    # The stack let connect() reuse the tuple: the new connection must then open normally.
    with lab.step("the new connection's handshake", "R9293-3.10.7.3/fourth", gate=True):
        new.syn(ack=True)
        new.expect(Seg("A", seq=new.rcv_nxt, ack=seq_add(new.iss, 1), length=0, note="final ACK of the handshake"))
        sock = lab.target.adopt(job.wait(timeout=3.0)["sock"])
        assert lab.target.state(sock) == "ESTABLISHED"
    return new, syn, None


def _check_reused(lab, old, syn, old_ts=None) -> None:
    """The SYN of the new incarnation: SEQ above the old SND.NXT (MAY-2 (1)) and, with
    timestamps, TSval not below the old connection's last one. PAWS takes a segment for an old
    one when "SEG.TSval < TS.Recent" (RFC 7323 §5.3 R1): an equal TSval is a reconnect within
    one tick of the old connection's last segment (a 1 ms clock, §5.4), recorded as a note."""
    lab.note("new_iss_minus_old_snd_nxt", seq_diff(syn.seq, old.rcv_nxt))
    assert _above(syn.seq, old.rcv_nxt), (
        f"the new SYN's SEQ {syn.seq:#010x} is not above the old SND.NXT {old.rcv_nxt:#010x}")
    if old_ts is not None:
        new_ts = tsval(syn)
        assert new_ts is not None, "the new SYN carries no Timestamp option"
        lab.note("new_tsval_minus_old", seq_diff(new_ts, old_ts))
        assert seq_diff(new_ts, old_ts) >= 0, (
            f"the new SYN's TSval {new_ts} is below the old connection's last TSval {old_ts}: "
            "PAWS would take the new incarnation's segments for old ones")


def _into_time_wait_from_active_open(lab, bind_port=None, **conn_kw):
    """The target connects (from `bind_port` if given) and closes first: the old connection."""
    conn, sock = lab.active_open(bind_port=bind_port, **conn_kw)
    if conn_kw.get("timestamps"):
        lab.need(conn.timestamps and tsval(conn.received[0]) is not None and conn.ts_recent is not None,
                 "the target's SYN carried no Timestamp option", "net.ipv4.tcp_timestamps")
    close_first(lab, conn, sock)
    with lab.step("TIME-WAIT", "R9293-3.6", gate=True):
        assert lab.target.conn_state(conn.dport, conn.sport) == "TIME-WAIT"
    return conn


@requirement("SHLD-4", "INFO")
def test_target_reconnects_from_its_bound_time_wait_port_with_timestamps(lab):
    """§3.6.1 MAY-2/SHLD-4 from the closer's own side: the target reopens a 4-tuple it holds in
    TIME-WAIT by binding the same local port (SO_REUSEADDR) and connecting again. Safe only if
    the new SYN's SEQ is above every sequence number of the old incarnation (MAY-2 (1)) and, with
    timestamps, its TSval not below the old ones, so PAWS (RFC 7323 §5.3) does not take the new
    incarnation for the old one.
    Whether the stack allows it is recorded; if it does, SEQ and TSval are checked. (Linux
    allows it for an explicitly bound port whenever timestamps were used, whatever
    net.ipv4.tcp_tw_reuse says.)"""
    lab.target.require("bind_port", "timestamps")
    lab.setting("net.ipv4.tcp_tw_reuse")
    local_port = lab.port()
    old = _into_time_wait_from_active_open(lab, bind_port=local_port, timestamps=True)
    new, syn, errno = _reconnect(lab, old, local_port, timestamps=True)
    if new is None:
        lab.choice("reuse", f"refused: connect() failed with {errno}")
        return
    lab.choice("reuse", "allowed (bound port, timestamps)")
    _check_reused(lab, old, syn, old.ts_recent)


@requirement("MAY-2", "INFO")
def test_target_reconnects_from_its_bound_time_wait_port_without_timestamps(lab):
    """§3.6.1 MAY-2 from the closer's own side, without timestamps: reopening is safe only if the
    new ISS is above the old incarnation's sequence numbers (MAY-2 (1)), and nothing but the
    sequence number protects the new incarnation from old duplicates. The outcome is recorded
    (Linux refuses: connect() fails with EADDRNOTAVAIL); if the stack reuses, SEQ is checked."""
    lab.target.require("bind_port")
    lab.setting("net.ipv4.tcp_tw_reuse")
    local_port = lab.port()
    old = _into_time_wait_from_active_open(lab, bind_port=local_port)
    new, syn, errno = _reconnect(lab, old, local_port)
    if new is None:
        lab.choice("reuse", f"refused: connect() failed with {errno}")
        return
    lab.choice("reuse", "allowed (bound port, sequence numbers only)")
    _check_reused(lab, old, syn)


@requirement("SHLD-4", "INFO")
def test_target_reuses_a_time_wait_port_as_ephemeral_port_with_tcp_tw_reuse(lab):
    """§3.6.1 MAY-2/SHLD-4, the stack's own choice of local port: with only one ephemeral port
    available (net.ipv4.ip_local_port_range pinned to it), the second connect() to the same peer
    address and port needs the tuple held in TIME-WAIT. Linux grants it under net.ipv4.tcp_tw_reuse
    = 1 (set here; the default 2 means loopback only) with timestamps, once 1 s
    (tcp_tw_reuse_delay) has passed since the last timestamp. Outcome recorded; if reused, the
    new SYN's SEQ and TSval are checked as above the old incarnation's."""
    lab.target.require("timestamps")
    lab.setting("net.ipv4.tcp_tw_reuse")
    lab.setting("net.ipv4.tcp_tw_reuse_delay")
    port = lab.port()
    lab.target.sysctl("net.ipv4.ip_local_port_range", f"{port} {port}")
    lab.target.sysctl("net.ipv4.tcp_tw_reuse", 1)
    old = _into_time_wait_from_active_open(lab, timestamps=True)
    assert old.dport == port, f"the stack connected from {old.dport}, outside ip_local_port_range"
    lab.peer.wait(1.1)  # Linux reuses only tcp_tw_reuse_delay (1 s) after the last timestamp
    new, syn, errno = _reconnect(lab, old, None, timestamps=True)
    if new is None:
        lab.choice("reuse", f"refused: connect() failed with {errno}")
        return
    assert new.dport == port
    lab.choice("reuse", "allowed (tcp_tw_reuse=1, timestamps)")
    _check_reused(lab, old, syn, old.ts_recent)
