"""TIME-WAIT as the active closer (RFC 9293 §3.6, Figure 12): the drivers live in harness/states.py."""
from harness.states import close_first, into_time_wait  # noqa: F401  (the cases' names for them)


def tsval(tcp) -> int | None:
    """The TSval of a segment's Timestamp option, or None."""
    for name, value in tcp.options:
        if name == "Timestamp":
            return value[0]
    return None
