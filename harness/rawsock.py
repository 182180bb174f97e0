"""A packet socket on one link of a namespace: every frame the kernel filter lets through.

scapy's L2Socket opens the socket already receiving (protocol ETH_P_ALL) and then binds it to the
interface, which makes the kernel unhook and rehook it and wait for an RCU grace period (7-25 ms
a socket, on every target start). Opened with protocol 0 the socket receives nothing until bind(),
which hooks it in once; the filter is in place before the first frame. The filter is compiled
by scapy (libpcap) for Ethernet: asked with an interface name scapy would open a live capture on
it just to learn its link type, another packet socket and another grace period.
"""
import socket
import struct

from scapy.arch.common import compile_filter, free_filter
from scapy.data import DLT_EN10MB, ETH_P_ALL, SO_ATTACH_FILTER, SO_TIMESTAMPNS, SOL_PACKET
from scapy.libs.structures import sock_fprog

from . import netns

PACKET_IGNORE_OUTGOING = 23  # linux/if_packet.h: our own frames are not read back
BUFSIZE = 1 << 21


def attach_filter(sock: socket.socket, bpf: str) -> None:
    program = compile_filter(bpf, linktype=DLT_EN10MB)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, sock_fprog(program.bf_len, program.bf_insns))
    finally:
        free_filter(program)


def open_in(netns_path: str, ifname: str, bpf: str, stamped: bool = False) -> socket.socket:
    """A bound AF_PACKET socket on `ifname` inside the namespace at `netns_path`, reading only
    the frames `bpf` (a tcpdump expression) matches; send() puts a whole frame on the link.
    `stamped`: the kernel stamps each frame's arrival (read them with recv_stamped)."""

    def body() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            attach_filter(sock, bpf)
            if stamped:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFSIZE)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFSIZE)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:
                pass  # before Linux 4.20; the filters name the target as the source anyway
            sock.bind((ifname, ETH_P_ALL))
        except BaseException:
            sock.close()
            raise
        return sock

    return netns.run_in(netns_path, body)


def recv_stamped(sock: socket.socket, size: int = 65535) -> tuple[bytes, float | None]:
    """One frame and its arrival (time.time() scale) from a socket opened with stamped=True."""
    data, ancillary, _, _ = sock.recvmsg(size, socket.CMSG_SPACE(16))
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            seconds, nanoseconds = struct.unpack("qq", value[:16])
            return data, seconds + nanoseconds / 1e9
    return data, None
