"""gVisor's netstack (Debian's runsc 0.0~20221219), the Linux agent in a sandbox on the lab's veth.

The sandbox's stack is gVisor's own (pkg/tcpip): runsc takes over the namespace's interface, and
the namespace's kernel is left without an address. The kernel's sysctls do not reach it (gVisor
reads none of them), so cases that set one are UNSUPPORTED; inet_diag does not exist there, and
what gVisor's /proc/net/tcp lists is too partial to be the stack's connection table (below).
"""
from ..timing import Timing
from .spec import TargetSpec, synack_signature

TARGET = TargetSpec(
    name="gvisor",
    description="gVisor's netstack (runsc 0.0~20221219, Go), the Linux agent in a ptrace sandbox",
    # The sandbox's start (runsc, gofer, sentry) takes 0.3-0.4 s; its timers are Linux-like.
    # Each endpoint's segments wait on a goroutine of their own: one SYN,ACK in eight came after
    # the RST to a later segment for a closed port, by at most 0.24 ms (480 measured).
    timing=Timing(reply=1.0, silence=0.3, retransmit=3.5, startup=10.0, barrier_lag=0.01),
    # No "conns": gVisor's /proc/net/tcp lists only endpoints a socket holds (no SYN-RECEIVED
    # before accept, no orphan after close), and a SYN-SENT one without its remote end; a case
    # reading "CLOSED" there would blame the stack for what the listing leaves out.
    capabilities=frozenset({"so_linger", "so_rcvbuf", "so_reuseaddr", "shutdown_rd", "state",
                            "bind_port", "timestamps", "connect_nonblocking"}),
    kernel=True,
    sandbox="runsc",
    synack_check=synack_signature("gVisor", window=29184, ttl=64, df=False),
)
