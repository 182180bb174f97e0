"""Connection bookkeeping and segment matching, against a scripted wire (no lab needed)."""
import collections

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from harness.lab import Addressing
from harness.peer import Framer, Mismatch, Peer, Timing
from harness.ports import PortPool
from harness.segments import Seg, seq_add, seq_diff, seq_lt

TOP = (1 << 32) - 1


class ScriptedWire:
    """Stands in for the lab link: records what the peer sends, replays what the target 'sends'."""

    def __init__(self):
        self.addr = Addressing(3)
        self.sent = []
        self.incoming = collections.deque()
        self.waited = 0.0

    def frame(self, tcp):
        return Ether() / IP(src=self.addr.peer_ip, dst=self.addr.target_ip) / tcp

    def send(self, pkt):
        self.sent.append(pkt[TCP])

    def next_for(self, port, deadline):
        while self.incoming:
            pkt = self.incoming.popleft()
            if pkt[TCP].dport == port:
                return pkt
        return None

    def from_target(self, conn, flags, seq, ack=0, data=b"", window=1000, options=()):
        tcp = TCP(sport=conn.dport, dport=conn.sport, flags=flags, seq=seq % (1 << 32), ack=ack % (1 << 32),
                  window=window, options=list(options))
        self.incoming.append(Ether() / IP() / (tcp / data if data else tcp))


def make(iss, **kw):
    wire = ScriptedWire()
    peer = Peer(wire, Timing(reply=0.05, silence=0.05), PortPool(start=40000))
    return wire, peer.connection(5000, iss=iss, **kw)


def test_sequence_arithmetic_wraps_at_2_32():
    assert seq_add(TOP, 1) == 0
    assert seq_add(TOP - 1, 5) == 3
    assert seq_diff(3, TOP - 1) == 5
    assert seq_diff(TOP - 1, 3) == -5
    assert seq_lt(TOP, 0) and not seq_lt(0, TOP)
    assert seq_diff(0, 1 << 31) == -(1 << 31)  # the ambiguous half-way point counts as "behind"


def test_sending_advances_snd_nxt_across_the_wrap():
    wire, conn = make(iss=TOP - 1)
    conn.syn()
    assert conn.snd_nxt == TOP
    conn.send(b"abc")
    assert wire.sent[-1].seq == TOP and conn.snd_nxt == 2
    conn.fin()
    assert wire.sent[-1].seq == 2 and conn.snd_nxt == 3
    assert str(wire.sent[-1].flags) == "FA"


def test_out_of_order_send_does_not_move_snd_nxt():
    wire, conn = make(iss=100)
    conn.syn()
    conn.send_raw("A", seq=conn.snd_nxt + 50, data=b"later")
    assert conn.snd_nxt == 101
    conn.rst(seq=5)
    assert wire.sent[-1].seq == 5 and conn.snd_nxt == 101


def test_receiving_tracks_irs_rcv_nxt_and_window_across_the_wrap():
    wire, conn = make(iss=7)
    conn.syn()
    wire.from_target(conn, "SA", seq=TOP - 2, ack=8, window=29200)
    synack = conn.expect(Seg("SA", ack=8))
    assert synack.seq == TOP - 2
    assert conn.irs == TOP - 2 and conn.rcv_nxt == TOP - 1 and conn.snd_wnd == 29200
    assert conn.snd_una == 8
    wire.from_target(conn, "PA", seq=TOP - 1, ack=8, data=b"xyz")
    conn.expect(Seg("A", payload=b"xyz"))
    assert conn.rcv_nxt == 1  # 2^32 - 2 + 3
    # A retransmission of old data does not move RCV.NXT again.
    wire.from_target(conn, "PA", seq=TOP - 1, ack=8, data=b"xyz")
    conn.expect(Seg("A", seq=TOP - 1))
    assert conn.rcv_nxt == 1
    wire.from_target(conn, "FA", seq=1, ack=8)
    conn.expect(Seg("FA", seq=1))
    assert conn.rcv_nxt == 2


def test_ack_of_data_never_sent_does_not_move_snd_una():
    wire, conn = make(iss=1000)
    conn.syn()
    wire.from_target(conn, "SA", seq=0, ack=5000)
    conn.expect(Seg("SA"))
    assert conn.snd_una == 1000


def test_timestamps_echo_the_targets_last_tsval():
    wire, conn = make(iss=1, timestamps=True)
    conn.syn()
    wire.from_target(conn, "SA", seq=10, ack=2, options=[("Timestamp", (777, 0))])
    conn.expect(Seg("SA"))
    conn.ack()
    assert dict(wire.sent[-1].options)["Timestamp"][1] == 777
    conn.rst()
    assert "Timestamp" not in dict(wire.sent[-1].options)  # RFC 7323 §3.2: RSTs need not carry it


