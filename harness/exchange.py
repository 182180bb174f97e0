"""A case's exchange as data: every segment of its connections and every call the agent made,
on one time line, with the segment that broke an expectation and the one that never came.

This one record feeds every picture of the exchange: the ladder text in the terminal, the SVG
ladder of the report and the packetdrill script.
"""
from scapy.layers.inet import IP, TCP

from .segments import SeqView, flag_words, seq_diff


def _options(tcp: TCP) -> list:
    out = []
    for name, value in tcp.options:
        if name == "MSS":
            out.append(["mss", value])
        elif name == "WScale":
            out.append(["wscale", value])
        elif name == "SAckOK":
            out.append(["sackOK"])
        elif name == "Timestamp":
            out.append(["TS", value[0], value[1]])
        elif name == "SAck":
            out.append(["sack", *value])
        elif name not in ("NOP", "EOL"):
            out.append([str(name)])
    return out


def _rel(n: int, base: int | None) -> int:
    return n if base is None else seq_diff(n, base)


def _tcp(frame: bytes) -> TCP | None:
    """The TCP segment of an Ethernet/IPv4 frame, or None. Only TCP is parsed (a full scapy
    dissection of every frame of every case would cost more than the rest of the evidence), and the
    IP total length cuts off the padding of short Ethernet frames."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    ihl = (frame[14] & 0x0F) * 4
    total = int.from_bytes(frame[16:18], "big")
    tcp = TCP(frame[14 + ihl:14 + total])
    tcp.synfin_ttl = frame[22]
    return tcp


def segment(tcp: TCP, t: float, from_peer: bool, view: SeqView) -> dict:
    """One segment: seq relative to its sender's ISN, ack to its receiver's (as in Wireshark)."""
    flags = str(tcp.flags)
    own, other = (view.iss, view.irs) if from_peer else (view.irs, view.iss)
    return {
        "t": round(t, 6), "from": "peer" if from_peer else "target",
        "peer_port": tcp.sport if from_peer else tcp.dport, "target_port": tcp.dport if from_peer else tcp.sport,
        "flags": flag_words(flags), "seq": _rel(tcp.seq, own), "ack": _rel(tcp.ack, other) if "A" in flags else None,
        "abs_seq": tcp.seq, "abs_ack": tcp.ack, "len": len(bytes(tcp.payload)), "win": tcp.window,
        "options": _options(tcp),
        "ttl": getattr(tcp, "synfin_ttl", None) or (tcp.underlayer.ttl if isinstance(tcp.underlayer, IP) else None),
    }


def _view_of(tcp: TCP, from_peer: bool, views: list[SeqView]) -> SeqView:
    """The connection a segment belongs to, among those sharing its peer port: the one whose ISN
    its sender's sequence number lies closest above (the receiver's, by its ACK, before the
    sender's ISN is known)."""
    if len(views) == 1:
        return views[0]

    def distance(v: SeqView) -> int:
        own, other = (v.iss, v.irs) if from_peer else (v.irs, v.iss)
        if own is not None:
            d = seq_diff(tcp.seq, own)
        elif other is not None and "A" in str(tcp.flags):
            d = seq_diff(tcp.ack, other)
        else:
            return 1 << 33
        return d if d >= 0 else (1 << 32) - d  # behind the ISN: an older incarnation's segment

    return min(views, key=distance)


def build(frames, views: dict[int, list[SeqView]], calls: list[dict], t0: float, failure=None) -> dict:
    """`frames`: the lab's trace (monotonic times); `views`: the case's connections by peer port;
    `calls`: Target.calls; `t0`: the case's start; `failure`: the Mismatch that ended a step."""
    segments = []
    for fr in frames:
        tcp = _tcp(fr.data)
        if tcp is None:
            continue
        port = tcp.sport if fr.outgoing else tcp.dport
        if port not in views:
            continue  # another case's late segment: the pcap keeps it
        entry = segment(tcp, fr.t - t0, fr.outgoing, _view_of(tcp, fr.outgoing, views[port]))
        entry["raw_t"] = fr.t
        segments.append(entry)
    out = {
        "segments": segments,
        "calls": [{"op": c["op"], "args": c["args"], "result": c.get("result", "(no reply)"),
                   "t_call": round(c["t_call"] - t0, 6), "t": round(c.get("t", c["t_call"]) - t0, 6)}
                  for c in calls],
        "isns": {str(port): [{"peer": v.iss, "target": v.irs} for v in vs] for port, vs in views.items()},
        "failure": None,
    }
    if failure is not None and getattr(failure, "expected", None):
        broke = next((i for i, s in enumerate(segments) if s["raw_t"] == failure.got_t), None)
        if broke is not None:
            segments[broke]["broke"] = True
        out["failure"] = {"peer_port": failure.port, "expected": failure.expected,
                          "t": round(failure.at - t0, 6), "broke": broke}
    for s in segments:
        del s["raw_t"]
    return out


def _seg_text(s: dict) -> str:
    text = f"{s['flags']} seq={s['seq']}"
    if s["ack"] is not None:
        text += f" ack={s['ack']}"
    text += f" win={s['win']} len={s['len']}"
    if s["options"]:
        text += " [" + ", ".join(" ".join(str(x) for x in o) for o in s["options"]) + "]"
    return text


def _call_text(c: dict) -> str:
    args = ", ".join(f"{k}={v}" for k, v in c["args"].items())
    return f"{c['op']}({args}) → {c['result']}"


def ladder_text(exchange: dict, peer_ip: str, target_ip: str, width: int = 58) -> str:
    """The exchange as a two-column ladder for the terminal: times in ms from the case's start."""
    rows = [(s["t"], 0, s) for s in exchange["segments"]] + [(c["t"], 1, c) for c in exchange["calls"]]
    if not exchange["segments"]:
        return "(no segments were exchanged)"
    lines = [f"{'ms':>8}  {'peer ' + peer_ip:<{width // 2}}{'target ' + target_ip:>{width // 2}}"]
    for t, kind, item in sorted(rows, key=lambda r: (r[0], r[1])):
        if kind == 1:
            lines.append(f"{t * 1000:8.1f}  {'':<{width - 4}}| {_call_text(item)}")
            continue
        text = f"{item['peer_port']}⇄{item['target_port']} {_seg_text(item)}"
        mark = "  ✗ broke the expectation" if item.get("broke") else ""
        lines.append(f"{t * 1000:8.1f}  " + (f"{text} ──>" if item["from"] == "peer" else f"    <── {text}") + mark)
    failure = exchange.get("failure")
    if failure:
        lines.append(f"{failure['t'] * 1000:8.1f}      <╌╌ expected, not received: {' or '.join(failure['expected'])}"
                     if failure["broke"] is None else
                     f"{failure['t'] * 1000:8.1f}      <╌╌ expected instead: {' or '.join(failure['expected'])}")
    return "\n".join(lines)
