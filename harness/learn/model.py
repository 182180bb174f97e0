"""A learned Mealy machine as synfin keeps it: JSON (schema'd), Graphviz DOT and an SVG drawing.

A model says what a stack answered to every sequence of abstract inputs: `transitions[(state,
input)] = (output, next state)`, states named s0 (initial), s1 ... in breadth-first order of their
shortest access sequence, so two learnings of the same machine give the same file. Beside the
machine it carries how it was learned (algorithm, equivalence oracle and its effort, queries,
steps, wall time), the stack's identity and every setting the learning changed on the stack.
"""
import collections
import functools
import html
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field

import jsonschema

SCHEMA = "synfin-model/1"
_SCHEMA_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "schema", "model-1.schema.json")
SILENT = "TIMEOUT"  # no segment came before the barrier: the literature's name for it


@dataclass
class Model:
    alphabet: list[str]
    transitions: dict[tuple[str, str], tuple[str, str]]
    initial: str = "s0"
    target: str = ""
    side: str = "server"
    identity: dict = field(default_factory=dict)
    learning: dict = field(default_factory=dict)
    # Every setting the learning changed on the stack: {name, value, default, why}.
    settings: list[dict] = field(default_factory=list)
    # What a replay with the stack's default settings said about them (harness/learn/settings.py).
    settings_check: dict | None = None
    # Per state: the RFC 9293 state the stack reported after the access sequence, where it can tell.
    tcp_states: dict[str, str | None] = field(default_factory=dict)
    # Learned transitions checked against the matrix's oracle table (harness/learn/conformance.py).
    conformance: list[dict] = field(default_factory=list)

    # -- the machine ----------------------------------------------------------------------
    @property
    def states(self) -> list[str]:
        """Every state, in breadth-first order from the initial one."""
        return list(self.access().keys())

    def access(self) -> dict[str, tuple[str, ...]]:
        """The shortest (then first in alphabet order) input sequence reaching each state."""
        seen = {self.initial: ()}
        queue = collections.deque([self.initial])
        while queue:
            state = queue.popleft()
            for letter in self.alphabet:
                nxt = self.transitions[(state, letter)][1]
                if nxt not in seen:
                    seen[nxt] = seen[state] + (letter,)
                    queue.append(nxt)
        return seen

    def run(self, word) -> list[str]:
        """The outputs the model predicts for `word` from the initial state."""
        state, out = self.initial, []
        for letter in word:
            output, state = self.transitions[(state, letter)]
            out.append(output)
        return out

    def state_after(self, word) -> str:
        state = self.initial
        for letter in word:
            state = self.transitions[(state, letter)][1]
        return state

    def outputs(self) -> list[str]:
        return sorted({out for out, _ in self.transitions.values()})

    def canonical(self) -> "Model":
        """The same machine with states renamed s0, s1 ... in breadth-first order (unreachable
        states dropped)."""
        names = {old: f"s{i}" for i, old in enumerate(self.access())}
        transitions = {(names[s], a): (o, names[t]) for (s, a), (o, t) in self.transitions.items() if s in names}
        tcp_states = {names[s]: v for s, v in self.tcp_states.items() if s in names}
        return Model(self.alphabet, transitions, "s0", self.target, self.side, self.identity, self.learning,
                     self.settings, self.settings_check, tcp_states, self.conformance)

    @classmethod
    def from_aalpy(cls, automaton, alphabet: list[str], **kw) -> "Model":
        """From an AALpy MealyMachine (states keyed by their state_id)."""
        transitions = {}
        for state in automaton.states:
            for letter in alphabet:
                transitions[(state.state_id, letter)] = (str(state.output_fun[letter]),
                                                         state.transitions[letter].state_id)
        return cls(list(alphabet), transitions, automaton.initial_state.state_id, **kw).canonical()

    # -- files ----------------------------------------------------------------------------
    def to_json(self) -> dict:
        access = self.access()
        return {
            "schema": SCHEMA,
            "target": self.target,
            "side": self.side,
            "identity": self.identity,
            "alphabet": self.alphabet,
            "outputs": self.outputs(),
            "initial": self.initial,
            "states": [{"id": s, "access": list(access[s]), "tcp_state": self.tcp_states.get(s)}
                       for s in access],
            "transitions": [{"from": s, "input": a, "output": o, "to": t}
                            for s in access for a in self.alphabet
                            for o, t in [self.transitions[(s, a)]]],
            "learning": self.learning,
            "settings": self.settings,
            "settings_check": self.settings_check,
            "conformance": self.conformance,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Model":
        validate(data)
        transitions = {(t["from"], t["input"]): (t["output"], t["to"]) for t in data["transitions"]}
        # The schema cannot say the machine is whole: every state answers every input, within itself.
        ids = {s["id"] for s in data["states"]}
        missing = [f"{s} {a}" for s in ids for a in data["alphabet"] if (s, a) not in transitions]
        named = {s for s, _ in transitions} | {t for _, t in transitions.values()} | {data["initial"]}
        strays = sorted(named - ids)
        if missing or strays:
            raise ValueError(f"not a whole machine: no transition for {', '.join(sorted(missing)) or '-'}; "
                             f"undeclared states {', '.join(strays) or '-'}")
        return cls(data["alphabet"], transitions, data["initial"], data["target"], data["side"],
                   data.get("identity") or {}, data.get("learning") or {}, data.get("settings") or [],
                   data.get("settings_check"), {s["id"]: s.get("tcp_state") for s in data["states"]},
                   data.get("conformance") or [])

    @classmethod
    def load(cls, path: str) -> "Model":
        with open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not JSON: {exc}") from None
        try:
            return cls.from_json(data)
        except jsonschema.ValidationError as exc:
            raise ValueError(f"{path}: not a synfin model: {exc.message} (at {'/'.join(map(str, exc.absolute_path))})") from None
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def to_dot(self) -> str:
        """Graphviz: one edge per (state, next state), labelled with every input/output on it."""
        edges: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
        for (s, a), (o, t) in sorted(self.transitions.items(), key=lambda kv: (kv[0][0], self.alphabet.index(kv[0][1]))):
            edges[(s, t)].append(f"{a} / {o}")
        title = f"{self.target} {self.side}".strip()
        lines = [f'digraph "{title}" {{', '  rankdir=LR; node [shape=circle, fontname="sans-serif"];',
                 '  edge [fontname="monospace", fontsize=9];', '  __start [shape=point, label=""];',
                 f'  __start -> "{self.initial}";']
        for s in self.states:
            tcp = self.tcp_states.get(s)
            label = f"{s}\\n{tcp}" if tcp else s
            lines.append(f'  "{s}" [label="{label}"];')
        for (s, t), labels in edges.items():
            text = "\\n".join(label.replace('"', '\\"') for label in labels)
            lines.append(f'  "{s}" -> "{t}" [label="{text}"];')
        lines.append("}")
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str) -> dict[str, str]:
        """DIR/<target>-<side>.json, .dot and .svg; returns the paths written by kind."""
        os.makedirs(out_dir, exist_ok=True)
        base = os.path.join(out_dir, f"{self.target}-{self.side}")
        data = self.to_json()
        validate(data)
        paths = {"json": base + ".json", "dot": base + ".dot", "svg": base + ".svg"}
        with open(paths["json"], "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        with open(paths["dot"], "w") as f:
            f.write(self.to_dot())
        with open(paths["svg"], "w") as f:
            f.write(svg(self.to_dot()))
        return paths


def svg(dot: str) -> str:
    """Graphviz's drawing of `dot`; without Graphviz, an SVG that says so (the DOT is beside it)."""
    exe = shutil.which("dot")
    if exe is None:
        return ('<svg xmlns="http://www.w3.org/2000/svg" width="420" height="40"><text x="8" y="24">'
                "Graphviz (dot) is not installed: open the .dot file beside this one</text></svg>\n")
    done = subprocess.run([exe, "-Tsvg"], input=dot.encode(), capture_output=True, timeout=120)
    if done.returncode != 0:
        message = html.escape(done.stderr.decode(errors="replace").strip()[:200])
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="600" height="40"><text x="8" y="24">dot failed: {message}</text></svg>\n'
    return done.stdout.decode()


@functools.cache
def validator(schema_file: str) -> jsonschema.Draft202012Validator:
    """The schema at `schema_file`, read once."""
    with open(schema_file) as f:
        return jsonschema.Draft202012Validator(json.load(f))


def validate(data: dict) -> None:
    validator(_SCHEMA_FILE).validate(data)
