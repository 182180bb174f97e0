"""A case as a sequence of steps, each charged to the requirement it checks.

The case's own body is one step, charged to its @requirement. `lab.step(name, id, level)` opens a
step charged to another requirement: the handshake on the way (R9293-3.10.7.2/third), the close
that leads to TIME-WAIT (R9293-3.6) ... A check that fails inside a step fails that step's
requirement at that step's level, so a broken MUST on the way is never reported as the case's own
SHOULD.

A recorded deviation (expectations/<target>.toml, `step = "<name>"`) seen exactly as recorded ends
its step as EXPECTED and the case goes on after the step, so the checks behind it still count. A
step marked `gate` is one the rest of the case stands on (an opening): a deviation there is
EXPECTED too, but the case ends with it.
"""
import pytest

from . import expectations
from .agent import OpError
from .errors import Unsupported
from .requirements import LEVELS, lookup
from .segments import flag_letters, seg_len

# What a failed check raises: a Mismatch (an AssertionError), a plain assert, an errno the case
# did not expect, pytest.fail (pytest.raises that saw nothing raised).
DEVIATIONS = (AssertionError, OpError, pytest.fail.Exception)
NOT_RUN = "NOT RUN"


class Step:
    def __init__(self, name: str, requirement: str, level: str, gate: bool = False, base: str | None = None):
        self.name = name
        self.base = base or name  # "passive open" for "passive open #2": deviations are recorded by it
        self.requirement = requirement
        self.level = level
        self.gate = gate
        self.verdict = NOT_RUN
        self.message = ""
        self.observed: str | None = None  # first line of the deviation seen here (its signature)
        self.failure = None               # the exception, for the evidence (the segment it names)

    @property
    def failed(self) -> bool:
        return self.verdict in ("FAIL", "WARN", "ERROR", "UNSUPPORTED")

    def passed(self) -> str:
        return "INFO" if self.level in ("INFO", "MAY") else "PASS"

    def record(self) -> dict:
        out = {"step": self.name, "requirement": self.requirement, "level": self.level, "verdict": self.verdict}
        if self.message:
            out["message"] = self.message
        out["observed"] = self.observed
        return out


def deviation_verdict(level: str) -> str:
    return "WARN" if level == "SHOULD" else "FAIL"


