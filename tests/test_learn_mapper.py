"""The learner's naming of segments and outputs (harness/learn/alphabet.py), and the one place
where the oracle check stands back: a SYN a full backlog drops."""
from harness.learn import conformance
from harness.learn.alphabet import join, name_segment

from mealy_sim import machine


def test_a_segment_is_named_by_its_flags_and_what_deviates():
    # The peer's RCV.NXT is 1000, its SND.NXT 500; the target's ISN was 999.
    assert name_segment("A", 1000, 500, 0, 1000, 500, 999) == "A"
    assert name_segment("A", 1000, 499, 0, 1000, 500, 999) == "A(a-1)"
    assert name_segment("RA", 0, 501, 0, 1000, 500, 999) == "RA(s=0,a+1)"
    assert name_segment("SA", 999, 500, 0, 1000, 500, 999) == "SA"  # a SYN against the first ISN
    assert name_segment("SA", 5, 500, 0, 1000, 500, 999) == "SA(s?)"
    assert name_segment("A", 1000, 500, 3, 1000, 500, 999) == "A(len=3)"


def test_outputs_join_calls_and_segments():
    assert join([]) == "TIMEOUT"
    assert join(["A", "FA"]) == "A+FA"
    assert join(["FA"], "ok") == "ok;FA"
    assert join([], "timeout") == "timeout"


ALPHABET = ["SYN", "ACK", "RST"]


def listener(second_syn: str):
    table = {
        "listen": {"SYN": ("SA", "syn_rcvd"), "ACK": ("R(s=0)", "listen"), "RST": ("TIMEOUT", "listen")},
        "syn_rcvd": {"SYN": ("A(a-1)", "syn_rcvd"), "ACK": ("TIMEOUT", "syn_rcvd"), "RST": ("TIMEOUT", "full")},
        # After the RST the listener's backlog of 1 may still hold the connection.
        "full": {"SYN": (second_syn, "full"), "ACK": ("R(s=0)", "full"), "RST": ("TIMEOUT", "full")},
    }
    return machine(table, alphabet=ALPHABET, tcp_states={"listen": "LISTEN", "syn_rcvd": "SYN-RECEIVED",
                                                          "full": "LISTEN"})


def test_a_syn_dropped_by_a_full_backlog_is_not_a_finding():
    found = [(c["tcp_state"], c["input"]) for c in conformance.check(listener("TIMEOUT"))
             if c["verdict"] == "forbidden"]
    assert ("LISTEN", "SYN") not in found


def test_a_fresh_listener_silent_to_a_syn_is_a_finding():
    table = listener("SA")
    table.transitions[("listen", "SYN")] = ("TIMEOUT", "listen")
    found = [(c["state"], c["input"]) for c in conformance.check(table) if c["verdict"] == "forbidden"]
    assert ("listen", "SYN") in found


class _Wire:
    """The target's segments as the lane's collect reads them: queued per peer port, stamped."""

    def __init__(self):
        self.queues: dict[int, list] = {}
        self.sent: list = []

    def frame(self, tcp):
        return tcp

    def send(self, tcp):
        self.sent.append(tcp)

    def deliver(self, dport: int, t: float, **fields):
        from scapy.layers.inet import IP, TCP
        pkt = IP(src="198.18.0.2", dst="198.18.0.1") / TCP(dport=dport, **fields)
        pkt[TCP].synfin_t = t
        self.queues.setdefault(dport, []).append(pkt)

    def next_for(self, port, deadline):
        queue = self.queues.get(port)
        return queue.pop(0) if queue else None


def _lane(side="client"):
    from types import SimpleNamespace
    from harness.learn.lanes import Lane
    from harness.ports import PortPool
    system = SimpleNamespace(session=SimpleNamespace(target_ports=PortPool(start=30000), peer_ports=PortPool(start=40000)),
                             peer=SimpleNamespace(addr=SimpleNamespace(peer_ip="198.18.0.1")),
                             target=SimpleNamespace(ip="198.18.0.2"), wire=_Wire())
    return Lane(system, side), system.wire


def test_a_copy_of_the_targets_syn_is_a_retransmission_however_soon_it_comes():
    # Linux answers a bad ACK in SYN-SENT with a RST and re-arms its SYN timer to two jiffies
    # (a few ms): the copy lands before or after the next barrier by chance, so it must never
    # count as an answer, or the same word answers two ways.
    lane, wire = _lane()
    wire.deliver(lane.conn.sport, 10.0, sport=lane.tport, flags="S", seq=7000)
    assert lane.collect() == ["S"]
    wire.deliver(lane.conn.sport, 10.003, sport=lane.tport, flags="R", seq=0)
    wire.deliver(lane.conn.sport, 10.006, sport=lane.tport, flags="S", seq=7000)
    assert lane.collect() == ["R(s=0)"]
    # A SYN with another ISN is an answer, named against the ISN the peer knows.
    wire.deliver(lane.conn.sport, 10.010, sport=lane.tport, flags="S", seq=9000)
    assert lane.collect() == ["S(s?)"]


