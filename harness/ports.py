"""Fresh ports for every connection, so no case meets another case's TIME-WAIT."""
import random


class PortPool:
    """Hands out ports from a random start in [lo, hi), wrapping; one pool per worker."""

    def __init__(self, lo: int = 20000, hi: int = 60000, start: int | None = None):
        self.lo, self.hi = lo, hi
        self._next = random.randrange(lo, hi) if start is None else start

    def next(self) -> int:
        port = self._next
        self._next = self.lo + (self._next + 1 - self.lo) % (self.hi - self.lo)
        return port
