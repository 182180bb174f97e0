"""The ladder diagram of a case's exchange as inline SVG.

Peer on the left, target on the right; one arrow per segment, the agent's socket calls as labels
on the target's line when they returned, the segment that broke an expectation in red, and the
segment that was expected but never came as a dashed arrow. The vertical axis is the ORDER of
events (even spacing, the real offset printed in ms beside each): a case that waits a minute for
a timer would otherwise be a minute tall. Waits of half a second or more are marked on the axis.
"""
import math

from markupsafe import Markup

from .render import render

WIDTH = 380
TIME_X = 42        # right edge of the ms column
PEER_X = 60
TARGET_X = WIDTH - 16
MID_X = (PEER_X + TARGET_X) / 2
TEXT_ROOM = TARGET_X - PEER_X - 14
CHAR = 0.602       # advance of a monospace glyph, in em (DejaVu Sans Mono, Menlo, Consolas)
FONT = 10
MIN_FONT = 7.5
TOP = 46
GAP = 0.5          # seconds between events worth marking on the axis

COLOURS = {"peer": "#37474f", "target": "#1565c0", "broke": "#d32f2f", "missing": "#d32f2f",
           "call": "#6a1b9a", "muted": "#78909c", "line": "#b0bec5"}


def _fit(text: str, room: float = TEXT_ROOM, font: float = FONT) -> tuple[str, float]:
    """(text, font size) so that the text fits `room` px: smaller type first, then a cut."""
    need = len(text) * CHAR * font
    if need <= room:
        return text, font
    size = max(MIN_FONT, font * room / need)
    fits = int(room / (CHAR * size))
    return (text if len(text) <= fits else text[: fits - 1] + "…"), round(size, 2)


def _wrap(text: str, width: int, lines: int) -> list[str]:
    out, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    out.append(line)
    if len(out) > lines:
        out = out[:lines]
        out[-1] = out[-1][: width - 1] + "…"
    return [l if len(l) <= width else l[: width - 1] + "…" for l in out]


def _head(x1: float, y1: float, x2: float, y2: float, size: float = 7.0) -> str:
    """The points of an arrowhead at (x2, y2) for a line from (x1, y1)."""
    length = math.hypot(x2 - x1, y2 - y1) or 1.0
    ux, uy = (x2 - x1) / length, (y2 - y1) / length
    bx, by = x2 - ux * size, y2 - uy * size
    px, py = -uy * size / 2, ux * size / 2
    return f"{x2:.1f},{y2:.1f} {bx + px:.1f},{by + py:.1f} {bx - px:.1f},{by - py:.1f}"


def _ms(t: float) -> str:
    return f"{t * 1000:.1f}"


def _options(options: list) -> str:
    return ", ".join(" ".join(str(x) for x in o) for o in options)


def segment_text(s: dict) -> str:
    text = f"seq={s['seq']}"
    if s["ack"] is not None:
        text += f" ack={s['ack']}"
    return text + f" len={s['len']} win={s['win']}"


def _arrow(start: float, end: float, y: float, colour: str, dashed: bool = False) -> dict:
    y1, y2 = y, y + 6  # a slight slope: the segment takes time to cross
    return {"x1": start, "y1": y1, "x2": end, "y2": y2, "head": _head(start, y1, end, y2),
            "colour": colour, "dash": "5,3" if dashed else None}


def _segment(s: dict, y: float, ports: bool) -> tuple[dict, float]:
    from_peer = s["from"] == "peer"
    broke = bool(s.get("broke"))
    colour = COLOURS["broke"] if broke else COLOURS[s["from"]]
    prefix = f"{s['peer_port']} " if ports else ""
    rest = segment_text(s) + (" ✗" if broke else "")
    full, size = _fit(prefix + s["flags"] + " " + rest)
    # The fitted text is split back into its parts so that the flags can be drawn bold.
    cut = len(prefix) + len(s["flags"])
    # A SYN's options are what it negotiates (later segments mostly repeat timestamps): they go
    # on a line of their own between the segment's text and its arrow.
    opts = _options(s["options"]) if s.get("options") and "SYN" in s["flags"] else None
    arrow_y = y + (23 if opts else 14)
    event = {"kind": "seg", "y": y, "ms": _ms(s["t"]), "ms_y": arrow_y + 4, "colour": colour, "broke": broke,
             "prefix": full[: len(prefix)], "flags": full[len(prefix):cut], "rest": full[cut:], "size": size,
             "text_y": y + 10, "opts": None,
             "arrow": _arrow(*((PEER_X, TARGET_X) if from_peer else (TARGET_X, PEER_X)), arrow_y, colour)}
    if opts:
        event["opts"], event["opts_size"] = _fit(f"<{opts}>", font=8.5)
        event["opts_y"] = y + 19
    tip = f"{s['from']} → {'target' if from_peer else 'peer'}: {s['flags']} {segment_text(s)}"
    if s.get("options"):
        tip += f" options [{_options(s['options'])}]"
    if "abs_seq" in s:
        tip += f" (absolute seq {s['abs_seq']}, ack {s.get('abs_ack')})"
    if s.get("ttl") is not None:
        tip += f" ttl={s['ttl']}"
    event["tip"] = tip + (" — broke the expectation" if broke else "")
    height = arrow_y + 12 - y
    return event, height


