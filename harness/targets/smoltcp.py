"""smoltcp 0.14.0 (Rust, crates.io) on a TAP in a container, driven through its tcp::Socket API."""
from ..peer import Timing
from .spec import TargetSpec


def _synack_check(tcp) -> str | None:
    """smoltcp answers the probe (MSS 1460 only) with the agent's 65535-byte receive buffer as an
    unscaled window, MSS 1460 alone (no window scale, SACK or timestamps offered back to a SYN
    without them), from an IPv4 header with TTL 64 and DF. Linux would offer a 64240 window;
    lwIP would send TTL 255 without DF."""
    options = [(name, value) for name, value in tcp.options]
    if tcp.window != 65535:
        return f"window {tcp.window}, the smoltcp agent advertises 65535"
    if options != [("MSS", 1460)]:
        return f"options {options}, smoltcp answers this SYN with MSS 1460 alone"
    ip = tcp.underlayer
    if ip is not None and getattr(ip, "ttl", None) is not None:
        if ip.ttl != 64:
            return f"IP TTL {ip.ttl}, smoltcp sends 64"
        if "DF" not in str(ip.flags):
            return "IP DF clear, smoltcp always sets it"
    return None


TARGET = TargetSpec(
    name="smoltcp",
    description="smoltcp 0.14.0, a user-space TCP/IP stack in Rust, on a TAP",
    # ACKs are delayed 10 ms (smoltcp's ACK_DELAY_DEFAULT); the RTO starts at, and never falls
    # below, 1 s (RTTE_INITIAL_RTO, RTTE_MIN_RTO in src/socket/tcp.rs).
    timing=Timing(reply=0.5, silence=0.2, retransmit=2.0, startup=10.0),
    # No sysctls; no SO_RCVBUF (buffers are fixed when a socket is made); no shutdown(SHUT_RD)
    # (smoltcp cannot close the receiving half).
    capabilities=frozenset({"so_linger", "so_reuseaddr", "state", "conns", "bind_port", "timestamps"}),
    kernel=False,
    runtimes=("docker",),
    synack_check=_synack_check,
)
