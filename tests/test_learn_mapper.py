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
