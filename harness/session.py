"""One worker's target and lab, started once per run and restarted if the target dies."""
import itertools
import os
import threading
import time

from . import identity
from . import lab as lab_mod
from . import runtime, targets
from .errors import HarnessError, TargetError
from .notices import notice
from .peer import Mismatch, Peer, Wire
from .segments import Seg, seq_add
from .ports import PortPool
from .target import Target


PROBE_SYNS = 3
# A target that died is started again; a restart that fails is tried again after these pauses (s).
RESTART_BACKOFF = (0.5, 2.0)


def verify_stack(spec, hello, peer: Peer, target: Target, port: int) -> None:
    """The answers must come from the stack under test: its agent says so, and its SYN-ACK to a
    probe carries the stack's own signature (not that of a kernel answering in its name)."""
    if hello.get("stack") != spec.name:
        raise TargetError(f"the agent reports stack {hello.get('stack')!r}, not {spec.name!r}")
    if not str(hello.get("version", "")).startswith(spec.version_prefix):
        raise TargetError(f"the agent reports version {hello.get('version')!r}, not {spec.version_prefix}*: "
                          "another kernel answers in its name")
    listener = target.listen(port)
    conn = peer.connection(port)
    # A stack just up may lose its very first segment (seen with lwIP about once in 20 starts):
    # the SYN is retransmitted, as any peer would, before the start counts as failed.
    for attempt in range(1, PROBE_SYNS + 1):
        conn.syn()
        try:
            synack = conn.expect(Seg("SA", ack=seq_add(conn.iss, 1)), within=spec.timing.reply)
            break
        except Mismatch as exc:
            if attempt == PROBE_SYNS:
                raise TargetError(f"target {spec.name} does not answer a SYN on its listener "
                                  f"({PROBE_SYNS} SYNs sent): {str(exc).splitlines()[0]}") from None
    conn.rst(seq=conn.snd_nxt)
    target.close(listener)
    why = spec.synack_check(synack) if spec.synack_check else None
    if why:
        raise TargetError(f"the SYN-ACK is not {spec.name}'s own ({why}): another stack answers in its name")


# Every lab of a process gets new link names (a restarted target too): scapy caches the
# name → ifindex of interfaces it has opened, so a reused name would point at a deleted link.
_GENERATION = itertools.count()


