"""Small Mealy machines written by hand, as synfin Models, for tests that need no stack.

`machine()` takes a table {state: {input: (output, next state)}}; the first state is the
initial one. The toy is a TCP listener in four states; the variants each differ from it in one
known way, so a test can say exactly which words must tell them apart.
"""
from harness.learn.model import Model

ALPHABET = ["SYN", "ACK", "FIN", "RST"]


def machine(table: dict, alphabet=ALPHABET, target="toy", tcp_states=None, side="server") -> Model:
    transitions = {(s, a): tuple(table[s][a]) for s in table for a in alphabet}
    return Model(list(alphabet), transitions, next(iter(table)), target, side, tcp_states=dict(tcp_states or {}))


def _toy_table() -> dict:
    return {
        "listen": {"SYN": ("SA", "syn_rcvd"), "ACK": ("R", "listen"),
                   "FIN": ("TIMEOUT", "listen"), "RST": ("TIMEOUT", "listen")},
        "syn_rcvd": {"SYN": ("A", "syn_rcvd"), "ACK": ("TIMEOUT", "established"),
                     "FIN": ("TIMEOUT", "syn_rcvd"), "RST": ("TIMEOUT", "listen")},
        "established": {"SYN": ("A", "established"), "ACK": ("TIMEOUT", "established"),
                        "FIN": ("A", "close_wait"), "RST": ("TIMEOUT", "listen")},
        # A repeated FIN is not acknowledged again: what tells CLOSE-WAIT from ESTABLISHED here.
        "close_wait": {"SYN": ("A", "close_wait"), "ACK": ("TIMEOUT", "close_wait"),
                       "FIN": ("TIMEOUT", "close_wait"), "RST": ("TIMEOUT", "listen")},
    }


TCP = {"listen": "LISTEN", "syn_rcvd": "SYN-RECEIVED", "established": "ESTABLISHED", "close_wait": "CLOSE-WAIT"}


def toy(target="toy") -> Model:
    return machine(_toy_table(), target=target, tcp_states=TCP)


def changed(target="changed") -> Model:
    """The toy, but a stray ACK in LISTEN is ignored instead of reset: differs on the word ACK."""
    table = _toy_table()
    table["listen"]["ACK"] = ("TIMEOUT", "listen")
    return machine(table, target=target, tcp_states=TCP)


def extra(target="extra") -> Model:
    """The toy with one more state: the first ACK of the handshake leads to `fresh`, which answers
    a FIN with FIN,ACK (and becomes the toy's ESTABLISHED after one more ACK). Only a word of
    three inputs, SYN ACK FIN, tells it from the toy."""
    table = _toy_table()
    table["syn_rcvd"]["ACK"] = ("TIMEOUT", "fresh")
    table["fresh"] = {"SYN": ("A", "fresh"), "ACK": ("TIMEOUT", "established"),
                      "FIN": ("FA", "close_wait"), "RST": ("TIMEOUT", "listen")}
    return machine(table, target=target, tcp_states={**TCP, "fresh": "ESTABLISHED"})


def renamed(target="renamed") -> Model:
    """The toy with its states given other names, listed in another order."""
    names = {"listen": "q7", "syn_rcvd": "q2", "established": "st-3", "close_wait": "q0"}
    table = _toy_table()
    order = ["listen", "close_wait", "established", "syn_rcvd"]  # the initial state must stay first
    renamed_table = {names[s]: {a: (o, names[t]) for a, (o, t) in table[s].items()} for s in order}
    return machine(renamed_table, target=target, tcp_states={names[s]: v for s, v in TCP.items()})


def relabelled(target="relabelled") -> Model:
    """The toy with every TIMEOUT spelled `timeout`: differs on many pairs at once."""
    table = {s: {a: ("timeout" if o == "TIMEOUT" else o, t) for a, (o, t) in row.items()}
             for s, row in _toy_table().items()}
    return machine(table, target=target, tcp_states=TCP)


class Sim:
    """A Model stepped like a system under learning: reset(), then step(input) -> output."""

    def __init__(self, model: Model):
        self.model, self.state = model, model.initial

    def reset(self):
        self.state = self.model.initial

    def step(self, letter):
        output, self.state = self.model.transitions[(self.state, letter)]
        return output