def _call(c: dict, y: float) -> tuple[dict, float]:
    args = ", ".join(f"{k}={v}" for k, v in c["args"].items())
    full = f"{c['op']}({args}) → {c['result']}"
    short = full if len(full) <= 44 else f"{c['op']}({'…' if args else ''}) → {c['result']}"
    text, size = _fit(short, room=TARGET_X - PEER_X - 10)
    tip = f"{full}; called at {_ms(c['t_call'])} ms, returned at {_ms(c['t'])} ms"
    return {"kind": "call", "y": y, "ms": _ms(c["t"]), "ms_y": y + 11, "text": text, "size": size,
            "text_x": TARGET_X - 7, "text_y": y + 11, "dot_y": y + 8, "tip": tip,
            "colour": COLOURS["call"]}, 16


def _missing(failure: dict, y: float) -> tuple[dict, float]:
    wanted = " or ".join(failure["expected"]) or "(unspecified)"
    lead = "expected, never came:" if failure.get("broke") is None else "expected instead of ✗:"
    lines = [lead] + _wrap(wanted, int(TEXT_ROOM / (CHAR * 9)), 3)
    tops = [y + 10 + 11 * i for i in range(len(lines))]
    arrow_y = tops[-1] + 5
    return {"kind": "miss", "y": y, "ms": _ms(failure["t"]), "ms_y": arrow_y + 4, "lines": list(zip(tops, lines)),
            "arrow": _arrow(TARGET_X, PEER_X, arrow_y, COLOURS["missing"], dashed=True),
            "tip": f"expected at {_ms(failure['t'])} ms: {wanted}", "colour": COLOURS["missing"]}, arrow_y + 14 - y


def _gap(seconds: float, y: float) -> tuple[dict, float]:
    return {"kind": "gap", "y": y, "text": f"{seconds:.1f} s later", "text_y": y + 10}, 14


def _events(exchange: dict) -> list[tuple[float, int, str, dict]]:
    rows = [(s["t"], 0, "seg", s) for s in exchange["segments"]]
    rows += [(c["t"], 1, "call", c) for c in exchange["calls"]]
    if exchange.get("failure"):
        rows.append((exchange["failure"]["t"], 2, "miss", exchange["failure"]))
    return sorted(rows, key=lambda r: (r[0], r[1]))  # stable: same-time segments keep capture order


def _heads(exchange: dict) -> list[dict]:
    peer_ports = sorted({s["peer_port"] for s in exchange["segments"]})
    target_ports = sorted({s["target_port"] for s in exchange["segments"]})

    def where(ip, ports):
        ip = ip or ""
        if len(ports) == 1:
            return f"{ip}:{ports[0]}" if ip else f"port {ports[0]}"
        if ports:
            return f"{ip} ({len(ports)} ports)" if ip else f"{len(ports)} ports"
        return ip

    return [{"x": PEER_X, "anchor": "middle", "role": "peer (synfin)",
             "where": where(exchange.get("peer_ip"), peer_ports)},
            {"x": TARGET_X, "anchor": "end", "role": "target", "where": where(exchange.get("target_ip"), target_ports)}]


def layout(record: dict) -> dict | None:
    exchange = record.get("exchange")
    if not exchange or not (exchange["segments"] or exchange["calls"] or exchange.get("failure")):
        return None
    ports = len({s["peer_port"] for s in exchange["segments"]}) > 1
    events, y, last_t = [], TOP, None
    for t, _, kind, item in _events(exchange):
        if last_t is not None and t - last_t >= GAP:
            event, height = _gap(t - last_t, y)
            events.append(event)
            y += height
        last_t = t if last_t is None else max(last_t, t)
        if kind == "seg":
            event, height = _segment(item, y, ports)
        elif kind == "call":
            event, height = _call(item, y)
        else:
            event, height = _missing(item, y)
        events.append(event)
        y += height
    return {"width": WIDTH, "height": y + 8, "top": TOP - 6, "time_x": TIME_X, "peer_x": PEER_X,
            "target_x": TARGET_X, "mid_x": MID_X, "heads": _heads(exchange), "events": events,
            "colours": COLOURS, "label": f"ladder diagram of {record['case']} on {record['target']}"}


def svg(record: dict) -> Markup:
    """The record's exchange as an <svg> element (safe to place in a page as it is)."""
    return Markup(render("ladder.svg.j2", l=layout(record), width=WIDTH))
