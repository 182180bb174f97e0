"""What a case gets as `lab`: the peer, the target, fresh ports, and the usual openings."""
import time

from .segments import Seg, seq_add


class CaseLab:
    def __init__(self, session, peer, target):
        self.session = session
        self.peer = peer
        self.target = target
        self.timing = session.spec.timing
        self.notes: dict[str, object] = {}
        self.started = time.monotonic()
        self.waited_at_start = peer.wire.waited
        self.blocked_at_start = peer.wire.blocked
        self.log_marker = session.instance.log_marker()

    def port(self) -> int:
        """A port the target has not used in this run."""
        return self.session.target_ports.next()

    def note(self, key: str, value) -> None:
        """Record what the stack chose (shown with INFO verdicts and in the results)."""
        self.notes[key] = value

    def waited(self) -> float:
        return self.peer.wire.waited - self.waited_at_start

    def blocked(self) -> float:
        return self.peer.wire.blocked - self.blocked_at_start

    # -- the usual openings ---------------------------------------------------------------
    def passive_open(self, **conn_kw):
        """Target listens, peer connects (handshake checked), target accepts: (conn, listener, sock)."""
        port = self.port()
        listener = self.target.listen(port)
        conn = self.peer.connect(port, **conn_kw)
        sock = self.target.accept(listener)
        return conn, listener, sock

    def active_open(self, bind_port: int | None = None, **conn_kw):
        """Target connects, peer answers SYN-ACK and checks the final ACK: (conn, sock)."""
        port = self.peer.listen_port()
        args = {"port": port, "timeout": 3.0}
        if bind_port is not None:
            self.target.require("bind_port")
            args.update(bind_port=bind_port, bind_addr=self.target.ip, reuseaddr=True)
        job = self.target.start("connect", **args)
        conn = self.peer.expect_syn(port, **conn_kw)
        conn.syn(ack=True)
        conn.expect(Seg("A", seq=conn.rcv_nxt, ack=seq_add(conn.iss, 1), note="final ACK of the handshake"))
        sock = self.target.adopt(job.wait(timeout=3.0)["sock"])
        return conn, sock
