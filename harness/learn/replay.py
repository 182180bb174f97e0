"""Differences between two models, replayed live on both stacks: a difference is confirmed when
each stack answers its word as its own model says, twice (so a model's error, or a stack that
answers otherwise today, is not reported as a difference between the stacks)."""
from ..session import Session
from . import settings as learn_settings
from .lanes import LiveSystem

RUNS = 2


def live_outputs(model, words: list, runtime: str, notice) -> list[list[list[str]]]:
    """Every word run RUNS times on the model's target, with the settings it was learned with."""
    session = Session(model.target, runtime, notice=notice)
    try:
        session.ensure()
        system = LiveSystem(session, model.side)
        changed = learn_settings.Applied(system, learn_settings.for_target(session))
        changed.apply()
        try:
            runs = [system.run(words) for _ in range(RUNS)]
        finally:
            changed.restore()
    finally:
        session.close()
    return [[run[k] for run in runs] for k in range(len(words))]


def confirm(a, b, differences, runtime: str = "auto", notice=print) -> None:
    """Fill in each difference's `live` outputs and `confirmed`."""
    words = [tuple(d.word) for d in differences]
    seen = {"a": live_outputs(a, words, runtime, notice), "b": live_outputs(b, words, runtime, notice)}
    for k, d in enumerate(differences):
        d.live = {"a": seen["a"][k][0], "b": seen["b"][k][0]}
        d.confirmed = all(out == list(d.outputs_a) for out in seen["a"][k]) and \
            all(out == list(d.outputs_b) for out in seen["b"][k])
