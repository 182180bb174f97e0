"""Evidence files of a verdict: the case's pcap and its directory (the ladder: harness/exchange.py)."""
import os
import re
import time

from scapy.layers.l2 import Ether
from scapy.utils import PcapWriter


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


def case_dir(root: str, nodeid: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.replace("::", "__")).strip("_")
    path = os.path.join(root, name)
    os.makedirs(path, exist_ok=True)
    return path


def wall_offset() -> float:
    return time.time() - time.monotonic()
