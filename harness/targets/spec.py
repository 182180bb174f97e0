"""What the harness knows about a target: where its image lives, its timing, what it can do."""
import os
from dataclasses import dataclass, field
from typing import Callable

from ..peer import Timing

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

    @property
    def image_dir(self) -> str:
        return os.path.join(DOCKER_DIR, self.name)

    def host_agent_command(self, python: str) -> list[str]:
        return [python, "-u", os.path.join(self.image_dir, self.agent_on_host)]
