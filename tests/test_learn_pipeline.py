"""The learning pipeline (L#, the cache, majority votes, the lane oracle, the settings check) on
a simulated stack: a small Mealy machine with a deliberate timer effect, so no real stack is needed.

The simulated stack ACKs data "late" now and then, the way a delayed-ACK timer races the learner:
the ACK is missing from the step that earned it and rides on the next step's output instead.
"""
import random

import pytest

from harness.learn import diff, settings
from harness.learn.learner import learn_machine, parse_effort
from harness.learn.model import Model
from harness.learn.sul import NonDeterministic, StackSUL

from mealy_sim import machine

ALPHABET = ["SYN", "ACK", "DATA", "FIN", "RST"]
# A listener, a half-open connection, an established one, CLOSE-WAIT, and two states reached only
# after data (a receive window that fills): 6 states, all of them distinguishable.
TABLE = {
    "listen": {"SYN": ("SA", "syn_rcvd"), "ACK": ("R", "listen"), "DATA": ("R", "listen"),
               "FIN": ("R", "listen"), "RST": ("TIMEOUT", "listen")},
    "syn_rcvd": {"SYN": ("SA", "syn_rcvd"), "ACK": ("TIMEOUT", "est"), "DATA": ("A", "est1"),
                 "FIN": ("A", "close_wait"), "RST": ("TIMEOUT", "listen")},
    "est": {"SYN": ("A(a-1)", "est"), "ACK": ("TIMEOUT", "est"), "DATA": ("A", "est1"),
            "FIN": ("A", "close_wait"), "RST": ("TIMEOUT", "listen")},
    "est1": {"SYN": ("A(a-1)", "est1"), "ACK": ("TIMEOUT", "est1"), "DATA": ("A(win=0)", "full"),
             "FIN": ("A", "close_wait"), "RST": ("TIMEOUT", "listen")},
    "full": {"SYN": ("A(a-1)", "full"), "ACK": ("TIMEOUT", "full"), "DATA": ("A(a-1)", "full"),
             "FIN": ("A(win=0)", "full"), "RST": ("TIMEOUT", "listen")},
    "close_wait": {"SYN": ("A(a-1)", "close_wait"), "ACK": ("TIMEOUT", "close_wait"),
                   "DATA": ("A(a-1)", "close_wait"), "FIN": ("A(a-1)", "close_wait"),
                   "RST": ("TIMEOUT", "listen")},
}
TRUTH = machine(TABLE, alphabet=ALPHABET, target="sim")


class SimulatedStack:
    """`run(words)` as the live system answers: every word in its own lane, all stepped together.
    With `late` > 0, an ACK earned by DATA misses its step with that chance (the timer's phase is
    the same for every lane of one batch, as on a real stack) and comes with the next output."""

    def __init__(self, truth: Model = TRUTH, late: float = 0.0, seed: int = 1):
        self.truth = truth
        self.late = late
        self.rng = random.Random(seed)
        self.batches: list[int] = []

    def run(self, words):
        self.batches.append(len(words))
        late_now = self.rng.random() < self.late  # one timer for the whole batch
        outs = []
        for word in words:
            state, out, carried = self.truth.initial, [], ""
            for letter in word:
                output, state = self.truth.transitions[(state, letter)]
                if carried:
                    output, carried = (carried if output == "TIMEOUT" else f"{carried}+{output}"), ""
                if late_now and letter == "DATA" and output == "A":
                    output, carried = "TIMEOUT", "A"
                out.append(output)
            outs.append(out)
        return outs


EFFORT = parse_effort("walks=20,length=8")


def learned(stack: SimulatedStack, lanes: int = 8, seed: int = 0):
    hypothesis, figures = learn_machine(stack.run, ALPHABET, EFFORT, lanes, seed)
    return Model.from_aalpy(hypothesis, ALPHABET, target="sim"), figures


def test_a_deterministic_stack_is_learned_exactly():
    stack = SimulatedStack()
    model, figures = learned(stack)
    assert len(model.states) == len(TABLE)
    assert diff.equivalent(model, TRUTH), diff.distinguishing(model, TRUTH)
    assert figures["relearns"] == 0 and not figures["contradictions"]
    assert figures["steps"] > 0 and figures["queries"] <= figures["queries_asked"]


def test_the_equivalence_oracle_runs_its_words_in_lanes():
    stack = SimulatedStack()
    learned(stack, lanes=8)
    assert max(stack.batches) == 8  # the oracle's words went 8 at a time
    assert sum(stack.batches) > len(stack.batches)


def test_an_occasional_late_ack_is_outvoted():
    stack = SimulatedStack(late=0.05, seed=3)
    model, figures = learned(stack, lanes=4)
    assert diff.equivalent(model, TRUTH), diff.distinguishing(model, TRUTH)
    assert figures["contradictions"], "the late ACKs should have been seen and outvoted"


def test_a_stack_that_keeps_answering_two_ways_is_named():
    with pytest.raises(NonDeterministic) as caught:
        learned(SimulatedStack(late=0.5, seed=5), lanes=4)
    message = str(caught.value)
    assert "DATA" in message and "more than one way" in message
    assert "DATA" in caught.value.word


def test_cache_answers_prefixes_without_running_them():
    stack = SimulatedStack()
    sul = StackSUL(stack.run, lanes=1)
    assert sul.query(("SYN", "DATA", "DATA")) == ["SA", "A", "A(win=0)"]
    assert sul.query(("SYN", "DATA")) == ["SA", "A"]
    assert stack.batches == [1]
    assert sul.live_steps == 3


def test_the_settings_check_names_the_transitions_that_depend_on_them():
    # The "default settings" stack answers a SYN in CLOSE-WAIT with silence (a rate limit).
    table = {s: dict(row) for s, row in TABLE.items()}
    table["close_wait"]["SYN"] = ("TIMEOUT", "close_wait")
    default = SimulatedStack(machine(table, alphabet=ALPHABET, target="sim"))
    result = settings.check(TRUTH, default.run, n=500)
    assert {(d["state"], d["input"]) for d in result["dependent"]} == {(TRUTH.state_after(("SYN", "FIN")), "SYN")}
    same = settings.check(TRUTH, SimulatedStack().run, n=500)
    assert same["dependent"] == []


def test_a_stack_that_does_not_answer_the_barrier_is_told_what_that_costs(monkeypatch):
    # Without the barrier's RST every step waits a silence window: learning still works, but
    # slower and only as sure as the window, and the user must be told why.
    from types import SimpleNamespace
    from harness import targets
    from harness.learn import learner

    class Unanswered:
        barrier_works, window, ack_delay, tick = False, 0.05, 0.0, False

        def __init__(self, session, side):
            self.session, self.target = session, SimpleNamespace(name=session.spec.name)

        def run(self, words, states=None):
            if states is not None:
                states.extend([None] * len(words))
            return [["TIMEOUT"] * len(w) for w in words]

    monkeypatch.setattr(learner, "LiveSystem", Unanswered)
    said = []
    model = learner.learn(SimpleNamespace(spec=targets.get("smoltcp"), identity={}), "server",
                          parse_effort("quick"), lanes=4, progress=said.append)
    assert len(model.states) == 1 and model.learning["barrier"] is False
    told = [m for m in said if "barrier" in m]
    assert told and "no RST" in told[0] and "50 ms silence window" in told[0], said
