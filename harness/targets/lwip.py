"""lwIP 2.1.3 (Debian's liblwip, unix port) on a TAP in a container, driven through its socket API."""
from ..timing import Timing
from .spec import TargetSpec, synack_signature


TARGET = TargetSpec(
    name="lwip",
    description="lwIP 2.1.3 (Debian liblwip0), a user-space TCP/IP stack in C, on a TAP",
    # Delayed ACKs go out on the next 250 ms fast-timer tick (TCP_TMR_INTERVAL); RTO counts 500 ms
    # slow-timer ticks: 3 s before an RTT sample, 2.0-2.5 s after the handshake's (measured).
    timing=Timing(reply=1.0, silence=0.4, retransmit=3.5, startup=5.0, ack_delay=0.26),
    # tick: the agent runs the fast timer on request (a learner steps time, harness/learn/).
    capabilities=frozenset({"so_linger", "so_reuseaddr", "shutdown_rd", "state", "conns", "bind_port", "tick"}),
    kernel=False,
    runtimes=("docker",),
    # Unscaled TCP_WND (Debian's lwipopts.h), MSS alone, IP_DEFAULT_TTL 255, never DF.
    synack_check=synack_signature("lwIP", window=65535, ttl=255, df=False),
)