def test_after_its_rst_the_client_sides_peer_still_acknowledges_the_targets_syn():
    # A RST without ACK is dropped in SYN-SENT (RFC 9293 §3.10.7.3): the target's socket still
    # waits for its SYN,ACK, and the peer's next ACK must be the acceptable one, ISS+1, as the
    # oracle table's SYN-SENT rows (harness/learn/conformance.py) take it to be.
    lane, wire = _lane()
    sport = lane.conn.sport
    wire.deliver(sport, 1.0, sport=lane.tport, flags="S", seq=7000)
    assert lane.collect() == ["S"]
    lane.send_segment("RST")
    assert lane.collect() == []
    lane.send_segment("ACK")
    ack = wire.sent[-1]
    assert (ack.sport, ack.flags, ack.ack) == (sport, "A", 7001)
    lane.send_segment("SYNACK")
    assert wire.sent[-1].ack == 7001


def test_each_connect_of_the_client_side_is_a_connection_of_its_own():
    # A second socket's SYN is named against its own ISN, on a peer port of its own (the first
    # socket's leftovers, TIME-WAIT or a FIN still retransmitted, never meet it).
    lane, wire = _lane()
    first = lane.conn.sport
    assert lane.call_for("CONNECT")[0][1]["port"] == first
    lane.called("CONNECT", {"sock": 1})
    wire.deliver(first, 1.0, sport=lane.tport, flags="S", seq=7000)
    assert lane.collect() == ["S"]
    lane.call_for("CLOSE")
    lane.called("CLOSE", {})
    call, _ = lane.call_for("CONNECT")
    second = call[1]["port"]
    assert second != first and lane.conn.sport == second
    lane.called("CONNECT", {"sock": 2})
    wire.deliver(second, 2.0, sport=lane.tport, flags="S", seq=123456)
    assert lane.collect() == ["S"]
    lane.send_segment("ACK")
    assert (wire.sent[-1].dport, wire.sent[-1].ack) == (lane.tport, 123457)


def test_a_new_incarnations_syn_ack_is_the_one_the_peer_acknowledges():
    # SYN FIN ACCEPT CLOSE ACK leaves the pair closed without a RST (the peer's ACK of the FIN
    # ends LAST-ACK): the next SYN on the same ports opens a new connection, whose SYN,ACK has a
    # new ISN. A peer in SYN-SENT takes IRS from it (RFC 9293 §3.10.7.3), so the next ACK must be
    # its ISN+1; the old connection's RCV.NXT would be a bad ACK, and its RST no fault of the stack.
    lane, wire = _lane("server")
    sport = lane.conn.sport
    lane.send_segment("SYN")
    wire.deliver(sport, 1.0, sport=lane.tport, flags="SA", seq=5000, ack=lane.conn.iss + 1)
    assert lane.collect() == ["SA"]
    lane.send_segment("SYN")  # at the target's last ACK, ISS+1
    wire.deliver(sport, 2.0, sport=lane.tport, flags="SA", seq=90000, ack=lane.conn.iss + 2)
    assert lane.collect() == ["SA(s?)"]
    lane.send_segment("ACK")
    assert (wire.sent[-1].sport, wire.sent[-1].ack) == (sport, 90001)


def test_the_barrier_waits_the_lag_of_a_stack_that_answers_out_of_order(monkeypatch):
    # gVisor answers each connection on a goroutine of its own: a SYN,ACK may come just after
    # the barrier's RST, so silence is only proven once the profile's lag has passed too.
    from types import SimpleNamespace
    from harness.learn import lanes
    from harness.targets import gvisor
    system = object.__new__(lanes.LiveSystem)
    system.session = SimpleNamespace(spec=gvisor.TARGET)
    system.barrier_works, system.waited = True, 0.0
    system._barrier = lambda timeout: True
    slept = []
    monkeypatch.setattr(lanes.time, "sleep", slept.append)
    system.settle()
    assert slept == [gvisor.TARGET.timing.barrier_lag] and slept[0] > 0
    assert system.waited == slept[0]


def test_the_settings_learning_changes_come_from_the_targets_profile():
    from types import SimpleNamespace
    from harness import targets
    from harness.learn.settings import for_target
    named = {t: [(s.name, s.value, s.via_agent, s.ack_delay) for s in for_target(SimpleNamespace(spec=targets.get(t)))]
             for t in ("linux", "pytcp", "gvisor", "lwip")}
    assert named["linux"] == [("net.ipv4.tcp_invalid_ratelimit", "0", False, None), ("route quickack", "1", False, None)]
    assert named["pytcp"] == [("tcp.delayed_ack.delay_ms", "1", True, 0.01),
                              ("tcp.challenge_ack.rate_limit_ms", "1", True, None)]
    assert named["gvisor"] == []  # its netstack reads no sysctl
    assert [n for n, *_ in named["lwip"]] == ["fast timer"]
