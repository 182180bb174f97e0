"""What synfin tells on the terminal outside a case's report (a fallback, a restart, a cleanup)."""
import sys


def notice(line: str) -> None:
    print(f"synfin: {line}", file=sys.stderr, flush=True)
