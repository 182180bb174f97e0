"""Evidence for a verdict: the case's pcap, a ladder diagram of the exchange, the agent's log."""
import os
import re
import time

from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether
from scapy.utils import PcapWriter

from .segments import SeqView, describe

_WIDTH = 58


def write_pcap(path: str, frames, wall_offset: float) -> None:
    """Frames carry monotonic times; the pcap gets wall-clock times (wall = mono + offset)."""
    writer = PcapWriter(path, linktype=1, sync=False)
    try:
        for fr in frames:
            pkt = Ether(fr.data)
            pkt.time = fr.t + wall_offset
            writer.write(pkt)
    finally:
        writer.close()


def ladder(frames, views: dict[int, SeqView], peer_ip: str, target_ip: str) -> str:
    """The case's own connections as a two-column ladder, times in ms from the first frame,
    numbers relative (the pcap keeps everything else that crossed the link)."""
    tcp_frames = [(fr, Ether(fr.data)) for fr in frames]
    tcp_frames = [(fr, p[TCP]) for fr, p in tcp_frames if TCP in p]
    tcp_frames = [(fr, t) for fr, t in tcp_frames if (t.sport if fr.outgoing else t.dport) in views]
    if not tcp_frames:
        return "(no segments were exchanged)"
    t0 = tcp_frames[0][0].t
    head = f"{'ms':>8}  {'peer ' + peer_ip:<{_WIDTH // 2}}{'target ' + target_ip:>{_WIDTH // 2}}"
    lines = [head]
    for fr, tcp in tcp_frames:
        port = tcp.sport if fr.outgoing else tcp.dport
        view = views.get(port, SeqView())
        text = f"{port}⇄{tcp.dport if fr.outgoing else tcp.sport} " + describe(tcp, view, not fr.outgoing)
        arrow = f"{text} ──>" if fr.outgoing else f"<── {text}"
        pad = "" if fr.outgoing else " " * 4
        lines.append(f"{(fr.t - t0) * 1000:8.1f}  {pad}{arrow}")
    return "\n".join(lines)


def case_dir(root: str, nodeid: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.replace("::", "__")).strip("_")
    path = os.path.join(root, name)
    os.makedirs(path, exist_ok=True)
    return path


def wall_offset() -> float:
    return time.time() - time.monotonic()
