"""SYNs with addresses no connection may have (RFC 9293 §3.9.2.3, quoting RFC 1122 §4.2.3.10):
to a broadcast or multicast destination, from a broadcast or multicast source.

Every frame still goes to the target's own MAC, so only the IP address differs from a normal
SYN. Silence is proven in order: a normal SYN from the peer's own address on the same port follows
each probe, and the first answer must be its SYN,ACK. An answer to the probe could carry another
source address than the target's (a stack that answers from the address the SYN was sent to),
which the peer's wire does not pick up: a second watch on the link catches every TCP segment the
target's MAC sends to the probe's port that is not addressed from the target to the peer.
"""
import ipaddress
import select
import time

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from harness import rawsock
from harness.markers import requirement
from harness.peer import Frame, Mismatch
from harness.segments import Seg, describe, flag_words, seq_add, seq_diff

# A probe's ISS far from the follow-up's, so an answer tells which SYN it acknowledges.
PROBE_OFFSET = 0x40000000


class _Elsewhere:
    """The target's TCP segments to `conn`'s port that the peer's wire does not queue: those not
    sent from the target's address to the peer's. Each one is also added to the case's trace.
    On the lab's veth a second packet socket catches them; on a target's own link (a user-mode
    kernel's), which carries every frame it sends, the wire's own watch does."""

    def __init__(self, lab, conn):
        self.lab = lab
        self.sock = self._watch = None
        if lab.peer.wire.own_link:
            self._watch = lab.peer.wire.watch(conn.sport)
            return
        addr = lab.peer.addr
        link = lab.session.lab
        bpf = (f"tcp dst port {conn.sport} and ether src {addr.target_mac} "
               f"and not (src host {addr.target_ip} and dst host {addr.peer_ip})")
        self.sock = rawsock.open_in(link.peer_netns_path(), link.peer_if, bpf, stamped=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._watch is not None:
            self._watch.close()
        else:
            self.sock.close()
        return False

    def caught(self) -> list[Ether]:
        """What has arrived so far (nothing is waited for: whatever the target sent before the
        follow-up's answer came is already here)."""
        if self._watch is not None:
            return self._watch.caught()
        out = []
        while select.select([self.sock], [], [], 0)[0]:
            data, stamp = rawsock.recv_stamped(self.sock)
            if not data:
                continue
            # Read late: its arrival is put back on the monotonic clock from the capture's stamp.
            now = time.monotonic()
            t = now - max(0.0, time.time() - stamp) if stamp else now
            self.lab.peer.wire.trace.append(Frame(t, False, data))
            out.append(Ether(data))
        return out


def _send_probe(lab, conn, iss: int, src: str | None = None, dst: str | None = None):
    """A SYN on `conn`'s ports with other IP addresses, outside the connection's own numbers."""
    wire = lab.peer.wire
    wire.send(wire.frame(conn.segment("S", seq=iss), src=src, dst=dst))


def _follow_up_answered_first(lab, conn, probe: str, requirement: str) -> None:
    """The follow-up SYN's SYN,ACK must be the first segment back on the port. If nothing comes
    at all, the follow-up was owed its SYN,ACK (§3.10.7.2 third), and silence proves nothing."""
    conn.syn()
    with lab.step("the first answer is the follow-up's SYN,ACK", requirement, gate=True) as step:
        try:
            conn.expect_next(Seg("SA", ack=seq_add(conn.iss, 1), note="the follow-up SYN's SYN,ACK"),
                             why=f"the SYN {probe} must be discarded silently: no SYN,ACK, no RST")
        except Mismatch as exc:
            if exc.got_t is None:
                step.requirement = "R9293-3.10.7.2/third"
            raise
    conn.rst()  # the follow-up has served: its half-open connection is not left behind


def _no_state_from_the_probe(lab, conn, probe: str) -> None:
    """§3.9.2.3: the rule "prevents connection state and replies from being erroneously
    generated". Every connection the stack holds on the port must be the follow-up's (the
    target's address, the peer's): a stack may send its SYN,ACKs in an order of its own, but its
    table shows a half-open connection the probe made whenever it was made."""
    addr = lab.peer.addr
    others = [c for c in lab.target.conns(local_port=conn.dport, remote_port=conn.sport)
              if (c["local"][0], c["remote"][0]) != (addr.target_ip, addr.peer_ip)]
    assert not others, (
        f"the SYN {probe} made a connection: {others[0]['state']} "
        f"from {_kind(others[0]['local'][0], conn)} to {_kind(others[0]['remote'][0], conn)}"
        f"\nevery connection on the port: {lab.target.conns(local_port=conn.dport)}")


def _nothing_elsewhere(conn, watch: _Elsewhere, probe: str, probe_iss: int) -> None:
    """No segment sent under other addresses; the first line says what came, in stable words."""
    caught = watch.caught()
    if not caught:
        return
    pkt = caught[0]
    ip, tcp = pkt[IP], pkt[TCP]
    if "A" in str(tcp.flags):
        what = f"{flag_words(tcp.flags)} ack={seq_diff(tcp.ack, probe_iss)} (relative to the probe's ISS)"
    else:
        what = flag_words(tcp.flags)
    raise Mismatch(f"expected silence; received {what} from {_kind(ip.src, conn)} to {_kind(ip.dst, conn)}\n"
                   f"the SYN {probe} must be discarded silently\n"
                   f"IP {ip.src} -> {ip.dst}, Ethernet {pkt.src} -> {pkt.dst}; {len(caught)} such segment(s):\n"
                   + "\n".join(f"    {describe(p[TCP], conn.view, True)}" for p in caught),
                   conn.sport, ["silence"], None)


def _kind(ip: str, conn) -> str:
    """An address in words that do not change from lab to lab."""
    addr = conn.peer.addr
    net = ipaddress.ip_network(f"{addr.target_ip}/24", strict=False)
    if ip == addr.target_ip:
        return "the target's address"
    if ip == addr.peer_ip:
        return "the peer's address"
    if ip == str(net.broadcast_address):
        return "the subnet broadcast address"
    return ip


def _subnet_broadcast(lab) -> str:
    return str(ipaddress.ip_network(f"{lab.target.ip}/24", strict=False).broadcast_address)


DESTINATIONS = {
    "subnet_broadcast": _subnet_broadcast,            # the lab's /24 broadcast address
    "all_hosts_multicast": lambda lab: "224.0.0.1",   # every host is in this group
}
# Bound to the target's address, a broadcast SYN matches no listener; on any address, it would.
LISTENERS = {"own_address": None, "any_address": "0.0.0.0"}


@requirement("MUST-57", "MUST")
@pytest.mark.parametrize("listener", list(LISTENERS))
@pytest.mark.parametrize("destination", list(DESTINATIONS))
def test_syn_to_broadcast_or_multicast_address_is_silently_discarded(lab, destination, listener):
    """RFC 9293 §3.9.2.3 (quoting RFC 1122): "A TCP implementation MUST silently discard an
    incoming SYN segment that is addressed to a broadcast or multicast address (MUST-57)." The
    SYN goes to the target's MAC with an IP destination of the lab's subnet broadcast or
    224.0.0.1, to a port the target listens on (on its own address, or on any): no SYN,ACK and no
    RST, under any source address, before the answer to a normal SYN that follows."""
    port = lab.port()
    lab.target.listen(port, addr=LISTENERS[listener])
    conn = lab.peer.connection(port)
    dst = DESTINATIONS[destination](lab)
    probe = f"addressed to {destination.replace('_', ' ')} {dst}"
    _probe_is_ignored(lab, conn, probe, "MUST-57", dst=dst)


SOURCES = {
    "limited_broadcast": lambda lab: "255.255.255.255",   # RFC 1122 §3.2.1.3 (c)
    "subnet_broadcast": _subnet_broadcast,                # RFC 1122 §3.2.1.3 (e)
    "multicast": lambda lab: "224.0.0.5",                 # a class D address is never a source
}


@requirement("MUST-63", "MUST")
@pytest.mark.parametrize("source", list(SOURCES))
def test_syn_from_invalid_source_address_is_ignored(lab, source):
    """RFC 9293 §3.9.2.3 (quoting RFC 1122): "An incoming SYN with an invalid source address MUST
    be ignored either by TCP or by the IP layer (MUST-63) (see Section 3.2.1.3)." RFC 1122
    §3.2.1.3: the limited broadcast { -1, -1 } and a directed broadcast "MUST NOT be used as a
    source address"; a multicast (class D) address names a group, not a sender. The SYN to a
    listening port is ignored: no SYN,ACK and no RST (to whichever address) before the answer to a
    normal SYN from the peer's own address on the same port."""
    # Linux checks a source against its routes (a broadcast route fails it) only with reverse-path
    # filtering on: the larger of the two values applies.
    lab.setting("net.ipv4.conf.all.rp_filter")
    lab.setting(f"net.ipv4.conf.{lab.session.spec.ifname}.rp_filter")
    port = lab.port()
    lab.target.listen(port)
    conn = lab.peer.connection(port)
    src = SOURCES[source](lab)
    probe = f"from {source.replace('_', ' ')} {src}"
    _probe_is_ignored(lab, conn, probe, "MUST-63", src=src)


def _probe_is_ignored(lab, conn, probe: str, rid: str, **addrs) -> None:
    """The SYN with other addresses, then proof that it got no answer anywhere and left no state."""
    probe_iss = seq_add(conn.iss, PROBE_OFFSET)
    with _Elsewhere(lab, conn) as watch:
        _send_probe(lab, conn, probe_iss, **addrs)
        _follow_up_answered_first(lab, conn, probe, rid)
        _no_state_from_the_probe(lab, conn, probe)
        _nothing_elsewhere(conn, watch, probe, probe_iss)
