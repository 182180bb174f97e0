"""Bringing a fresh connection into each TCP state (RFC 9293 §3.3.2 Figure 5), through the agent
and the peer, and confirming the state through the agent where the stack can tell.

    reached = states.drive(lab, "FIN-WAIT-1")
    reached.conn          # the peer's side: conn.rcv_nxt is the target's SND.NXT, conn.snd_nxt its RCV.NXT
    reached.snd_una       # the target's SND.UNA (its FIN not yet acknowledged, here)

Drivers: CLOSED (no TCB: a port nobody listens on), LISTEN, SYN-SENT, SYN-RECEIVED (passive),
SYN-RECEIVED-active (simultaneous open), ESTABLISHED, FIN-WAIT-1, FIN-WAIT-2, CLOSE-WAIT, CLOSING,
LAST-ACK, TIME-WAIT. The closing states are reached with shutdown(SHUT_WR), so the application can
still read (RFC 9293 §3.6: a half-closed connection keeps receiving) and a segment with text is
processed by the state's own rules, not by the close-with-unread-data rule; TIME-WAIT is reached by
close(), as Figure 12 shows it. Each way in is a gate step charged to the requirement it relies on:
a stack that cannot get there fails that step, not the cell that wanted the state. A state a target
cannot reach by any conforming path (no simultaneous open) is UNSUPPORTED there, with the reason.
"""
from dataclasses import dataclass

from .errors import Unsupported
from .segments import Seg, describe, seq_add


@dataclass
class Reached:
    state: str            # the driver's name
    conn: object          # harness.peer.Connection
    port: int             # the target's port
    sock: int | None = None
    listener: int | None = None
    job: object = None    # a connect() still pending (SYN-SENT, SYN-RECEIVED-active)
    fin_unacked: bool = False  # the target's FIN is out and the peer has not acknowledged it

    @property
    def tcp_state(self) -> str:
        """The state as RFC 9293 names it (and as the agents report it)."""
        return "SYN-RECEIVED" if self.state.startswith("SYN-RECEIVED") else self.state

    @property
    def snd_una(self) -> int:
        """The target's SND.UNA: the ACK a segment carries to acknowledge nothing new."""
        if self.conn.rcv_nxt is None:
            return self.conn.rcv_nxt
        return seq_add(self.conn.rcv_nxt, -1) if self.fin_unacked else self.conn.rcv_nxt

    @property
    def passive(self) -> bool:
        return self.listener is not None


def confirm(lab, reached: Reached) -> None:
    """The stack reports the state the driver brought the connection into (where it can tell)."""
    if "conns" not in lab.target.spec.capabilities:
        return
    seen = lab.target.conn_state(reached.port, reached.conn.sport)
    assert seen == reached.tcp_state, f"the target reports {seen}, not {reached.tcp_state}"


def closed(lab) -> Reached:
    """No TCB: a port nothing listens on (§3.10.7.1)."""
    port = lab.port()
    return Reached("CLOSED", lab.peer.connection(port), port)


def listen(lab) -> Reached:
    port = lab.port()
    listener = lab.target.listen(port)
    return Reached("LISTEN", lab.peer.connection(port), port, listener=listener)


def syn_sent(lab) -> Reached:
    """The target connects; the peer takes its SYN and does not answer (§3.10.4 OPEN)."""
    with lab.step("into SYN-SENT", "R9293-3.10.7.3/fourth", gate=True):
        port = lab.peer.listen_port()
        job = lab.target.start("connect", port=port, timeout=3.0)
        conn = lab.peer.expect_syn(port)
        reached = Reached("SYN-SENT", conn, conn.dport, job=job)
        confirm(lab, reached)
    return reached


def syn_received(lab) -> Reached:
    """Passive: the peer's SYN is answered SYN,ACK and the handshake's ACK is withheld."""
    with lab.step("into SYN-RECEIVED", "R9293-3.10.7.2/third", gate=True):
        reached = listen(lab)
        conn = reached.conn
        conn.syn()
        conn.expect(Seg("SA", ack=seq_add(conn.iss, 1), note="SYN,ACK <SEQ=ISS><ACK=RCV.NXT>"))
        reached.state = "SYN-RECEIVED"
        confirm(lab, reached)
    return reached


def syn_received_active(lab) -> Reached:
    """Simultaneous open (§3.5 Figure 7): the target's SYN crosses the peer's SYN, which the target
    answers <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>. A stack that does not answer cannot reach this
    state at all (MUST-10 is charged in test_cell[SYN-SENT-SYN])."""
    reached = syn_sent(lab)
    conn = reached.conn
    with lab.step("into SYN-RECEIVED by simultaneous open", "MUST-10", gate=True):
        conn.syn()
        got = conn.next_segment()
        wanted = Seg("SA", seq=conn.irs, ack=seq_add(conn.iss, 1), note="SYN,ACK of the crossing SYN")
        if got is None or not wanted.matches(got):
            seen = describe(got, conn.view, True) if got is not None else "nothing"
            raise Unsupported(f"{lab.target.name} does not take part in a simultaneous open (its SYN crossed by "
                              f"a SYN got {seen}): SYN-RECEIVED is reached only passively there")
        conn.check(got, wanted)
        reached.state = "SYN-RECEIVED-active"
        confirm(lab, reached)
    return reached


