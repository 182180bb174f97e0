"""Segments to a port with no TCB (RFC 9293 §3.10.7.1, §3.5.2 group 1): RSTs shaped for the sender."""
import pytest

from harness.markers import requirement
from harness.segments import Seg, seq_add

# Without ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>; SYN, FIN and payload all count in SEG.LEN.
NO_ACK_VARIANTS = {
    "syn": ("S", b"", 1),
    "syn_with_8_bytes": ("S", b"8 bytes!", 9),
    "syn_fin": ("SF", b"", 2),
    "fin": ("F", b"", 1),
}


@requirement("R9293-3.10.7.1", "MUST")
@pytest.mark.parametrize("variant", list(NO_ACK_VARIANTS))
def test_segment_without_ack_to_closed_port_gets_rst_ack_seq_0(lab, variant):
    """§3.10.7.1: "An incoming segment not containing a RST causes a RST to be sent in response ...
    If the ACK bit is off, sequence number zero is used, <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>"."""
    flags, data, seg_len = NO_ACK_VARIANTS[variant]
    conn = lab.peer.connection(lab.port())
    conn.send_raw(flags, seq=conn.iss, data=data)
    conn.expect(Seg("RA", seq=0, ack=seq_add(conn.iss, seg_len), length=0,
                    note=f"ack = SEG.SEQ+{seg_len}"))


@requirement("R9293-3.10.7.1", "MUST")
@pytest.mark.parametrize("flags", ["A", "PA"], ids=["ack", "ack_with_data"])
def test_segment_with_ack_to_closed_port_gets_rst_seq_its_ack(lab, flags):
    """§3.10.7.1: "If the ACK bit is on, <SEQ=SEG.ACK><CTL=RST>" — no ACK flag on the RST."""
    conn = lab.peer.connection(lab.port())
    stale_ack = 0x5EED0000 ^ conn.iss  # any value: there is no connection it could belong to
    conn.send_raw(flags, seq=conn.iss, ack=stale_ack, data=b"data" if "P" in flags else b"")
    conn.expect(Seg("R", seq=stale_ack, length=0, note="SEQ = SEG.ACK, no ACK"))


@requirement("R9293-3.10.7.1", "MUST")
@pytest.mark.parametrize("flags", ["R", "RA"], ids=["rst", "rst_ack"])
def test_rst_to_closed_port_is_discarded(lab, flags):
    """§3.10.7.1: "An incoming segment containing a RST is discarded." A SYN from the same port sent
    right behind it is a marker: its RST,ACK must be the first thing the target sends back."""
    conn = lab.peer.connection(lab.port())
    conn.send_raw(flags, seq=conn.iss, ack=conn.iss ^ 0x1234567 if "A" in flags else None)
    marker_iss = seq_add(conn.iss, 100000)
    conn.send_raw("S", seq=marker_iss)
    conn.expect_next(Seg("RA", seq=0, ack=seq_add(marker_iss, 1), note="the marker SYN's RST,ACK"),
                     why=f"the first segment after our {flags} must answer the marker SYN (an answer to the RST?)")
    # A reply to the RST processed on another CPU could still trail the marker's answer.
    conn.expect_silence(for_=0.05)
