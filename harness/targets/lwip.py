"""lwIP 2.1.3 (Debian's liblwip, unix port) on a TAP in a container, driven through its socket API."""
from ..peer import Timing
from .spec import TargetSpec


def _synack_check(tcp) -> str | None:
    """lwIP answers the probe (MSS 1460 only) with its unscaled TCP_WND 65535 (Debian's lwipopts.h;
    no window scale offered back to a SYN without one), MSS 1460 alone, and IP TTL 255
    (IP_DEFAULT_TTL) without DF. Linux would offer a 64240 window, more options, TTL 64 and DF."""
    options = [(name, value) for name, value in tcp.options]
    if tcp.window != 65535:
        return f"window {tcp.window}, lwIP advertises 65535"
    if options != [("MSS", 1460)]:
        return f"options {options}, lwIP answers this SYN with MSS 1460 alone"
    ip = tcp.underlayer
    if ip is not None and getattr(ip, "ttl", None) is not None:
        if ip.ttl != 255:
            return f"IP TTL {ip.ttl}, lwIP sends 255"
        if "DF" in str(ip.flags):
            return "IP DF set, lwIP never sets it"
    return None


TARGET = TargetSpec(
    name="lwip",
    description="lwIP 2.1.3 (Debian liblwip0), a user-space TCP/IP stack in C, on a TAP",
    # Delayed ACKs go out on the next 250 ms fast-timer tick (TCP_TMR_INTERVAL); RTO counts 500 ms
    # slow-timer ticks: 3 s before an RTT sample, 2.0-2.5 s after the handshake's (measured).
    timing=Timing(reply=1.0, silence=0.4, retransmit=3.5, startup=5.0),
    capabilities=frozenset({"so_linger", "so_reuseaddr", "shutdown_rd", "state", "conns", "bind_port"}),
    kernel=False,
    runtimes=("docker",),
    synack_check=_synack_check,
)
