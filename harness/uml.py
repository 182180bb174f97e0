"""A Linux kernel other than the host's, as a user-mode Linux process (Debian's user-mode-linux).

The guest's root is the host's file system, read only (hostfs): its init (docker/linux-6.1/init)
runs the Linux agent with the host's python3 on ttyS0, which is the UML process's stdin and
stdout. Its network interface vec0 is a vector device with transport=bess: UML connects to an
AF_UNIX SOCK_SEQPACKET socket the harness listens on, one bare Ethernet frame per message. So
no host kernel is on the path: the peer reads and writes the guest's frames on that socket (the
lab's wire), and the UML process itself runs in a network namespace of its own, empty.
"""
import os
import shutil
import socket
import subprocess
import threading
import time

from . import lab as lab_mod
from .agent import AgentClient
from .cleanup import REGISTRY, owner_prefix
from .errors import TargetError
from .runtime import ProcessInstance
from .sandbox import die_with, end
from .targets.spec import DOCKER_DIR

UML = "linux.uml"
# The guest's serial input buffer holds 4095 bytes; more, unread, is lost: 1 KiB per 20 ms.
SERIAL_PACE = (1024, 0.02)


def available() -> str | None:
    if shutil.which(UML) is None:
        return "linux.uml is not installed (Debian's user-mode-linux package: bin/setup installs it)"
    return None




class UmlInstance(ProcessInstance):
    """Booted by launch(), once the lab exists; `link` is then the guest's frame socket."""

    def __init__(self, spec, label: str, log, env: dict):
        why = available()
        if why:
            raise TargetError(f"target {spec.name}: {why}")
        self.spec = spec
        self.env = env
        self.name = f"{owner_prefix()}-{label}"
        self.netns, self._netns_undo = lab_mod.create_netns(f"{owner_prefix()}-t{label.rsplit('-', 1)[-1]}")
        self.rundir = lab_mod.run_dir(label)
        self.log_path = os.path.join(self.rundir, "agent.log")
        open(self.log_path, "ab").close()
        self._console = open(os.path.join(self.rundir, "kernel.log"), "ab")
        self.proc = self.agent = self.link = None
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._bess = os.path.join(self.rundir, "bess.sock")
        if os.path.exists(self._bess):  # a restarted target's run directory is its predecessor's
            os.unlink(self._bess)
        self._listener.bind(self._bess)
        self._listener.listen(1)
        self._undo = REGISTRY.add(f"uml {self.name}", self._kill)

    def launch(self, mac: str, ip: str) -> None:
        cmd = [UML, f"mem={self.spec.memory}", f"umid={self.name}", f"uml_dir={self.rundir}",
               "con=null", "ssl=null", "ssl0=fd:0,fd:1", "quiet",
               "root=/dev/root", "rootfstype=hostfs", "rootflags=/", "ro",
               f"init={os.path.join(DOCKER_DIR, self.spec.name, 'init')}",
               f"vec0:transport=bess,dst={self._bess},mac={mac}",
               f"SYNFIN_IP={ip}", f"SYNFIN_RUNDIR={self.rundir}", f"SYNFIN_STACK={self.spec.name}",
               f"SYNFIN_AGENT={os.path.join(DOCKER_DIR, 'linux', 'agent.py')}"]
        path = self.netns
        main = threading.current_thread() is threading.main_thread()
        from . import netns

        def child() -> None:
            netns.enter(path)
            die_with(main)

        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._console,
                                     preexec_fn=child, close_fds=True)
        deadline = time.monotonic() + self.spec.timing.startup
        self._listener.settimeout(self.spec.timing.startup)
        try:
            self.link, _ = self._listener.accept()  # the kernel's vector driver, early in the boot
        except socket.timeout:
            raise TargetError(f"target {self.spec.name}: the guest's vec0 never connected to {self._bess}:\n"
                              f"{self.kernel_log()}") from None
        # The agent logs "ready" once init has made ttyS0 raw: a request sent sooner would echo.
        while "ready" not in self.log_tail(5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise TargetError(f"target {self.spec.name}: the guest's agent did not start "
                                  f"({self.death() or 'no ready line'}):\n{self.kernel_log()}")
            time.sleep(0.01)
        self.agent = AgentClient.over_process(self.proc, name=f"{self.spec.name} agent", log_tail=self.log_tail,
                                              paced=SERIAL_PACE)

    def kernel_log(self) -> str:
        with open(os.path.join(self.rundir, "kernel.log"), "rb") as f:
            return b"\n".join(f.read().splitlines()[-20:]).decode(errors="replace")

    def _kill(self) -> None:
        end(self.proc, self.rundir)  # UML is a session leader (it calls setsid), its helpers in its group
        for sock in (self.link, self._listener):
            if sock is not None:
                sock.close()
        if os.path.exists(self._bess):
            os.unlink(self._bess)
        self._console.close()
