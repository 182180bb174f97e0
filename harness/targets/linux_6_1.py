"""Linux 6.1 (Debian 12's kernel line) as a user-mode Linux process: Debian's user-mode-linux,
linux.uml 6.1.176, the Linux agent run by the host's python3 inside the guest (harness/uml.py).

Next to `linux` (the host's kernel) it shows what changed between kernel lines, case by case.
Its frames travel over a SEQPACKET socket (UML's vector driver, transport=bess), so no host
kernel is on the path, and the stack check asks the guest's own kernel version.
"""
from ..timing import Timing
from .linux import TARGET as HOST_LINUX
from .spec import TargetSpec

TARGET = TargetSpec(
    name="linux-6.1",
    description="Linux 6.1.176 as a user-mode kernel (Debian's user-mode-linux), its TCP stack",
    # A guest kernel's timers are Linux's; the boot (about 1.5 s, a python3 agent another 1.5 s).
    timing=Timing(reply=1.0, silence=0.3, retransmit=3.5, startup=20.0),
    capabilities=HOST_LINUX.capabilities,
    kernel=True,
    sandbox="uml",
    wire="bess",
    sysctl_via_agent=True,
    version_prefix="6.1.",
    memory="96M",
    ifname="vec0",
    verdict_sysctls=HOST_LINUX.verdict_sysctls,
)