class StepLog:
    """The steps of one case, the checks made in each, and the verdict they add up to."""

    def __init__(self, body: str, requirement: str, level: str, deviations: dict | None = None):
        self.body = Step(body, requirement, level)
        self.body.verdict = "RUNNING"
        self.steps: list[Step] = [self.body]
        self._open: list[Step] = []
        self.checks: list[dict] = []
        # step name (None: the case's body) -> the deviation recorded for it
        self.deviations = deviations or {}

    def current(self) -> Step:
        return self._open[-1] if self._open else self.body

    def step(self, name: str, requirement: str, level: str = "MUST", gate: bool = False) -> "_Running":
        if level not in LEVELS:
            raise ValueError(f"step {name!r}: level {level!r} is not one of {', '.join(LEVELS)}")
        lookup(requirement)  # an unknown id is a bug in the case (KeyError: ERROR)
        taken = {s.name for s in self.steps}
        unique, n = name, 1
        while unique in taken:
            n += 1
            unique = f"{name} #{n}"
        step = Step(unique, requirement, level, gate, base=name)
        self.steps.append(step)
        return _Running(self, step)

    # -- checks -------------------------------------------------------------------------
    def checked(self, conn, wanted, tcp, outstanding: bool) -> None:
        """One expect() of a connection: what was wanted and the segment that satisfied it (None
        if nothing did). Kept as evidence, and read back to tell which checks a fault would hit."""
        entry = {"step": self.current().name, "port": conn.sport,
                 "expected": [spec.describe(conn.view) for spec in wanted.options]}
        if tcp is not None:
            entry["got"] = {"flags": flag_letters(tcp.flags), "len": len(bytes(tcp.payload)), "seg_len": seg_len(tcp),
                            "timestamps": "Timestamp" in dict(tcp.options), "t": getattr(tcp, "synfin_t", None)}
            # An expected pure ACK may come on a retransmission (segments.Seg.piggybacked): only
            # possible while the target has sequence space the peer has not acknowledged.
            entry["retransmission_may_carry_it"] = outstanding and any(s.pure_ack for s in wanted.options)
        self.checks.append(entry)

    # -- the outcome ----------------------------------------------------------------------
    def finish(self, exc) -> Step:
        """Settle every step once the case has ended (with `exc`, or None), and return the step
        whose requirement the case's verdict belongs to; its verdict is the case's."""
        if exc is None:
            self.body.verdict = self.body.passed()
        else:
            failed = getattr(exc, "synfin_step", None) or self.body
            if failed is self.body:
                self._judge(self.body, exc)
            else:
                self.body.verdict, self.body.message = NOT_RUN, f"the case stopped at step {failed.name!r}"
        # The first failed step decides, even one whose failure the case caught.
        first = next((s for s in self.steps[1:] + self.steps[:1] if s.failed), None)
        if first is not None:
            return first
        unseen = self._unseen_deviations()
        if unseen is not None:
            return unseen
        expected = next((s for s in self.steps if s.verdict == "EXPECTED"), None)
        return expected or self.body

    def _judge(self, step: Step, exc) -> None:
        if isinstance(exc, Unsupported):
            step.verdict, step.message = "UNSUPPORTED", str(exc)
        elif isinstance(exc, DEVIATIONS):
            step.observed, step.failure = str(exc).split("\n", 1)[0], exc
            deviation = self.deviations.get(None if step is self.body else step.base)
            step.verdict, step.message = expectations.apply(deviation, deviation_verdict(step.level), str(exc))
        else:
            # The plugin replaces this with the traceback pytest keeps.
            step.verdict, step.message = "ERROR", f"{type(exc).__name__}: {exc}"

    def _unseen_deviations(self) -> Step | None:
        """A recorded deviation whose step passed (a fixed bug), or whose step never ran although
        the case went through (a stale record): the case fails, charged to that step."""
        for name, deviation in self.deviations.items():
            steps = [self.body] if name is None else [s for s in self.steps[1:] if s.base == name]
            if not steps:
                if self.body.verdict in ("PASS", "INFO"):
                    self.body.verdict = "FAIL"
                    self.body.message = (f"a deviation is recorded for step {name!r}, which this case does not "
                                         f"have (steps: {', '.join(s.name for s in self.steps[1:]) or 'none'})")
                    return self.body
                continue
            if any(s.verdict == "EXPECTED" for s in steps):
                continue
            step = steps[0]
            if step.verdict in ("PASS", "INFO"):
                verdict, message = expectations.apply(deviation, step.verdict, step.message)
                if verdict != step.verdict:
                    step.verdict, step.message = verdict, message
                    return step
        return None

    def records(self) -> list[dict]:
        # The body spans the whole case: it is listed after the steps it contains.
        return [s.record() for s in self.steps[1:] + self.steps[:1]]


class _Running:
    """`with lab.step(...)`: the step is open while the block runs."""

    def __init__(self, log: StepLog, step: Step):
        self.log = log
        self.step = step

    def __enter__(self) -> Step:
        self.step.verdict = "RUNNING"
        self.log._open.append(self.step)
        return self.step

    def __exit__(self, etype, exc, tb) -> bool:
        self.log._open.remove(self.step)
        step = self.step
        if exc is None:
            step.verdict = step.passed()
            return False
        owner = getattr(exc, "synfin_step", None)
        if owner is not None:  # an inner step owns the failure: this one stopped with it
            step.verdict, step.message = NOT_RUN, f"stopped at step {owner.name!r}"
            return False
        exc.synfin_step = step
        self.log._judge(step, exc)
        # A deviation recorded for this step, seen as recorded: the case goes on behind it.
        return step.verdict == "EXPECTED" and not step.gate

