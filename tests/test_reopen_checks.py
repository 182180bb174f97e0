"""What the TIME-WAIT reopen cases conclude from a new incarnation's SYN (no stack needed)."""
import pytest
from scapy.layers.inet import TCP

from cases.time_wait.test_reopen import _check_reused


class Lab:
    """A case's lab as far as the check uses it: the notes it records."""

    def __init__(self):
        self.notes = {}

    def note(self, key, value):
        self.notes[key] = value


class Old:
    rcv_nxt = 1000  # the old incarnation's SND.NXT, as the peer saw it


def syn(seq: int, ts: int) -> TCP:
    return TCP(flags="S", seq=seq, options=[("Timestamp", (ts, 0))])


def test_a_new_syn_in_the_old_connections_last_timestamp_tick_is_not_older():
    # A 1 ms timestamp clock: a reconnect within the tick of the old connection's last segment
    # carries the same TSval, which PAWS (RFC 7323 §5.3 R1: not acceptable if SEG.TSval < TS.Recent)
    # does not take for an older one.
    lab = Lab()
    _check_reused(lab, Old(), syn(70000, 5000), old_ts=5000)
    assert lab.notes["new_tsval_minus_old"] == 0


def test_a_new_syn_with_an_older_tsval_fails():
    with pytest.raises(AssertionError, match="below the old connection's last TSval"):
        _check_reused(Lab(), Old(), syn(70000, 4999), old_ts=5000)


def test_a_new_syn_whose_seq_is_not_above_the_old_snd_nxt_fails():
    with pytest.raises(AssertionError, match="not above the old SND.NXT"):
        _check_reused(Lab(), Old(), syn(1000, 6000), old_ts=5000)