@pytest.mark.parametrize("spec, flags, matches", [
    (Seg("R"), "R", True),
    (Seg("R"), "RA", False),
    (Seg("R", tolerate="A"), "RA", True),
    (Seg("R", tolerate="A"), "R", True),
    (Seg("A"), "PA", True),            # PSH is ignored unless named
    (Seg("PA"), "A", False),
    (Seg("FA"), "A", False),
    (Seg("SA"), "S", False),
])
def test_flags_are_compared_as_a_set(spec, flags, matches):
    assert spec.matches(TCP(flags=flags)) is matches


def test_numbers_payload_and_window_are_checked_only_when_named():
    tcp = TCP(flags="PA", seq=10, ack=20, window=300) / b"data"
    assert Seg("A").matches(tcp)
    assert Seg("A", seq=10, ack=20, payload=b"data", length=4, window=300).matches(tcp)
    assert not Seg("A", seq=11).matches(tcp)
    assert not Seg("A", ack=(1 << 32) + 21).matches(tcp)
    assert Seg("A", ack=(1 << 32) + 20).matches(tcp)  # numbers are taken mod 2^32
    assert not Seg("A", payload=b"dat").matches(tcp)
    assert not Seg("A", length=0).matches(tcp)
    assert not Seg("A", window=301).matches(tcp)


def test_alternatives_match_either():
    either = Seg("R", seq=5) | Seg("A", ack=9)
    assert either.match(TCP(flags="R", seq=5))
    assert either.match(TCP(flags="A", ack=9))
    assert either.match(TCP(flags="F", seq=5)) is None


def test_expect_skips_other_segments_and_returns_the_match():
    wire, conn = make(iss=0)
    conn.syn()
    wire.from_target(conn, "SA", seq=50, ack=1)
    conn.expect(Seg("SA"))
    wire.from_target(conn, "A", seq=51, ack=1)
    wire.from_target(conn, "RA", seq=51, ack=1)
    assert str(conn.expect(Seg("R", tolerate="A")).flags) == "RA"


def test_mismatch_names_alternatives_actual_segment_ports_and_isns():
    wire, conn = make(iss=0x11111111)
    conn.syn()
    wire.from_target(conn, "SA", seq=0x22222222, ack=0x11111112)
    conn.expect(Seg("SA"))
    conn.send(b"x" * 100)
    wire.from_target(conn, "FA", seq=0x22222223, ack=0x11111112 + 100)
    with pytest.raises(Mismatch) as err:
        conn.expect(Seg("R", seq=conn.rcv_nxt), Seg("RA", seq=conn.rcv_nxt))
    text = str(err.value)
    assert "RST seq=1" in text and "or RST,ACK seq=1" in text
    assert "FIN,ACK seq=1 ack=101" in text
    assert f":{conn.sport}" in text and ":5000" in text
    assert "0x11111111" in text and "0x22222222" in text


def test_mismatch_when_nothing_arrives_says_so():
    _, conn = make(iss=0)
    with pytest.raises(Mismatch, match="received nothing"):
        conn.expect(Seg("SA"), within=0.01)


def test_expect_silence_fails_on_any_segment_and_counts_the_wait():
    wire, conn = make(iss=0)
    conn.expect_silence(0.01)
    assert wire.waited == pytest.approx(0.01)
    wire.from_target(conn, "A", seq=1, ack=1)
    with pytest.raises(Mismatch, match="expected silence"):
        conn.expect_silence(0.01)


@pytest.mark.parametrize("tcp", [
    TCP(sport=1000, dport=2000, flags="S", seq=TOP, options=[("MSS", 1460)]),
    TCP(sport=1000, dport=2000, flags="PA", seq=5, ack=7, window=512) / (b"x" * 999),
    TCP(sport=1000, dport=2000, flags="R", seq=0, chksum=0xdead),  # a deliberately bad checksum stays
])
def test_wire_frames_are_byte_for_byte_what_scapy_builds(tcp):
    addr = Addressing(7)
    framer = Framer(addr)
    framer.frame(TCP())  # IP ids count from 1
    reference = Ether(src=addr.peer_mac, dst=addr.target_mac) / IP(
        src=addr.peer_ip, dst=addr.target_ip, id=2, flags="DF") / tcp
    assert framer.frame(tcp) == bytes(reference)


def established(iss=1000, irs=5000):
    wire, conn = make(iss=iss)
    conn.syn()
    wire.from_target(conn, "SA", seq=irs, ack=iss + 1)
    conn.expect(Seg("SA"))
    conn.ack()
    return wire, conn


