"""Learned models without a stack: the Model's files (JSON, DOT, SVG), canonical naming, and the
differences between two models (harness/learn/diff.py), on Mealy machines written by hand
(tests/mealy_sim.py)."""
import itertools
import json
import os
import re
import shutil

import jsonschema
import pytest

import mealy_sim as sim
from harness.learn import diff
from harness.learn.model import Model

SCHEMA_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "harness", "schema")


def schema_validator(name):
    with open(os.path.join(SCHEMA_DIR, name)) as f:
        return jsonschema.Draft202012Validator(json.load(f))


def with_input(model: Model, letter: str, output: str) -> Model:
    """`model` with one more input, answered `output` everywhere and changing no state."""
    transitions = dict(model.transitions)
    for s in {s for s, _ in model.transitions}:
        transitions[(s, letter)] = (output, s)
    return Model(model.alphabet + [letter], transitions, model.initial, model.target, model.side,
                 tcp_states=model.tcp_states)


def reordered(model: Model, alphabet) -> Model:
    return Model(list(alphabet), dict(model.transitions), model.initial, model.target, model.side,
                 tcp_states=model.tcp_states)


def first_divergences(a: Model, b: Model, depth: int) -> list[tuple[str, ...]]:
    """By brute force over every word up to `depth`, stepping the machines one input at a time:
    the words whose outputs differ on their last input only, one per (state pair before it,
    input), the shortest then first in a's alphabet order; in that order."""
    common = [x for x in a.alphabet if x in b.alphabet]
    best = {}
    for n in range(1, depth + 1):
        for word in itertools.product(common, repeat=n):
            ma, mb = sim.Sim(a), sim.Sim(b)
            for i, letter in enumerate(word):
                before = (ma.state, mb.state)
                if ma.step(letter) != mb.step(letter):
                    if i == n - 1:
                        best.setdefault((before, letter), word)  # product() yields in alphabet order
                    break
    return sorted(best.values(), key=lambda w: (len(w), [common.index(x) for x in w]))


def words(differences):
    return [d.word for d in differences]


# -- the Model --------------------------------------------------------------------------------
def test_run_and_access():
    m = sim.toy()
    assert m.run(["SYN", "ACK", "FIN", "FIN", "RST", "ACK"]) == ["SA", "TIMEOUT", "A", "TIMEOUT", "TIMEOUT", "R"]
    assert m.access() == {"listen": (), "syn_rcvd": ("SYN",), "established": ("SYN", "ACK"),
                          "close_wait": ("SYN", "ACK", "FIN")}
    assert m.state_after(["SYN", "ACK", "FIN"]) == "close_wait"


def test_canonical_names_states_breadth_first():
    c = sim.toy().canonical()
    assert c.states == ["s0", "s1", "s2", "s3"] and c.initial == "s0"
    assert c.transitions[("s1", "ACK")] == ("TIMEOUT", "s2")
    assert c.transitions[("s2", "FIN")] == ("A", "s3")
    assert c.transitions[("s3", "RST")] == ("TIMEOUT", "s0")
    assert c.tcp_states == {"s0": "LISTEN", "s1": "SYN-RECEIVED", "s2": "ESTABLISHED", "s3": "CLOSE-WAIT"}


def test_canonical_renames_isomorphic_machines_identically():
    toy, renamed = sim.toy(), sim.renamed()
    assert toy.transitions != renamed.transitions  # the same machine, not the same names
    assert renamed.canonical().transitions == toy.canonical().transitions
    assert renamed.canonical().tcp_states == toy.canonical().tcp_states
    assert sim.extra().canonical().transitions != toy.canonical().transitions


def test_canonical_drops_unreachable_states():
    m = sim.toy()
    m.transitions.update({("orphan", a): ("RA", "listen") for a in m.alphabet})
    m.tcp_states["orphan"] = "CLOSED"
    c = m.canonical()
    assert c.states == ["s0", "s1", "s2", "s3"] and len(c.transitions) == 16
    assert "CLOSED" not in c.tcp_states.values()


@pytest.mark.parametrize("make", [sim.toy, sim.renamed, sim.extra])
def test_json_round_trip(make):
    m = make()
    data = m.to_json()
    schema_validator("model-1.schema.json").validate(data)
    assert data["schema"] == "synfin-model/1" and data["initial"] == m.initial
    assert len(data["transitions"]) == len(m.states) * len(m.alphabet)
    back = Model.from_json(json.loads(json.dumps(data)))
    assert back.transitions == m.transitions
    assert back.initial == m.initial and back.alphabet == m.alphabet
    assert back.tcp_states == m.tcp_states
    assert back.to_json() == data


