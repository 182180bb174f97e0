"""libslirp 4.7.0 (Debian's libslirp0), a NAT stack, on a TAP in a container.

slirp terminates the TCP connections of its "guest" (here the peer) and relays each one to a socket
of the host it runs on: the socket API under test is that host side, the kernel sockets of the
container's own network namespace (loopback only: nothing leaves the lab). docker/slirp/agent.c
gives slirp the target's address as its "host" alias, so a guest connection to it is relayed to
127.0.0.1 and the same port, and maps the protocol's calls onto those host sockets. What that
changes for the cases:

- listen/accept. A port "listens" when the agent's host socket listens on it: slirp holds no LISTEN
  TCB. Only a bare SYN makes slirp try the host (it answers the SYN once the relayed connect()
  succeeded, about 2 ms; a refused one gets RST,ACK <SEQ=0><ACK=SEG.SEQ+1>); every other segment to a
  port without a TCB, listening or not, is answered as from CLOSED (expectations/slirp.toml, LISTEN
  cells). The host kernel completes the loopback handshake at the guest's SYN, so the agent's accept()
  hands out a relayed connection only once slirp's own TCB for it is ESTABLISHED
  (slirp_connection_info()), in that order; relayed connections whose TCB slirp dropped before are
  discarded.
- connect. Through a host forward: slirp accepts the agent's loopback connection and sends its SYN
  from the target's address and the host socket's port (so bind_port binds the host socket). That
  host connect() succeeds before slirp's SYN goes out, so the agent waits for slirp's TCB to be
  ESTABLISHED; a TCB dropped first (a RST, or slirp's 75 s connection-establishment timer: the host
  side cannot tell which) fails the call with ECONNREFUSED.
- Unread data lives in the host socket's buffers first (slirp writes what it receives straight
  into it) and in slirp's own 128 KiB buffer only when those are full. slirp's window is its own
  buffer's free space: it stays 65535 while the host socket takes the data, so the zero-window case
  does not close it within its bound (UNSUPPORTED by its own precondition), and SO_RCVBUF, which
  would size only the host socket, is not offered.
- close() with unread data, and SO_LINGER {1, 0}: what the host kernel does with the loopback
  connection (Linux resets it), which slirp relays as its own RST (socket.c soread() ->
  tcp_drop()). Without either, slirp reads end of stream and sends its FIN.
- A peer's RST reaches the application as end of stream: slirp close()s the host socket of a reset
  connection like any other (a deviation from MUST-12, recorded). Data it had already written to
  the host socket stays readable.
- shutdown(SHUT_RD) acts on the host socket alone: slirp is never told (the kernel sends nothing),
  so the connection to the peer cannot close its receiving half: no shutdown_rd.
- state and conns are slirp's own TCBs (TIME-WAIT included: 2 x TCPTV_MSL = 10 s); a listener is
  reported LISTEN by the agent. Host sockets always set SO_REUSEADDR: the loopback connections'
  TIME-WAITs are the host kernel's, not the stack's.
- slirp answers from its own MAC, 52:55 followed by its address (not the lab's), never negotiates
  window scaling or timestamps (TCP_DO_RFC1323 is 0: no timestamps capability) and has no settings
  (no sysctl).
"""
from ..timing import Timing
from .spec import TargetSpec

# slirp's own Ethernet address: 52:55 followed by its "host" address (slirp.c special_ethaddr,
# if_encap4): it never takes the lab's MAC.
SLIRP_MAC_PREFIX = "52:55"
# tcp_subr.c tcp_init(): tcp_iss = 1; every new connection (tcp_input.c, tcp_subr.c tcp_connect)
# and every 500 ms tick (tcp_timer.c tcp_slowtimo) adds TCP_ISSINCR / 2 = 64000.
ISS_STEP = 64000


def slirp_synack(tcp) -> str | None:
    """The probe's SYN-ACK as slirp sends it: window 65535 (TCP_MAXWIN, unscaled), MSS alone, TTL
    64 (IPDEFTTL), never DF, from 52:55:<the target's address>, its ISS on slirp's counter. A kernel
    answering in its name would differ in all of them (Linux: 64240, SACK/TS/WS options, DF)."""
    if tcp.window != 65535:
        return f"window {tcp.window}, slirp advertises 65535"
    got = [(name, value) for name, value in tcp.options]
    if got != [("MSS", 1460)]:
        return f"options {got}, slirp answers this SYN with [('MSS', 1460)]"
    ip = tcp.underlayer
    if ip is not None:
        if ip.ttl != 64:
            return f"IP TTL {ip.ttl}, slirp sends 64"
        if "DF" in str(ip.flags):
            return "IP DF set, slirp never sets it"
        ether = ip.underlayer
        expected = SLIRP_MAC_PREFIX + "".join(f":{int(b):02x}" for b in ip.src.split("."))
        if ether is not None and getattr(ether, "src", None) and ether.src.lower() != expected:
            return f"Ethernet source {ether.src}, slirp sends from {expected}"
    if tcp.seq % ISS_STEP != 1:
        return f"ISS {tcp.seq}, not on slirp's counter (1 + k * {ISS_STEP})"
    return None


TARGET = TargetSpec(
    name="slirp",
    description="libslirp 4.7.0 (Debian libslirp0), a user-space NAT stack in C, on a TAP",
    # ACKs go out at once (TF_ACKNOW) or on the 2 ms fast timer; retransmissions count 500 ms ticks:
    # 6 s before an RTT sample, 1.0-1.5 s after the handshake's (tcp_timer.h, tcp_var.h).
    timing=Timing(reply=1.0, silence=0.3, retransmit=3.5, startup=5.0, ack_delay=0.01),
    # No so_rcvbuf, shutdown_rd, sysctl or timestamps: see above.
    capabilities=frozenset({"so_linger", "so_reuseaddr", "state", "conns", "bind_port"}),
    kernel=False,
    runtimes=("docker",),
    synack_check=slirp_synack,
)
