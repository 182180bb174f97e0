"""What a case gets as `lab`: the peer, the target, fresh ports, steps, and the usual openings."""
import time

from .errors import Unsupported
from .segments import Seg, seq_add
from .steps import StepLog


class CaseLab:
    def __init__(self, session, peer, target, steps: StepLog):
        self.session = session
        self.peer = peer
        self.target = target
        self.steps = steps
        peer.on_check = steps.checked
        self.timing = session.spec.timing
        self.notes: dict[str, object] = {}    # measurements
        self.choices: dict[str, object] = {}  # what the stack chose where the RFCs allow several answers
        self.doc = ""  # the case's own description, when one function checks many sentences
        self.started = time.monotonic()
        self.waited_at_start = peer.wire.waited
        self.blocked_at_start = peer.wire.blocked
        self.log_marker = session.instance.log_marker()

    def port(self) -> int:
        """A port the target has not used in this run."""
        return self.session.target_ports.next()

    def note(self, key: str, value) -> None:
        """Record a measurement (shown with the verdict and in the results)."""
        self.notes[key] = value

    def describe(self, doc: str) -> None:
        """Say what this instance of the case checks (its title, then the RFC sentence), where
        the function's docstring speaks for many (the matrix's cells)."""
        self.doc = doc

    def choice(self, key: str, value) -> None:
        """Record which of the answers the RFCs allow the stack gave: its fingerprint."""
        self.choices[key] = value

    def setting(self, name: str) -> str:
        """Read (and record) a sysctl that decides the outcome; "n/a" on targets without sysctls."""
        try:
            return self.target.sysctl(name)
        except Unsupported:
            self.target.settings[name] = "n/a"
            return "n/a"

    def step(self, name: str, requirement: str, level: str = "MUST", gate: bool = False):
        """`with lab.step("active close", "R9293-3.6"):` — the checks in the block are charged to
        that requirement (see harness/steps.py). `gate`: the rest of the case needs this step."""
        return self.steps.step(name, requirement, level, gate)

    def need(self, holds: bool, what: str, *settings: str) -> None:
        """A precondition: when it does not hold (a setting is off, an option was not negotiated)
        the case is UNSUPPORTED, not a deviation; the settings that decide it are recorded."""
        if holds:
            return
        seen = [f"{name} = {self.setting(name)}" for name in settings]
        raise Unsupported(f"precondition not met: {what}" + (f" ({'; '.join(seen)})" if seen else ""))

    def waited(self) -> float:
        return self.peer.wire.waited - self.waited_at_start

    def blocked(self) -> float:
        return self.peer.wire.blocked - self.blocked_at_start

    # -- the usual openings ---------------------------------------------------------------
    def passive_open(self, **conn_kw):
        """Target listens, peer connects (handshake checked), target accepts: (conn, listener, sock)."""
        with self.step("passive open", "R9293-3.10.7.2/third", gate=True):
            port = self.port()
            listener = self.target.listen(port)
            conn = self.peer.connect(port, **conn_kw)
            sock = self.target.accept(listener)
        return conn, listener, sock

    def active_open(self, bind_port: int | None = None, **conn_kw):
        """Target connects, peer answers SYN-ACK and checks the final ACK: (conn, sock)."""
        with self.step("active open", "R9293-3.10.7.3/fourth", gate=True):
            port = self.peer.listen_port()
            args = {"port": port, "timeout": 3.0}
            if bind_port is not None:
                self.target.require("bind_port")
                args.update(bind_port=bind_port, bind_addr=self.target.ip, reuseaddr=True)
            job = self.target.start("connect", **args)
            conn = self.peer.expect_syn(port, **conn_kw)
            conn.syn(ack=True)
            conn.expect(Seg("A", seq=conn.rcv_nxt, ack=seq_add(conn.iss, 1), length=0,
                            note="final ACK of the handshake"))
            sock = self.target.adopt(job.wait(timeout=3.0)["sock"])
        return conn, sock

    def target_fin(self, conn, sock, shutdown: bool = False):
        """The target's user closes (or shuts down its sending side): a FIN at SND.NXT, ACKing all
        the peer sent (§3.6 case 1: "a FIN segment can be constructed"). Returns the FIN."""
        with self.step("the target's FIN", "R9293-3.6", gate=True):
            if shutdown:
                self.target.shutdown(sock, "wr")
            else:
                self.target.close(sock)
            return conn.expect(Seg("FA", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="FIN at SND.NXT"))

    def data_acked(self, conn, data: bytes, note: str = "ACK of the peer's data") -> None:
        """The peer sends `data` at SND.NXT; the target ACKs exactly it (§3.10.7.4 seventh:
        <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>)."""
        with self.step("data acknowledged", "R9293-3.10.7.4/seventh/established", gate=True):
            conn.send(data)
            conn.expect(Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note=note))
