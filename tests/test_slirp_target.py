"""The slirp target's start-up check: its SYN-ACK is slirp's own, not a kernel's answering in its
name (harness/targets/slirp.py)."""
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from harness import targets
from harness.targets.slirp import slirp_synack


def synack(src_mac="52:55:c6:12:00:02", ttl=64, df=False, window=65535, seq=320001,
           options=(("MSS", 1460),)):
    pkt = (Ether(src=src_mac, dst="02:53:59:00:00:01")
           / IP(src="198.18.0.2", dst="198.18.0.1", ttl=ttl, flags="DF" if df else 0)
           / TCP(flags="SA", seq=seq, window=window, options=list(options)))
    return Ether(bytes(pkt))[TCP]


def test_slirps_own_synack_passes():
    assert slirp_synack(synack()) is None
    assert slirp_synack(synack(seq=1)) is None  # the first connection after start


def test_a_kernel_or_another_stack_is_told_apart():
    linux = synack(src_mac="02:53:59:00:00:02", df=True, window=64240, seq=0x95a391b6,
                   options=(("MSS", 1460), ("SAckOK", b""), ("NOP", None), ("WScale", 7)))
    assert slirp_synack(linux) == "window 64240, slirp advertises 65535"
    assert slirp_synack(synack(ttl=255)) == "IP TTL 255, slirp sends 64"  # lwIP's
    assert slirp_synack(synack(df=True)) == "IP DF set, slirp never sets it"  # smoltcp's
    assert slirp_synack(synack(src_mac="02:53:59:00:00:02")) == (
        "Ethernet source 02:53:59:00:00:02, slirp sends from 52:55:c6:12:00:02")
    assert slirp_synack(synack(seq=0x5eed1234)).startswith("ISS 1592594996, not on slirp's counter")


def test_slirp_is_a_known_target_running_in_docker_only():
    spec = targets.get("slirp")
    assert spec.runtimes == ("docker",) and not spec.kernel
    assert "slirp" in targets.parse_list("all")
    assert not {"timestamps", "sysctl", "so_rcvbuf", "shutdown_rd"} & spec.capabilities
