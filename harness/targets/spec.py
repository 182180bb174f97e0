"""What the harness knows about a target: where its image lives, its timing, what it can do."""
import os
from dataclasses import dataclass, field
from typing import Callable

from ..timing import Timing

DOCKER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docker")


@dataclass(frozen=True)
class TargetSpec:
    name: str
    description: str
    timing: Timing = Timing()
    # Capabilities a case may require (lab.target.require("so_linger")); absent → UNSUPPORTED.
    capabilities: frozenset = field(default_factory=frozenset)
    # A kernel stack owns the lab address on eth0; a user-space stack owns it on a TAP bridged to
    # eth0, while the namespace's own kernel holds no address at all.
    kernel: bool = False
    # Where it can run: user-space stacks come as images only.
    runtimes: tuple = ("docker", "netns")
    # The stack's SYN-ACK to the harness's probe SYN (MSS 1460 only): None if it is the stack's
    # own, else why not — guards against another stack answering in its name.
    synack_check: Callable | None = None
    # How the agent starts on the host for --runtime=netns.
    agent_on_host: str = "agent.py"
    # The settings of the target's namespace that change verdicts: recorded in its identity.
    verdict_sysctls: tuple = ()
    # A sandbox the stack runs in whatever the runtime ("runsc": gVisor, harness/sandbox.py;
    # "uml": a user-mode Linux kernel, harness/uml.py).
    sandbox: str | None = None
    # How its frames reach the peer: "veth" (a packet socket on the lab's link) or "bess" (a
    # SEQPACKET socket the target's own process connects to: no kernel on the path).
    wire: str = "veth"
    # The kernel's sysctls are the stack's own, read and set through the agent (not from the
    # host side of a namespace).
    sysctl_via_agent: bool = False
    # The stack's own settings the learner changes (harness/learn/settings.py), set through the
    # agent's sysctl op: (name, value, why, the ACK-delay bound while it is set, or None).
    learning_settings: tuple = ()
    # The agent's hello must report a version that starts so (the kernel under test, not another).
    version_prefix: str = ""
    memory: str = "64M"  # a user-mode kernel's memory
    ifname: str = "eth0"  # the stack's interface on the lab link, as its sysctls name it

    @property
    def image_dir(self) -> str:
        return os.path.join(DOCKER_DIR, self.name)

    def host_agent_command(self, python: str) -> list[str]:
        return [python, "-u", os.path.join(self.image_dir, self.agent_on_host)]


def synack_signature(stack: str, window: int, ttl: int | None = None, df: bool | None = None,
                     options: tuple = (("MSS", 1460),)) -> Callable:
    """A synack_check: the window, options and IP header a stack answers the probe SYN (MSS 1460
    alone) with. Linux would offer a 64240 window, more options, TTL 64 and DF."""

    def check(tcp) -> str | None:
        if tcp.window != window:
            return f"window {tcp.window}, {stack} advertises {window}"
        got = [(name, value) for name, value in tcp.options]
        if got != list(options):
            return f"options {got}, {stack} answers this SYN with {list(options)}"
        ip = tcp.underlayer
        if ip is not None and ttl is not None and ip.ttl != ttl:
            return f"IP TTL {ip.ttl}, {stack} sends {ttl}"
        if ip is not None and df is not None and ("DF" in str(ip.flags)) != df:
            return f"IP DF {'clear' if df else 'set'}, {stack} {'always' if df else 'never'} sets it"
        return None

    return check
