"""PyTCP (the pmd-pytcp package), a TCP/IP stack in pure Python, on a TAP in a container."""
from ..timing import Timing
from .spec import TargetSpec, synack_signature


TARGET = TargetSpec(
    name="pytcp",
    description="PyTCP 0.3.8 (pmd-pytcp), a user-space TCP/IP stack in Python, on a TAP",
    # Delayed ACK 100 ms (TCP__DELAYED_ACK__DELAY_MS; measured 102 ms); RTO 1 s, also its floor
    # (TCP__RTO__INITIAL_MS / MIN_MS; FINs measured again after 1.00 s). A Python stack answers
    # in a few ms, but a busy machine may stretch that: reply stays 1 s.
    timing=Timing(reply=1.0, silence=0.3, retransmit=2.5, startup=10.0, ack_delay=0.12),
    # No so_rcvbuf: PyTCP stores SO_RCVBUF but its window stays TCP__RCV_WND_MAX; no sysctl.
    capabilities=frozenset({
        "so_linger", "so_reuseaddr", "shutdown_rd", "state", "conns", "bind_port", "timestamps",
    }),
    kernel=False,
    runtimes=("docker",),
    # TCP__RCV_WND_MAX 65535 unscaled, MSS alone.
    synack_check=synack_signature("PyTCP", window=65535),
    learning_settings=(
        ("tcp.delayed_ack.delay_ms", "1", "PyTCP holds an ACK back 100 ms; at 1 ms the learner's wait after "
         "a step that may owe one is short", 0.01),
        ("tcp.challenge_ack.rate_limit_ms", "1", "PyTCP sends one challenge ACK per window of this length; a "
         "second one inside it would meet silence", None),
    ),
)
