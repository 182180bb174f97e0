"""How a target's death is told (harness/runtime.py): a process still ending when the case ran
into its death (its link closed, its channel broke) is given a moment to end."""
import subprocess
import sys
import time
from types import SimpleNamespace

from harness.runtime import ProcessInstance


def ending(after: float) -> ProcessInstance:
    """A target process that ends `after` seconds from now, its agent channel still open."""
    instance = ProcessInstance()
    instance.proc = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({after})"])
    instance.agent = SimpleNamespace(healthy=True)
    return instance


def test_a_target_still_ending_when_its_link_closed_is_dead_with_grace():
    instance = ending(0.3)
    assert instance.death() is None  # without grace: it still runs
    assert instance.death(grace=True) == "exited with code 0"
    assert not instance.alive()


def test_grace_is_bounded_for_a_target_that_does_not_end():
    instance = ending(30)
    try:
        began = time.monotonic()
        assert instance.death(grace=True) is None
        assert time.monotonic() - began < 20  # a moment, not a wait for the end
    finally:
        instance.proc.kill()
        instance.proc.wait()
