"""Known deviations per target (expectations/<target>.toml), applied as strict expected failures.

    [[deviation]]
    case = "cases/close/test_x.py::test_y"       # the case's node id
    step = "answered from CLOSED"                 # the step it shows in (none: the case's own check)
    observed = "received RST,ACK seq=0"           # text the failure message must contain
    rfc = "RFC 9293 §3.10.7.1"
    why = "lwIP's tcp_rst_common() always sets ACK (src/core/tcp_out.c)"

A recorded deviation that shows up as recorded is EXPECTED (the run passes), and the case goes on
after its step (harness/steps.py). If the step passes instead, or fails differently, the verdict is
FAIL: a fixed bug or a new one shows up as a change.
One deviation of a stack that shows in many cases (lwIP sets ACK on every RST it sends, in every
cell of the matrix that expects a RST) may name them with `*` in `case`:
`case = "cases/matrix/test_cells.py::test_cell[SYN-SENT-*]"`; a deviation recorded for the case
itself, for the same step, takes precedence.
A deviation that depends on chance (e.g. on how two hashed ISNs compare) carries
`intermittent = true`: a run where it does not show keeps the case's own verdict. One that can
show in more than one way lists them: `observed = ["text one", "text two"]` (any of them).
"""
import os
import re
import tomllib
from dataclasses import dataclass

DEFAULT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "expectations")


@dataclass(frozen=True)
class Deviation:
    case: str
    observed: str | tuple[str, ...]
    rfc: str
    why: str
    intermittent: bool = False
    step: str | None = None


def load(target: str, directory: str = DEFAULT_DIR) -> dict[str, dict[str | None, Deviation]]:
    """case node id -> step name (None: the case's own check) -> its recorded deviation."""
    if not os.path.isdir(directory):
        raise ValueError(f"--expectations {directory}: no such directory")
    path = os.path.join(directory, f"{target}.toml")
    if not os.path.exists(path):
        return {}
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None
    out = {}
    for entry in data.get("deviation", []):
        missing = [k for k in ("case", "observed", "rfc", "why") if not entry.get(k)]
        if missing:
            raise ValueError(f"{path}: a deviation lacks {', '.join(missing)}: {entry}")
        observed = entry["observed"]
        observed = tuple(observed) if isinstance(observed, list) else observed
        deviation = Deviation(entry["case"], observed, entry["rfc"], entry["why"],
                              bool(entry.get("intermittent", False)), entry.get("step"))
        steps = out.setdefault(deviation.case, {})
        if deviation.step in steps:
            raise ValueError(f"{path}: two deviations for {deviation.case} step {deviation.step or '(the case)'}")
        steps[deviation.step] = deviation
    return out


def apply(deviation: Deviation | None, verdict: str, message: str) -> tuple[str, str]:
    """The verdict once the recorded deviation is taken into account, and the message to show."""
    if deviation is None or verdict in ("ERROR", "UNSUPPORTED"):
        return verdict, message
    if verdict in ("FAIL", "WARN"):
        texts = (deviation.observed,) if isinstance(deviation.observed, str) else deviation.observed
        if any(text in message for text in texts):
            return "EXPECTED", f"recorded deviation ({deviation.rfc}): {deviation.why}\n{message}"
        return "FAIL", (f"fails differently from the recorded deviation (expected to see "
                        f"{deviation.observed!r}):\n{message}")
    if deviation.intermittent:
        return verdict, message
    return "FAIL", (f"the recorded deviation did not occur ({deviation.rfc}: {deviation.observed!r}); "
                    "if the stack was fixed, remove it from expectations/")


def unknown_cases(table: dict, root: str, collected: set[str] | None = None) -> list[str]:
    """The deviations of `table` that name no case: their file does not exist under `root`, the
    file defines no such function, or (for a file this run collected, `collected` its case ids)
    no collected case matches the id or the pattern."""
    out = []
    for key in table:
        path, _, rest = key.partition("::")
        function = re.split(r"[\[*]", rest, maxsplit=1)[0]
        file = os.path.join(root, path)
        if not rest or not os.path.isfile(file):
            out.append(f"{key} (no file {path})")
            continue
        with open(file, encoding="utf-8") as f:
            if function and not re.search(rf"^\s*def {re.escape(function)}\(", f.read(), re.M):
                out.append(f"{key} (no function {function} in {path})")
                continue
        mine = {c for c in collected or () if c.startswith(f"{path}::")}
        if mine and not any(_matches(key, c) for c in mine):
            out.append(f"{key} (no such case in {path})")
    return out


def _matches(key: str, case: str) -> bool:
    if "*" in key:
        return re.fullmatch(".*".join(re.escape(p) for p in key.split("*")), case) is not None
    return key == case


def for_case(table: dict, case: str) -> dict[str | None, Deviation] | None:
    """The deviations recorded for `case` (a node id without the target): its own, and those of
    every pattern (`*` for any text) it matches."""
    found = {}
    for key, steps in table.items():
        if "*" in key and _matches(key, case):
            found.update(steps)
    found.update(table.get(case, {}))
    return found or None
