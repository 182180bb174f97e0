"""At start the harness makes sure the answers come from the stack under test."""
import dataclasses
import os

import pytest

from harness import session as session_mod
from harness import targets
from harness.errors import TargetError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="building labs needs root")


def start_with(monkeypatch, **changes):
    spec = dataclasses.replace(targets.get("linux"), **changes)
    monkeypatch.setattr(session_mod.targets, "get", lambda name: spec)
    s = session_mod.Session("linux", "netns", notice=lambda line: None)
    try:
        s.ensure()
    finally:
        s.close()


def test_a_synack_without_the_stacks_signature_stops_the_run(monkeypatch):
    with pytest.raises(TargetError, match=r"the SYN-ACK is not linux's own \(window 64240\): another stack"):
        start_with(monkeypatch, synack_check=lambda tcp: f"window {tcp.window}")


def test_the_stacks_own_synack_passes(monkeypatch):
    start_with(monkeypatch, synack_check=lambda tcp: None if dict(tcp.options).get("MSS") else "no MSS")


def test_a_stack_that_does_not_answer_at_all_stops_the_run(monkeypatch):
    # A user-space profile on a kernel agent: the lab bridges to a TAP nobody opened and the
    # namespace's kernel holds no address, so nothing can listen or answer: the run must stop
    # there rather than let any other stack answer (the TAP without carrier tells it first).
    with pytest.raises(TargetError, match="did not attach to its TAP|EADDRNOTAVAIL|does not answer a SYN"):
        start_with(monkeypatch, kernel=False)


def test_signatures_tell_the_stacks_apart():
    from scapy.layers.inet import IP, TCP

    from harness.targets.spec import synack_signature

    def synack(window, ttl, df, options=(("MSS", 1460),)):
        return (IP(ttl=ttl, flags="DF" if df else 0) / TCP(flags="SA", window=window, options=list(options)))[TCP]

    lwip = synack_signature("lwIP", window=65535, ttl=255, df=False)
    smoltcp = synack_signature("smoltcp", window=65535, ttl=64, df=True)
    linux_like = synack(64240, 64, True)
    assert lwip(synack(65535, 255, False)) is None
    assert smoltcp(synack(65535, 64, True)) is None
    assert lwip(linux_like) == "window 64240, lwIP advertises 65535"
    assert smoltcp(synack(65535, 255, False)) == "IP TTL 255, smoltcp sends 64"
    assert lwip(synack(65535, 255, True)) == "IP DF set, lwIP never sets it"
    assert "options" in lwip(synack(65535, 255, False, options=[("MSS", 1460), ("SAckOK", b"")]))


@pytest.mark.skipif(__import__("harness.runtime", fromlist=["x"]).docker_client()[0] is None,
                    reason="the lwip target runs in Docker")
def test_the_first_syn_after_a_start_is_answered(monkeypatch):
    # The bridge in front of a user-space stack enables its ports when the kernel's linkwatch
    # gets to it (at most once a second): a lab handed over before then loses the first SYN and
    # the stack check waits a retransmission. The lab must be forwarding when the start returns.
    from scapy.layers.l2 import Ether
    from scapy.layers.inet import TCP

    s = session_mod.Session("lwip", "docker", notice=lambda line: None)
    try:
        for _ in range(3):
            s.ensure()
            sent = [Ether(f.data) for f in s.wire.trace if f.outgoing]
            syns = [p for p in sent if TCP in p and str(p[TCP].flags) == "S"]
            assert len(syns) == 1, f"the stack check sent {len(syns)} SYNs: {[p.summary() for p in sent]}"
            s.close()
    finally:
        s.close()


def test_an_agent_reporting_another_kernel_version_stops_the_run(monkeypatch):
    # linux-6.1's guard: the host's kernel (not 6.0) answering in the name of a kernel line
    with pytest.raises(TargetError, match=r"the agent reports version '.*', not 6\.0\.\*: another kernel"):
        start_with(monkeypatch, version_prefix="6.0.")
