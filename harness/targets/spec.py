"""What the harness knows about a target: where its image lives, its timing, what it can do."""
import os
from dataclasses import dataclass, field

from ..peer import Timing

DOCKER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docker")


@dataclass(frozen=True)
class TargetSpec:
    name: str
    description: str
    timing: Timing = Timing()
    # Capabilities a case may require (lab.target.require("so_linger")); absent → UNSUPPORTED.
    capabilities: frozenset = field(default_factory=frozenset)
    # Sysctls are read and written from the host inside the target's namespace (kernel stacks).
    kernel: bool = False
    # How the agent starts inside the image, and on the host for --runtime=netns.
    agent_in_image: tuple = ("python3", "-u", "/agent/agent.py")
    agent_on_host: str = "agent.py"

    @property
    def image_dir(self) -> str:
        return os.path.join(DOCKER_DIR, self.name)

    def host_agent_command(self, python: str) -> list[str]:
        return [python, "-u", os.path.join(self.image_dir, self.agent_on_host)]