def established(lab, **conn_kw) -> Reached:
    conn, listener, sock = lab.passive_open(**conn_kw)
    return Reached("ESTABLISHED", conn, conn.dport, sock=sock, listener=listener)


def fin_wait_1(lab) -> Reached:
    """ESTABLISHED, then the target's FIN (shutdown(SHUT_WR)), not acknowledged."""
    return _target_fin(lab, established(lab), "FIN-WAIT-1")


def fin_wait_2(lab) -> Reached:
    """FIN-WAIT-1, then the peer acknowledges the target's FIN (§3.10.7.4 fifth, FIN-WAIT-1)."""
    reached = fin_wait_1(lab)
    with lab.step("into FIN-WAIT-2", "R9293-3.6", gate=True):
        reached.conn.ack()
        reached.state, reached.fin_unacked = "FIN-WAIT-2", False
        confirm(lab, reached)
    return reached


def close_wait(lab) -> Reached:
    """ESTABLISHED, then the peer's FIN, which the target acknowledges (§3.6 case 2)."""
    reached = established(lab)
    conn = reached.conn
    with lab.step("into CLOSE-WAIT", "R9293-3.6", gate=True):
        conn.fin()
        conn.expect(Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="ACK of the peer's FIN"))
        reached.state = "CLOSE-WAIT"
        confirm(lab, reached)
    return reached


def last_ack(lab) -> Reached:
    """CLOSE-WAIT, then the target's FIN, not acknowledged."""
    return _target_fin(lab, close_wait(lab), "LAST-ACK")


def _target_fin(lab, reached: Reached, state: str) -> Reached:
    """The target's FIN by shutdown(SHUT_WR), left unacknowledged: `state`."""
    lab.target_fin(reached.conn, reached.sock, shutdown=True)
    reached.state, reached.fin_unacked = state, True
    with lab.step(f"in {state}", "R9293-3.6", gate=True):
        confirm(lab, reached)
    return reached


def closing(lab) -> Reached:
    """Simultaneous close (§3.6 case 3): FIN-WAIT-1, then the peer's FIN that does not acknowledge
    the target's; the target ACKs it and is in CLOSING."""
    reached = fin_wait_1(lab)
    conn = reached.conn
    with lab.step("into CLOSING", "R9293-3.6", gate=True):
        conn.fin(ack=reached.snd_una)
        conn.expect(Seg("A", seq=conn.rcv_nxt, ack=conn.snd_nxt, length=0, note="ACK of the peer's FIN"))
        reached.state = "CLOSING"
        confirm(lab, reached)
    return reached


def close_first(lab, conn, sock):
    """The target closes; the peer ACKs its FIN, then sends its own FIN, which the target ACKs.

    Afterwards conn.rcv_nxt is the target's SND.NXT (its FIN + 1) and conn.snd_nxt the peer's
    (its FIN + 1). Returns the peer's FIN as sent: its TSval is the last one the target saw.
    """
    their_fin = lab.target_fin(conn, sock)
    # §3.10.7.4 eighth, FIN-WAIT-2: "Enter the TIME-WAIT state", after "an acknowledgment for the FIN".
    with lab.step("the peer's FIN is ACKed: TIME-WAIT", "R9293-3.10.7.4/eighth", gate=True):
        conn.ack()
        fin = conn.fin()
        conn.expect(Seg("A", seq=seq_add(their_fin.seq, 1), ack=conn.snd_nxt, length=0,
                        note="ACK of the peer's FIN"))
    return fin


def into_time_wait(lab, **conn_kw):
    """Passive open (the listener stays open), then close_first: (conn, listener, peer's FIN)."""
    conn, listener, sock = lab.passive_open(**conn_kw)
    fin = close_first(lab, conn, sock)
    return conn, listener, fin


def time_wait(lab) -> Reached:
    conn, listener, _ = into_time_wait(lab)
    reached = Reached("TIME-WAIT", conn, conn.dport, listener=listener)
    with lab.step("in TIME-WAIT", "R9293-3.6", gate=True):
        confirm(lab, reached)
    return reached


DRIVERS = {
    "CLOSED": closed, "LISTEN": listen, "SYN-SENT": syn_sent, "SYN-RECEIVED": syn_received,
    "SYN-RECEIVED-active": syn_received_active, "ESTABLISHED": established, "FIN-WAIT-1": fin_wait_1,
    "FIN-WAIT-2": fin_wait_2, "CLOSE-WAIT": close_wait, "CLOSING": closing, "LAST-ACK": last_ack,
    "TIME-WAIT": time_wait,
}


def drive(lab, state: str) -> Reached:
    """A fresh connection in `state` (one of DRIVERS)."""
    return DRIVERS[state](lab)
