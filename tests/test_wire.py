"""The peer's wire on a link of a target's own (a user-mode kernel's SEQPACKET socket), where no
packet filter chooses what the peer sees: the wire itself keeps the peer's queues to what the
veth's filter passes, and shows a case's watch what the target sent elsewhere."""
import socket
from types import SimpleNamespace

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from harness.lab import Addressing
from harness.peer import Wire


def _wire():
    peer_end, target_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    addr = Addressing(7)
    wire = Wire(SimpleNamespace(addr=addr), link=peer_end)
    return wire, target_end, addr


def _from_target(addr, src: str, dst: str, dport: int, flags="SA") -> bytes:
    return bytes(Ether(src=addr.target_mac, dst=addr.peer_mac) / IP(src=src, dst=dst) /
                 TCP(sport=80, dport=dport, flags=flags))


def test_a_segment_from_another_source_address_is_not_the_peers_but_a_watch_sees_it():
    wire, target, addr = _wire()
    with wire.watch(40000) as elsewhere:
        # An answer from the broadcast address the probe was sent to, then the real one.
        target.send(_from_target(addr, "198.18.7.255", addr.peer_ip, 40000, "RA"))
        target.send(_from_target(addr, addr.target_ip, addr.peer_ip, 40000, "SA"))
        pkt = wire.next_for(40000, deadline=0)
        assert pkt is not None and pkt[IP].src == addr.target_ip and str(pkt[TCP].flags) == "SA"
        assert wire.next_for(40000, deadline=0) is None  # the RST was not the peer's
        assert [(p[IP].src, str(p[TCP].flags)) for p in elsewhere.caught()] == [("198.18.7.255", "RA")]
    # Both frames are in the case's trace, in the order they came.
    assert [f.data[26:30] for f in wire.trace if not f.outgoing] == [socket.inet_aton("198.18.7.255"),
                                                                 socket.inet_aton(addr.target_ip)]


def test_a_segment_from_another_source_is_dropped_as_the_veths_filter_would():
    wire, target, addr = _wire()
    target.send(_from_target(addr, "198.18.9.9", addr.peer_ip, 40001))
    assert wire.next_for(40001, deadline=0) is None


def test_a_link_whose_other_end_closed_is_an_error_not_an_endless_wait():
    # A user-mode kernel that dies closes its end of the link: the socket is then readable for
    # ever, with nothing to read. A peer waiting for a segment must not spin past its deadline.
    import threading
    import time

    import pytest
    from harness.errors import TargetError

    wire, target, addr = _wire()
    target.close()
    outcome = {}

    def wait():
        try:
            outcome["got"] = wire.next_for(40002, deadline=time.monotonic() + 0.5)
        except TargetError as exc:
            outcome["error"] = str(exc)
    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    waiter.join(timeout=5)
    assert not waiter.is_alive(), "the wait for a segment went on past its deadline on a closed link"
    assert "closed" in outcome.get("error", ""), outcome
    with pytest.raises(TargetError, match="closed"):
        wire.next_for(40002, deadline=time.monotonic() + 0.1)
