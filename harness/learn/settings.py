"""The few settings learning changes on a stack, and the check of what they change.

Each exists to take a timer out of the answers, never to change the state machine: Linux delays
an ACK by up to 200 ms outside quick-ack mode, and answers at most one out-of-window segment per
500 ms per socket, so without them an answer would depend on when a step came. They are named in
the model, put back after learning, and a replay of sampled words with the stack's defaults
(`check`) says which learned transitions depend on them.
"""
import random
from dataclasses import dataclass

from pyroute2 import IPRoute

from .. import netns
from ..agent import OpError
from ..errors import Unsupported


@dataclass
class Setting:
    name: str
    value: str
    why: str
    default: str | None = None
    via_agent: bool = False  # the stack's own setting, set through its agent's sysctl op
    ack_delay: float | None = None  # the ACK-delay bound the learner waits while it is set

    def record(self) -> dict:
        return {"name": self.name, "value": self.value, "default": self.default, "why": self.why}


INVALID_RATELIMIT = "net.ipv4.tcp_invalid_ratelimit"
QUICKACK = "route quickack"


FAST_TIMER = "fast timer"


def for_target(session) -> list[Setting]:
    spec = session.spec
    if "tick" in spec.capabilities:
        return [Setting(FAST_TIMER, "run after a step that may owe an ACK",
                        f"the stack sends delayed ACKs on its own timer tick, up to {spec.timing.ack_delay * 1000:.0f} ms "
                        "later; the learner runs the timer itself instead of waiting for the tick")]
    if spec.learning_settings:
        return [Setting(name, value, why, via_agent=True, ack_delay=delay)
                for name, value, why, delay in spec.learning_settings]
    if not spec.kernel or spec.sandbox == "runsc":  # gVisor's netstack takes neither setting
        return []
    return [
        Setting(INVALID_RATELIMIT, "0", "Linux answers at most one out-of-window or challenge segment per "
                "500 ms per socket; a second one inside that time would meet silence"),
        Setting(QUICKACK, "1", "Linux delays an ACK by up to 200 ms outside quick-ack mode; with quickack "
                "on the lab route it ACKs at once"),
    ]


class Applied:
    """Settings applied to a running target; `restore()` puts the defaults back."""

    def __init__(self, system, settings: list[Setting]):
        self.system, self.session, self.target, self.settings = system, system.session, system.target, settings

    def apply(self) -> None:
        for s in self.settings:
            s.default = self._set(s, s.value)
            if s.ack_delay is not None:
                self.system.ack_delay = s.ack_delay

    def restore(self) -> None:
        for s in self.settings:
            if s.default is not None:
                self._set(s, s.default)
        self.system.ack_delay = self.session.spec.timing.ack_delay

    def _set(self, setting: Setting, value: str) -> str:
        if setting.via_agent:
            agent = self.session.instance.agent
            was = agent.call("sysctl", name=setting.name)["value"]
            agent.call("sysctl", name=setting.name, value=value)
            return was
        return self._set_named(setting.name, value)

    def _set_named(self, name: str, value: str) -> str:
        if name == QUICKACK:
            return self._quickack(int(value))
        if name == FAST_TIMER:
            was = "every tick" if not self.system.tick else value
            self.system.tick = value != "every tick"
            return was
        was = self.target._sysctl(name)
        self.target._sysctl(name, value)
        return was

    def _quickack(self, on: int) -> str:
        spec, instance = self.session.spec, self.session.instance
        if spec.sysctl_via_agent:  # a kernel of its own: only its agent reaches its routes
            try:
                instance.agent.call("route", dev=spec.ifname, quickack=on)
            except (OpError, Unsupported) as exc:
                raise Unsupported(f"target {spec.name} cannot set quickack on its routes: {exc}") from None
            return "0"
        return netns.run_in(instance.netns, _route_quickack, on)


def _route_quickack(on: int) -> str:
    """Set RTAX_QUICKACK on every IPv4 route of the namespace's lab interface; the old value."""
    was = "0"
    with IPRoute() as ip:
        for route in ip.get_routes(family=2, table=254):
            dst = route.get_attr("RTA_DST")
            oif = route.get_attr("RTA_OIF")
            if dst is None or oif is None:
                continue
            metrics = route.get_attr("RTA_METRICS")
            if metrics is not None and metrics.get_attr("RTAX_QUICKACK"):
                was = "1"
            ip.route("replace", dst=dst, dst_len=route["dst_len"], oif=oif, scope=route["scope"],
                     proto=route["proto"], prefsrc=route.get_attr("RTA_PREFSRC"),
                     metrics={"quickack": on})
    return was


def sample_words(model, n: int, seed: int = 0) -> list[tuple]:
    """Words that cover the model's transitions: each state's access sequence with each input,
    then two random inputs after it, as far as `n` allows."""
    rng = random.Random(seed)
    access = model.access()
    words = [access[s] + (a,) + tuple(rng.choice(model.alphabet) for _ in range(2))
             for s in access for a in model.alphabet]
    rng.shuffle(words)
    return words[:n]


def check(model, run, n: int = 200, seed: int = 0) -> dict:
    """Replay sampled words with the stack's defaults: the transitions whose output differs
    depend on the settings learning changed. `run(words)` is the live system."""
    words = sample_words(model, n, seed)
    live = run(words)
    dependent, transitions = [], set()
    for word, out in zip(words, live):
        predicted = model.run(word)
        if out != predicted:
            i = next(k for k, (a, b) in enumerate(zip(out, predicted)) if a != b)
            state = model.state_after(word[:i])
            if (state, word[i]) in transitions:
                continue
            transitions.add((state, word[i]))
            dependent.append({"word": list(word[:i + 1]), "learned": predicted[:i + 1], "default": out[:i + 1],
                              "state": state, "input": word[i]})
    return {"sampled": len(words), "words": len(words), "dependent": dependent,
            "transitions": sorted(f"{s} {a}" for s, a in transitions)}
