"""How long the harness waits for a stack: part of each target's profile."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """How long to wait for a stack; part of each target's profile, never a global constant."""

    reply: float = 1.0     # default `within` of expect(): returns as soon as a match arrives
    silence: float = 0.3   # default `for_` of expect_silence(): longer than the stack's ACK delay
    retransmit: float = 3.0  # enough for one retransmission timeout of the stack
    startup: float = 10.0    # from the first request until the stack is up on its interface
    # The longest the stack holds back the ACK of a segment (its delayed-ACK timer): the learner
    # waits this long where an ACK may still be owed (harness/learn/lanes.py).
    ack_delay: float = 0.0
    # How long the stack's answer may trail its answer to a later segment on another port (a
    # stack that processes each connection's segments on a thread of its own, as gVisor's does):
    # the learner waits this long after its barrier (harness/learn/lanes.py).
    barrier_lag: float = 0.0