def test_write_and_load(tmp_path):
    m = sim.toy().canonical()
    m.learning = {"algorithm": "L#", "queries": 12, "steps": 40, "wall_s": 1.5}
    m.settings = [{"name": "net.ipv4.tcp_syncookies", "value": "0", "default": "1", "why": "determinism"}]
    paths = m.write(str(tmp_path / "models"))
    assert paths == {k: str(tmp_path / "models" / f"toy-server.{k}") for k in ("json", "dot", "svg")}
    for path in paths.values():
        assert os.path.getsize(path) > 0
    with open(paths["json"]) as f:
        schema_validator("model-1.schema.json").validate(json.load(f))
    back = Model.load(paths["json"])
    assert back.to_json() == m.to_json()
    assert back.learning["algorithm"] == "L#" and back.settings == m.settings
    with open(paths["dot"]) as f:
        assert f.read() == m.to_dot()


def _truncate(text, data):
    return text[: len(text) // 2]


def _bad_side(text, data):
    data["side"] = "middle"
    return json.dumps(data)


def _no_transitions(text, data):
    del data["transitions"]
    return json.dumps(data)


def _missing_transition(text, data):
    data["transitions"] = [t for t in data["transitions"] if not (t["from"] == "s2" and t["input"] == "FIN")]
    return json.dumps(data)


def _stray_state(text, data):
    data["transitions"][0]["to"] = "s9"
    return json.dumps(data)


@pytest.mark.parametrize("corrupt, says", [(_truncate, "not JSON"), (_bad_side, "not a synfin model"),
                                           (_no_transitions, "transitions"),
                                           (_missing_transition, "s2 FIN"), (_stray_state, "s9")])
def test_corrupted_model_file_names_its_path(tmp_path, corrupt, says):
    path = sim.toy().canonical().write(str(tmp_path))["json"]
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(corrupt(text, json.loads(text)))
    with pytest.raises(ValueError) as err:
        Model.load(path)
    assert str(err.value).startswith(path + ":")
    assert says in str(err.value)


@pytest.mark.parametrize("make", [sim.toy, sim.renamed, sim.extra])
def test_dot_has_every_transition(make):
    m = make()
    dot = m.to_dot()
    assert dot.startswith("digraph ") and dot.rstrip().endswith("}")
    assert f'__start -> "{m.initial}";' in dot
    for (s, a), (o, t) in m.transitions.items():
        # Each edge carries every input/output pair between its two states.
        edge = re.search(rf'^  "{re.escape(s)}" -> "{re.escape(t)}" \[label="([^"]*)"\];$', dot, re.M)
        assert edge, (s, t)
        assert f"{a} / {o}" in edge.group(1).split("\\n")
    for s in m.states:
        assert f'\n  "{s}" [label="{s}\\n{m.tcp_states[s]}"];\n' in dot


def test_svg(tmp_path):
    m = sim.toy().canonical()
    with open(m.write(str(tmp_path))["svg"]) as f:
        drawing = f.read()
    if shutil.which("dot") is None:
        assert "<svg" in drawing and "Graphviz (dot) is not installed" in drawing
    else:
        assert "<svg" in drawing and "s0" in drawing and "SYN / SA" in drawing


# -- differences -------------------------------------------------------------------------------
def test_no_difference_between_a_machine_and_itself_or_its_renaming():
    toy = sim.toy()
    assert diff.distinguishing(toy, sim.toy()) == []
    assert diff.equivalent(toy, sim.renamed())
    assert diff.equivalent(sim.renamed(), toy.canonical())
    assert not diff.equivalent(toy, sim.changed())


def test_one_changed_transition_is_one_difference():
    toy, changed = sim.toy(), sim.changed()
    [d] = diff.distinguishing(toy, changed)
    assert d.word == ("ACK",) and d.outputs_a == ["R"] and d.outputs_b == ["TIMEOUT"]
    assert (d.state_a, d.state_b) == ("listen", "listen")
    assert (d.tcp_state_a, d.tcp_state_b) == ("LISTEN", "LISTEN")
    assert (d.requirement, d.confirmed, d.live) == (None, None, None)
    # Longer words also first differ on that same ACK in LISTEN (after a reset, say): the same
    # divergence, not a new one.
    assert toy.run(["SYN", "RST", "ACK"])[:2] == changed.run(["SYN", "RST", "ACK"])[:2]
    assert toy.run(["SYN", "RST", "ACK"])[2] != changed.run(["SYN", "RST", "ACK"])[2]


def test_extra_state_found_at_depth_three():
    toy, extra = sim.toy(), sim.extra()
    assert first_divergences(toy, extra, 2) == []  # nothing shorter tells them apart
    [d] = diff.distinguishing(toy, extra)
    assert d.word == ("SYN", "ACK", "FIN")
    assert d.outputs_a == ["SA", "TIMEOUT", "A"] and d.outputs_b == ["SA", "TIMEOUT", "FA"]
    assert (d.state_a, d.state_b) == ("established", "fresh")
    assert (d.tcp_state_a, d.tcp_state_b) == ("ESTABLISHED", "ESTABLISHED")
    assert not diff.equivalent(toy, extra)


def test_divergences_of_different_state_pairs_shortest_first():
    ds = diff.distinguishing(sim.changed(), sim.extra())
    assert words(ds) == [("ACK",), ("SYN", "ACK", "FIN")]
    assert [(d.state_a, d.state_b) for d in ds] == [("listen", "listen"), ("established", "fresh")]
    assert ds[1].outputs_a == ["SA", "TIMEOUT", "A"] and ds[1].outputs_b == ["SA", "TIMEOUT", "FA"]


def ring(odd_state=None) -> Model:
    """Five states in a ring: SYN goes two ahead, ACK one; FIN in `odd_state` is answered FA."""
    table = {f"c{i}": {"SYN": ("TIMEOUT", f"c{(i + 2) % 5}"), "ACK": ("TIMEOUT", f"c{(i + 1) % 5}"),
                       "FIN": ("FA" if f"c{i}" == odd_state else "TIMEOUT", f"c{i}"), "RST": ("TIMEOUT", "c0")}
             for i in range(5)}
    return sim.machine(table, target="ring")


def test_shortest_word_even_when_a_longer_path_is_seen_first():
    # c4 is reached by SYN SYN, and by ACK SYN ACK: a depth-first walk finds the latter first.
    a, b = ring("c4"), ring()
    assert words(diff.distinguishing(a, b)) == [("SYN", "SYN", "FIN")] == first_divergences(a, b, 5)
    assert words(diff.distinguishing(ring("c3"), b)) == [("SYN", "ACK", "FIN")]


@pytest.mark.parametrize("a, b", [(sim.toy, sim.changed), (sim.toy, sim.extra), (sim.changed, sim.extra),
                                  (sim.toy, sim.relabelled), (sim.extra, sim.relabelled),
                                  (sim.relabelled, sim.changed), (sim.toy, sim.renamed)])
def test_agrees_with_brute_force(a, b):
    a, b = a(), b()
    expected = first_divergences(a, b, 6)
    assert expected == first_divergences(a, b, 5)  # deep enough: nothing new past 5 inputs
    assert words(diff.distinguishing(a, b)) == expected
    for d in diff.distinguishing(a, b):
        assert d.outputs_a == a.run(d.word) and d.outputs_b == b.run(d.word)
        assert d.outputs_a[:-1] == d.outputs_b[:-1] and d.outputs_a[-1] != d.outputs_b[-1]
        assert (d.state_a, d.state_b) == (a.state_after(d.word[:-1]), b.state_after(d.word[:-1]))


def test_limit():
    toy, relabelled = sim.toy(), sim.relabelled()
    full = diff.distinguishing(toy, relabelled)
    # The TIMEOUTs of LISTEN and SYN-RECEIVED; ESTABLISHED is reached only through a difference.
    assert len(full) == 5
    assert words(full[:4]) == [("FIN",), ("RST",), ("SYN", "ACK"), ("SYN", "FIN")]
    assert [len(w) for w in words(full)] == sorted(len(w) for w in words(full))
    assert diff.distinguishing(toy, relabelled, limit=3) == full[:3]
    assert diff.distinguishing(toy, relabelled, limit=1) == full[:1]
    assert diff.distinguishing(toy, relabelled, limit=0) == []
    assert diff.distinguishing(toy, relabelled, limit=100) == full


def test_first_models_alphabet_order():
    backwards = list(reversed(sim.ALPHABET))
    toy, relabelled = sim.toy(), sim.relabelled()
    assert diff.distinguishing(toy, reordered(relabelled, backwards)) == diff.distinguishing(toy, relabelled)
    ds = diff.distinguishing(reordered(toy, backwards), relabelled)
    assert words(ds)[:3] == [("RST",), ("FIN",), ("SYN", "RST")]


def test_differing_alphabets_search_the_common_inputs():
    a = with_input(sim.toy(), "DATA", "A")
    b = with_input(sim.changed(), "CLOSE", "ok;FA")
    assert diff.common_alphabet(a, b) == (["SYN", "ACK", "FIN", "RST"], ["DATA", "CLOSE"])
    assert words(diff.distinguishing(a, b)) == [("ACK",)]
    # A difference only DATA would show is out of reach when b has no DATA.
    silent_data = with_input(sim.toy(), "DATA", "TIMEOUT")
    assert not diff.equivalent(a, silent_data)
    assert diff.equivalent(a, sim.toy()) and diff.equivalent(sim.toy(), a)
    data = diff.to_json("a", "b", a, b, diff.distinguishing(a, b))
    assert data["alphabet"] == ["SYN", "ACK", "FIN", "RST"] and data["left_out"] == ["DATA", "CLOSE"]
    assert "left out (not in both alphabets): DATA CLOSE" in diff.render_text(data)


def test_diff_json_round_trip(tmp_path):
    toy, extra = sim.toy(), sim.changed()
    file_a = sim.toy().write(str(tmp_path))["json"]
    ds = diff.distinguishing(toy, sim.extra()) + diff.distinguishing(toy, extra)
    ds[0].requirement, ds[0].confirmed, ds[0].live = "R9293-3.10.7.4", True, {"a": ["SA"], "runs": 3}
    data = diff.to_json(file_a, "smoltcp", toy, extra, ds)
    schema_validator("model-diff-1.schema.json").validate(data)
    assert data["schema"] == "synfin-model-diff/1"
    assert data["a"] == {"target": "toy", "side": "server", "file": file_a}
    assert data["b"] == {"target": "changed", "side": "server", "file": None}
    assert data["differences"][0] == {
        "word": ["SYN", "ACK", "FIN"], "a": ["SA", "TIMEOUT", "A"], "b": ["SA", "TIMEOUT", "FA"],
        "state_a": "established", "state_b": "fresh", "tcp_state_a": "ESTABLISHED", "tcp_state_b": "ESTABLISHED",
        "requirement": "R9293-3.10.7.4", "confirmed": True, "live": {"a": ["SA"], "runs": 3}}
    assert diff.from_json(json.loads(json.dumps(data))) == ds


@pytest.mark.parametrize("spoil", [lambda d: d.update(schema="synfin-model/1"),
                                   lambda d: d["differences"][0].update(confirmed="yes"),
                                   lambda d: d["differences"][0].update(word=[]),
                                   lambda d: d["differences"][0].pop("state_a"),
                                   lambda d: d["a"].update(side="both")])
def test_diff_schema_rejects(spoil):
    data = diff.to_json("toy", "changed", sim.toy(), sim.changed(), diff.distinguishing(sim.toy(), sim.changed()))
    spoil(data)
    with pytest.raises(jsonschema.ValidationError):
        diff.validate_diff(data)
    with pytest.raises(jsonschema.ValidationError):
        diff.from_json(data)


def test_render_text():
    toy, relabelled = sim.toy(), sim.relabelled()
    ds = diff.distinguishing(toy, relabelled, limit=4)
    ds[2].confirmed, ds[2].requirement = True, "R9293-3.10.4"
    ds[3].confirmed = False
    text = diff.render_text(diff.to_json("toy", "relabelled", toy, relabelled, ds))
    header, *lines = text.rstrip("\n").split("\n")
    assert header == "toy vs relabelled: 4 differences on SYN ACK FIN RST"
    assert len(lines) == 4
    for line, d in zip(lines, ds):
        assert line.startswith(" ".join(d.word) + " ")
        assert f"toy: {' '.join(d.outputs_a)}" in line and f"relabelled: {' '.join(d.outputs_b)}" in line
    assert re.search(r"  \[confirmed live\] +R9293-3\.10\.4$", lines[2])
    assert lines[3].endswith("[not reproduced live]")
    assert "live" not in lines[0] + lines[1]
    # Aligned: each model's column starts at the same place on every line.
    assert len({line.index("toy:") for line in lines}) == 1
    assert len({line.index("relabelled:") for line in lines}) == 1


def test_render_text_no_difference_and_same_target():
    toy = sim.toy()
    client = sim.toy()
    client.side = "client"
    text = diff.render_text(diff.to_json("models/toy-server.json", "models/toy-client.json", toy, client, []))
    assert text == ("toy server (models/toy-server.json) vs toy client (models/toy-client.json): "
                    "no difference on SYN ACK FIN RST\n")
