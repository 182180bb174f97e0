"""The host's Linux kernel stack, seen from a container (or a bare namespace)."""
from ..timing import Timing
from .spec import TargetSpec

TARGET = TargetSpec(
    name="linux",
    description="the Linux kernel's TCP stack in its own network namespace",
    # Linux ACKs at once in quick-ack mode and delays at most 200 ms otherwise; RTO starts at 1 s.
    timing=Timing(reply=1.0, silence=0.3, retransmit=3.5),
    capabilities=frozenset({
        "so_linger", "so_rcvbuf", "so_reuseaddr", "shutdown_rd", "state", "conns", "sysctl",
        "bind_port", "timestamps", "connect_nonblocking",
    }),
    kernel=True,
    verdict_sysctls=("net.ipv4.tcp_timestamps", "net.ipv4.tcp_rfc1337", "net.ipv4.tcp_fin_timeout",
                     "net.ipv4.tcp_tw_reuse", "net.ipv4.tcp_sack", "net.ipv4.tcp_window_scaling",
                     "net.ipv4.tcp_syncookies", "net.ipv4.tcp_abort_on_overflow"),
)
