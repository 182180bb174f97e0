"""Learning one stack's model: AALpy's L# over the live system, with the settings it needs, then
the states named by the stack, the settings checked, and the transitions held against the RFC."""
import importlib.metadata
import time

from aalpy.learning_algs import run_Lsharp

from . import conformance, settings as learn_settings
from .alphabet import ALPHABETS
from .lanes import BARRIER_DPORT, BARRIER_SPORT, LearnError, LiveSystem
from .model import Model
from .sul import LaneOracle, Relearn, StackSUL

# The equivalence oracle's effort: random walks per hypothesis state, and their length.
EFFORTS = {"quick": {"walks": 10, "length": 10}, "standard": {"walks": 25, "length": 12},
           "thorough": {"walks": 50, "length": 15}}
MAX_RELEARNS = 8


def parse_effort(text: str) -> dict:
    """`standard`, or `walks=50,length=15`."""
    if text in EFFORTS:
        return dict(EFFORTS[text], name=text)
    try:
        fields = dict(part.split("=", 1) for part in text.split(","))
        effort = {"walks": int(fields.pop("walks")), "length": int(fields.pop("length"))}
    except (KeyError, ValueError):
        fields = {"?": ""}
    if fields or effort["walks"] < 1 or effort["length"] < 1:
        raise ValueError(f"--effort {text!r}: one of {', '.join(EFFORTS)}, or walks=N,length=L (both ≥ 1)")
    return dict(effort, name="custom")


def learn_machine(run, alphabet: list[str], effort: dict, lanes: int, seed: int = 0, progress=None):
    """L# over `run(words)` (live or simulated): the hypothesis AALpy settled on and the figures."""
    sul = StackSUL(run, lanes=lanes)
    began = time.monotonic()
    relearns = 0
    while True:
        oracle = LaneOracle(alphabet, sul, effort["walks"], effort["length"], seed)
        if progress is not None:
            find = oracle.find_cex

            def find_cex(hypothesis, find=find):
                progress(f"hypothesis of {hypothesis.size} states; {sul.live_steps} live steps so far")
                return find(hypothesis)

            oracle.find_cex = find_cex
        try:
            # SepSeq: whole words (adaptive queries would step letter by letter, outside the lanes).
            hypothesis, info = run_Lsharp(alphabet, sul, oracle, "mealy", extension_rule="SepSeq",
                                          separation_rule="SepSeq", cache_and_non_det_check=False,
                                          return_data=True, print_level=0)
            break
        except Relearn as exc:
            relearns += 1
            if relearns > MAX_RELEARNS:
                raise LearnError(f"learning restarted {relearns} times after answers a majority overturned "
                                 f"(last: {' '.join(exc.args[0])}): the stack is not stable under this mapper") from None
            if progress is not None:
                progress(f"a majority overturned the answer to {' '.join(exc.args[0])}: learning again from the cache")
    wall = time.monotonic() - began
    figures = {
        "algorithm": f"L# (AALpy {importlib.metadata.version('aalpy')})",
        "oracle": {"name": "state-prefix random walks, run in parallel lanes",
                   "effort": {"name": effort.get("name", "custom"), "walks_per_state": effort["walks"],
                              "length": effort["length"], "seed": seed}},
        "rounds": info["learning_rounds"],
        "queries": sul.live_queries,
        "steps": sul.live_steps,
        "queries_asked": info["queries_learning"] + oracle.num_queries,
        "oracle_queries": oracle.num_queries,
        "oracle_steps": oracle.num_steps,
        "cache_hits": sul.num_cached_queries,
        "wall_s": round(wall, 2),
        "lanes": lanes,
        "relearns": relearns,
        "contradictions": sul.contradictions,
    }
    return hypothesis, figures


def _states_after(system, words: list, lanes: int) -> list:
    """The TCP state the stack reports after each word, `lanes` words at a time."""
    found: list = []
    for i in range(0, len(words), lanes):
        system.run(words[i:i + lanes], states=found)
    return found


def learn(session, side: str = "server", effort: dict | None = None, lanes: int = 16, seed: int = 0,
          check_settings: bool = True, progress=None) -> Model:
    """The model of the stack behind a started Session."""
    effort = effort or parse_effort("standard")
    spec = session.spec
    if side == "client" and "connect_nonblocking" not in spec.capabilities:
        raise LearnError(f"target {spec.name} cannot learn its client side: its agent has no non-blocking "
                         "connect (the CONNECT input)")
    alphabet = ALPHABETS[side]
    system = LiveSystem(session, side)
    if not system.barrier_works and progress is not None:
        progress(f"target {spec.name} does not answer the barrier probe (an ACK from port {BARRIER_SPORT} to its "
                 f"closed port {BARRIER_DPORT} gets no RST): every step waits a {system.window * 1000:.0f} ms "
                 "silence window instead, so learning is slower and silence only as sure as that window")
    changed = learn_settings.Applied(system, learn_settings.for_target(session))
    began = time.monotonic()
    changed.apply()
    try:
        hypothesis, figures = learn_machine(system.run, alphabet, effort, lanes, seed, progress)
        model = Model.from_aalpy(hypothesis, alphabet, target=spec.name, side=side,
                                 identity=session.identity or {})
        access = model.access()
        model.tcp_states = dict(zip(access, _states_after(system, [list(access[s]) for s in access], lanes)))
        # The state after each checked transition, seen after that very transition: a learned
        # state may stand for two TCP states (conformance.check).
        words = conformance.checked_words(model)
        after_states = dict(zip(words, _states_after(system, list(words.values()), lanes)))
    finally:
        changed.restore()
    figures.update(wall_s=round(time.monotonic() - began, 2), barrier=system.barrier_works,
                   ack_delay_s=system.ack_delay, ms_per_step=round(1000 * figures["wall_s"] / max(1, figures["steps"]), 2))
    model.learning = figures
    model.settings = [s.record() for s in changed.settings]
    if changed.settings and check_settings:
        if progress is not None:
            progress("replaying sampled words with the stack's default settings")
        model.settings_check = learn_settings.check(model, system.run)
    model.conformance = conformance.check(model, after_states)
    return model