def test_an_expected_pure_ack_may_ride_on_the_retransmission_of_the_fin():
    # RFC 9293 §3.10.7.4 seventh: the ACK "should be piggybacked on a segment being transmitted".
    wire, conn = established()
    wire.from_target(conn, "FA", seq=5001, ack=1001)           # the target's FIN
    fin = conn.expect(Seg("FA", seq=5001))
    conn.send(b"a" * 100, ack=fin.seq)                          # not ACKing the FIN
    wire.from_target(conn, "FA", seq=5001, ack=1101)           # the FIN again, carrying the ACK
    got = conn.expect(Seg("A", seq=5002, ack=1101, length=0, note="ACK of 100 bytes"))
    assert str(got.flags) == "FA"


def test_an_expected_pure_ack_may_ride_on_retransmitted_data_but_not_on_new_data():
    spec = Seg("A", seq=5011, ack=1001, length=0)
    old = TCP(flags="PA", seq=5001, ack=1001) / (b"x" * 10)
    assert spec.matches(old, acked=5001)                                     # repeats unACKed bytes
    assert spec.matches(TCP(flags="PA", seq=5005, ack=1001) / (b"x" * 6), acked=5001)  # their tail
    assert not spec.matches(TCP(flags="PA", seq=5011, ack=1001) / b"new", acked=5001)  # new data
    assert not spec.matches(TCP(flags="PA", seq=5001, ack=1000) / (b"x" * 10), acked=5001)  # another ACK
    assert not spec.matches(TCP(flags="RA", seq=5001, ack=1001) / (b"x" * 10), acked=5001)
    assert not spec.matches(TCP(flags="A", seq=5001, ack=1001), acked=5001)  # not a retransmission
    # Bytes the peer has acknowledged cannot come again: no allowance then.
    assert not spec.matches(old, acked=5011)
    assert not spec.matches(old)
    # Only an expected pure ACK at a known SEQ and ACK gets the allowance.
    assert not Seg("A", seq=5011, ack=1001).matches(old, acked=5001)
    assert not Seg("FA", seq=5011, ack=1001).matches(TCP(flags="FA", seq=5001, ack=1001), acked=5001)


def test_a_fin_the_peer_already_acked_does_not_stand_in_for_an_ack():
    # TIME-WAIT owes an ACK of the retransmitted peer FIN; re-sending its own (ACKed) FIN is not it.
    wire, conn = established()
    wire.from_target(conn, "FA", seq=5001, ack=1001)
    conn.expect(Seg("FA", seq=5001))
    conn.ack()                                                   # the peer ACKs the target's FIN
    wire.from_target(conn, "FA", seq=5001, ack=1001)
    with pytest.raises(Mismatch):
        conn.expect(Seg("A", seq=5002, ack=1001, length=0), within=0.01)


def test_expect_next_says_what_was_expected_and_what_came_before_the_cases_explanation():
    _, conn = established()
    with pytest.raises(Mismatch) as err:
        conn.expect_next(Seg("A", seq=5001, ack=1002, length=0, note="ACK of the peer's FIN"), within=0.01,
                         why="FIN-WAIT-2 must stay silent until the peer's FIN")
    first, second = str(err.value).splitlines()[:2]
    assert first == "expected ACK seq=1 ack=2 len=0 (ACK of the peer's FIN); received nothing within 0.01 s"
    assert second == "FIN-WAIT-2 must stay silent until the peer's FIN"


def test_timestamps_count_as_negotiated_only_if_both_syns_carry_them():
    wire, conn = make(iss=1, timestamps=True)
    conn.syn()
    wire.from_target(conn, "SA", seq=10, ack=2)                 # no Timestamp option
    conn.expect(Seg("SA"))
    conn.ack()
    assert conn.timestamps is False and "Timestamp" not in dict(wire.sent[-1].options)


@pytest.mark.parametrize("src, dst", [("224.0.0.5", None), (None, "198.18.7.255"), ("255.255.255.255", "224.0.0.1")])
def test_a_frame_may_carry_other_ip_addresses_still_to_the_targets_mac(src, dst):
    addr = Addressing(7)
    tcp = TCP(sport=1000, dport=2000, flags="S", seq=TOP, options=[("MSS", 1460)])
    reference = Ether(src=addr.peer_mac, dst=addr.target_mac) / IP(
        src=src or addr.peer_ip, dst=dst or addr.target_ip, id=1, flags="DF") / tcp
    assert Framer(addr).frame(tcp, src=src, dst=dst) == bytes(reference)
