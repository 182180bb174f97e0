"""smoltcp 0.14.0 (Rust, crates.io) on a TAP in a container, driven through its tcp::Socket API."""
from ..timing import Timing
from .spec import TargetSpec, synack_signature


TARGET = TargetSpec(
    name="smoltcp",
    description="smoltcp 0.14.0, a user-space TCP/IP stack in Rust, on a TAP",
    # ACKs are delayed 10 ms (smoltcp's ACK_DELAY_DEFAULT); the RTO starts at, and never falls
    # below, 1 s (RTTE_INITIAL_RTO, RTTE_MIN_RTO in src/socket/tcp.rs).
    timing=Timing(reply=0.5, silence=0.2, retransmit=2.0, startup=10.0, ack_delay=0.015),
    # No sysctls; no SO_RCVBUF (buffers are fixed when a socket is made); no shutdown(SHUT_RD)
    # (smoltcp cannot close the receiving half).
    capabilities=frozenset({"so_linger", "so_reuseaddr", "state", "conns", "bind_port", "timestamps"}),
    kernel=False,
    runtimes=("docker",),
    # The agent's 65535-byte receive buffer unscaled, MSS alone, TTL 64, always DF.
    synack_check=synack_signature("smoltcp", window=65535, ttl=64, df=True),
)
