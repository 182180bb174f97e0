"""Evidence files of a verdict: the case's pcap and its directory (the ladder: harness/exchange.py)."""
import os
import re
import time

from scapy.utils import RawPcapWriter


def write_pcap(path: str, frames, wall_offset: float) -> None:
    """Frames carry monotonic times; the pcap gets wall-clock times (wall = mono + offset). The
    bytes go out as captured: no packet is parsed to be written."""
    writer = RawPcapWriter(path, linktype=1, sync=False)
    try:
        writer.write_header(None)  # write_packet() alone leaves the file without one
        for fr in frames:
            sec, frac = divmod(fr.t + wall_offset, 1.0)
            writer.write_packet(fr.data, sec=int(sec), usec=int(frac * 1e6))
    finally:
        writer.close()


def case_dir(root: str, nodeid: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.replace("::", "__")).strip("_")
    path = os.path.join(root, name)
    os.makedirs(path, exist_ok=True)
    return path


def wall_offset() -> float:
    return time.time() - time.monotonic()
