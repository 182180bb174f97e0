"""Where two learned models part: the shortest input words on which their outputs differ.

Two models (two stacks, or one stack learned twice) are compared on the product machine: a
breadth-first walk over pairs (state of a, state of b) from the two initial states, taking each
input both alphabets have. A pair whose outputs differ on an input is a divergence; its word is
reported once, and the walk does not go on through it, since everything after the first
disagreement is a consequence of it, not a new finding.
"""
import collections
import json
import os
from dataclasses import dataclass

import jsonschema

from .model import Model, validator

SCHEMA = "synfin-model-diff/1"
_SCHEMA_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "schema", "model-diff-1.schema.json")


@dataclass
class Difference:
    word: tuple[str, ...]
    outputs_a: list[str]
    outputs_b: list[str]
    # Each model's state before the word's last letter, where the two first answer differently.
    state_a: str
    state_b: str
    tcp_state_a: str | None = None
    tcp_state_b: str | None = None
    # Filled in later by other modules: the catalogue requirement it touches, and a live replay.
    requirement: str | None = None
    confirmed: bool | None = None
    live: dict | None = None


def common_alphabet(a: Model, b: Model) -> tuple[list[str], list[str]]:
    """(the inputs both models have, in a's order; the inputs only one has, a's first)."""
    common = [x for x in a.alphabet if x in b.alphabet]
    left_out = [x for x in a.alphabet if x not in b.alphabet] + [x for x in b.alphabet if x not in a.alphabet]
    return common, left_out


def distinguishing(a: Model, b: Model, limit: int = 20) -> list[Difference]:
    """The first divergences of a and b, shortest word first, at most `limit` of them."""
    common, _ = common_alphabet(a, b)
    found: list[Difference] = []
    start = (a.initial, b.initial)
    word_to = {start: ()}  # each product pair, with the shortest word reaching it
    queue = collections.deque([start])
    while queue and len(found) < limit:
        pair = queue.popleft()
        sa, sb = pair
        for x in common:
            out_a, next_a = a.transitions[(sa, x)]
            out_b, next_b = b.transitions[(sb, x)]
            if out_a != out_b:
                # Each pair is dequeued once, so each (pair, input) divergence is reported once.
                word = word_to[pair] + (x,)
                found.append(Difference(word, a.run(word), b.run(word), sa, sb,
                                        a.tcp_states.get(sa), b.tcp_states.get(sb)))
                if len(found) == limit:
                    break
            elif (next_a, next_b) not in word_to:
                word_to[(next_a, next_b)] = word_to[pair] + (x,)
                queue.append((next_a, next_b))
    return found


def equivalent(a: Model, b: Model) -> bool:
    """No word over the common inputs tells a from b."""
    return not distinguishing(a, b, limit=1)


# -- files -------------------------------------------------------------------------------------
def _side(path_or_name: str, model: Model) -> dict:
    # A name that is a model file on disk is recorded as the file; anything else is just a name.
    is_file = path_or_name.endswith(".json") or os.path.isfile(path_or_name)
    return {"target": model.target or ("" if is_file else path_or_name), "side": model.side,
            "file": path_or_name if is_file else None}


def to_json(a_path_or_name: str, b_path_or_name: str, a: Model, b: Model,
            differences: list[Difference]) -> dict:
    common, left_out = common_alphabet(a, b)
    data = {
        "schema": SCHEMA,
        "a": _side(a_path_or_name, a),
        "b": _side(b_path_or_name, b),
        "alphabet": common,
        "left_out": left_out,
        "differences": [{"word": list(d.word), "a": list(d.outputs_a), "b": list(d.outputs_b),
                         "state_a": d.state_a, "state_b": d.state_b,
                         "tcp_state_a": d.tcp_state_a, "tcp_state_b": d.tcp_state_b,
                         "requirement": d.requirement, "confirmed": d.confirmed, "live": d.live}
                        for d in differences],
    }
    validate_diff(data)
    return data


def from_json(data: dict) -> list[Difference]:
    """The differences of a synfin-model-diff/1 document (validated first)."""
    validate_diff(data)
    return [Difference(tuple(d["word"]), list(d["a"]), list(d["b"]), d["state_a"], d["state_b"],
                       d.get("tcp_state_a"), d.get("tcp_state_b"), d.get("requirement"),
                       d.get("confirmed"), d.get("live"))
            for d in data["differences"]]


def validate_diff(data: dict) -> None:
    """Raises jsonschema.ValidationError unless `data` is a synfin-model-diff/1 document."""
    validator(_SCHEMA_FILE).validate(data)


# -- the terminal --------------------------------------------------------------------------------
def _labels(data: dict) -> tuple[str, str]:
    """Short names for the two models, made longer only as far as needed to tell them apart."""
    a, b = data["a"], data["b"]
    for make in (lambda s: s["target"] or s["side"], lambda s: f"{s['target']} {s['side']}".strip(),
                 lambda s: os.path.basename(s["file"] or "") or s["target"]):
        la, lb = make(a), make(b)
        if la != lb:
            return la, lb
    return "a", "b"


def render_text(diff_json: dict) -> str:
    la, lb = _labels(diff_json)
    described = []
    for label, side in ((la, diff_json["a"]), (lb, diff_json["b"])):
        described.append(f"{label} ({side['file']})" if side["file"] else label)
    diffs = diff_json["differences"]
    header = f"{described[0]} vs {described[1]}: "
    header += f"{len(diffs)} difference{'s' if len(diffs) != 1 else ''}" if diffs else "no difference"
    header += f" on {' '.join(diff_json['alphabet'])}" if diff_json["alphabet"] else " (no input in common)"
    if diff_json["left_out"]:
        header += f"; left out (not in both alphabets): {' '.join(diff_json['left_out'])}"
    rows = []
    for d in diffs:
        live = {True: "[confirmed live]", False: "[not reproduced live]", None: ""}[d.get("confirmed")]
        rows.append([" ".join(d["word"]), f"{la}: {' '.join(d['a'])}", f"{lb}: {' '.join(d['b'])}",
                     live, d.get("requirement") or ""])
    lines = [header]
    if rows:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            lines.append("    ".join(cell.ljust(w) for cell, w in zip(r, widths) if w).rstrip())
    return "\n".join(lines) + "\n"
