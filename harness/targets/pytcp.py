"""PyTCP (the pmd-pytcp package), a TCP/IP stack in pure Python, on a TAP in a container."""
from ..peer import Timing
from .spec import TargetSpec


def _synack_check(tcp) -> str | None:
    """PyTCP answers the probe (MSS 1460 only) with a 65535-byte window (TCP__RCV_WND_MAX, no
    scaling offered back) and MSS 1460 alone; Linux would offer 64240."""
    options = [name for name, _ in tcp.options]
    if tcp.window != 65535:
        return f"window {tcp.window}, PyTCP advertises 65535"
    if options != ["MSS"]:
        return f"options {options}, PyTCP answers this SYN with MSS alone"
    return None


TARGET = TargetSpec(
    name="pytcp",
    description="PyTCP 0.3.8 (pmd-pytcp), a user-space TCP/IP stack in Python, on a TAP",
    # Delayed ACK 100 ms (TCP__DELAYED_ACK__DELAY_MS; measured 102 ms); RTO 1 s, also its floor
    # (TCP__RTO__INITIAL_MS / MIN_MS; FINs measured again after 1.00 s). A Python stack answers
    # in a few ms, but a busy machine may stretch that: reply stays 1 s.
    timing=Timing(reply=1.0, silence=0.3, retransmit=2.5, startup=10.0),
    # No so_rcvbuf: PyTCP stores SO_RCVBUF but its window stays TCP__RCV_WND_MAX; no sysctl.
    capabilities=frozenset({
        "so_linger", "so_reuseaddr", "shutdown_rd", "state", "conns", "bind_port", "timestamps",
    }),
    kernel=False,
    runtimes=("docker",),
    synack_check=_synack_check,
)