def worker_index() -> int:
    """pytest-xdist's gwN, or 0: each worker gets its own lab and address block."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name[2:]) if name[2:].isdigit() else 0


def choose_runtime(requested: str, notice=notice):
    """The runtime to use and a Docker client when it is Docker."""
    if requested == "netns":
        return "netns", None
    client, why = runtime.docker_client()
    if client is not None:
        return "docker", client
    if requested == "docker":
        raise TargetError(f"no Docker engine answers ({why}); use --runtime=netns to run without Docker")
    notice(f"no Docker engine answers ({why}); using --runtime=netns")  # reached only outside pytest
    return "netns", None


class Background:
    """fn(*args) in a thread; result() waits for it and returns its value or raises its error."""

    def __init__(self, fn, *args):
        self._out = {}
        self._thread = threading.Thread(target=self._run, args=(fn, args), name=f"synfin:{fn.__name__}", daemon=True)
        self._thread.start()

    def _run(self, fn, args) -> None:
        try:
            self._out["value"] = fn(*args)
        except BaseException as exc:
            self._out["error"] = exc

    def result(self):
        self._thread.join()
        if "error" in self._out:
            raise self._out["error"]
        return self._out["value"]

    def discard(self, undo) -> None:
        """No longer wanted: wait for fn to end (a second interrupt does not stop the wait) and
        undo(value) what it made."""
        while self._thread.is_alive():
            try:
                self._thread.join()
            except KeyboardInterrupt:
                pass
        if "value" in self._out:
            undo(self._out.pop("value"))


class Session:
    """One target of one worker. `slot` numbers the worker's targets: each gets its own lab,
    link names and address block (slot = worker × number of targets + the target's place)."""

    def __init__(self, target_name: str, requested_runtime: str, notice=notice, slot: int | None = None,
                 sweep: bool = True):
        self.notice = notice
        self.spec = targets.get(target_name)
        self.runtime, self.client = choose_runtime(requested_runtime, notice)
        if self.spec.sandbox:  # it runs in its sandbox whatever the runtime (the engine still sweeps)
            self.runtime = self.spec.sandbox
        self.index = worker_index() if slot is None else slot
        self.identity: dict | None = None  # set once the stack is up (harness/identity.py)
        self.peer_ports = PortPool()
        self.target_ports = PortPool()
        self.instance = self.lab = self.wire = None
        self._failure: HarnessError | None = None
        self._started_once = False
        removed = runtime.sweep(self.client) if sweep else []
        if removed:
            self.notice(f"removed {len(removed)} leftovers of an earlier killed run: "
                        f"{', '.join(removed[:5])}" + (" ..." if len(removed) > 5 else ""))

    def ensure(self) -> None:
        """Start the target and its lab, or restart them if the target died. A failed first start
        is remembered, so the cases that follow report it at once instead of retrying a broken
        build; a failed restart is retried with backoff, and costs the case that needed it only."""
        if self._failure is not None:
            raise self._failure
        if self.instance is not None and self.instance.alive():
            return
        if not self._started_once:
            try:
                self._start()
            except HarnessError as exc:
                self._failure = exc
                raise
            self._started_once = True
            return
        if self.instance is not None:
            self.notice(f"target {self.spec.name} died: {self.instance.death() or 'its agent hung up'}; "
                        "restarting it")
            self.close()
        began = time.monotonic()
        for attempt in range(1, len(RESTART_BACKOFF) + 2):
            try:
                return self._start()
            except HarnessError as exc:
                why = str(exc).splitlines()[0]
                if attempt > len(RESTART_BACKOFF):
                    raise TargetError(f"target {self.spec.name} could not be restarted ({attempt} attempts in "
                                      f"{time.monotonic() - began:.1f} s): {why}") from exc
                delay = RESTART_BACKOFF[attempt - 1]
                self.notice(f"restart {attempt} of target {self.spec.name} failed ({why}); "
                            f"trying again in {delay:g} s")
                time.sleep(delay)

    def _start(self) -> None:
        try:
            label = f"{self.spec.name}-{self.index}"
            env = lab_mod.Addressing(self.index).stack_env()
            # The container starts (most of it Docker's work, in its own processes) while the
            # peer's namespace is made here.
            starting = Background(runtime.start, self.spec, self.runtime, label, self.notice, self.client, env)
            try:
                self.lab = lab_mod.Lab(self.index + 100 * next(_GENERATION), block=self.index).build()
                self.instance = starting.result()
            except BaseException:
                # Interrupted (SIGINT, SIGTERM) or failed while the container starts: what the
                # start thread still makes is stopped once it has made it.
                starting.discard(lambda instance: instance.stop())
                raise
            if self.spec.wire == "bess":  # the guest's frames come on a socket of its own: no link
                self.instance.launch(self.lab.addr.target_mac, self.lab.addr.target_ip)
                self.wire = Wire(self.lab, link=self.instance.link)
                hello = self.instance.agent.call("hello", timeout=self.spec.timing.startup)
            else:
                self.lab.plug_target(self.instance.netns, kernel=self.spec.kernel)
                self.instance.launch()
                self.wire = Wire(self.lab)
                # hello comes after the plumbing: a user-space stack attaches to its TAP on it.
                hello = self.instance.agent.call("hello", timeout=self.spec.timing.startup)
                self.lab.carrier_up(self.instance.netns, kernel=self.spec.kernel)
            verify_stack(self.spec, hello, Peer(self.wire, self.spec.timing, self.peer_ports),
                         Target(self.spec, self.instance, self.lab.addr), self.target_ports.next())
            self.identity = identity.target(self.spec, self.runtime, hello, self.instance)
        except Exception as exc:
            failure = exc if isinstance(exc, HarnessError) else TargetError(
                f"could not start target {self.spec.name}: {type(exc).__name__}: {exc}")
            self.identity = identity.target(self.spec, self.runtime, None, error=str(failure).splitlines()[0])
            self.close()
            raise failure from exc
        except BaseException:
            self.close()
            raise

    def new_case(self) -> tuple[Peer, Target]:
        self.ensure()
        self.wire.reset_queues()
        self.wire.trace.clear()
        peer = Peer(self.wire, self.spec.timing, self.peer_ports)
        return peer, Target(self.spec, self.instance, self.lab.addr)

    def close(self, wait: bool = True) -> None:
        """Stop the target and remove its lab. `wait=False` (the run's end): in a thread, while
        the run writes its results; wait_for_closes() joins it before the process exits."""
        parts = [p for p in (self.wire, self.lab, self.instance) if p is not None]
        self.instance = self.lab = self.wire = None
        if wait:
            self._close(parts)
        elif parts:
            _CLOSING.append(Background(self._close, parts))

    def _close(self, parts) -> None:
        for part in parts:
            try:
                part.stop() if isinstance(part, runtime.Instance) else part.close()
            except Exception as exc:
                self.notice(f"cleanup: {exc}")


_CLOSING: list[Background] = []


def wait_for_closes() -> None:
    """Join the closes begun with Session.close(wait=False)."""
    while _CLOSING:
        _CLOSING.pop().result()
