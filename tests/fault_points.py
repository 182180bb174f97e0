"""A pytest plugin for the fault-injection tests (`-p tests.fault_points`): it holds a run at a
named moment so that a test can signal or kill it exactly there, not at a guessed delay.

SYNFIN_PAUSE_AT=<point> and SYNFIN_PAUSE_FILE=<path>: when the run reaches the point it writes
its pid into the file and sleeps SYNFIN_PAUSE_S seconds (default 10), then goes on. Points:
  collection       while pytest collects (before any target is started by a case)
  container-start  the moment the engine is asked to create the target's container
  case             the start of a case's body
  teardown         the lab's teardown, as the target is reset after the case
"""
import os
import time

import pytest

POINT = os.environ.get("SYNFIN_PAUSE_AT", "")
FILE = os.environ.get("SYNFIN_PAUSE_FILE", "")


def pause(point: str) -> None:
    if point != POINT or not FILE:
        return
    with open(FILE + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(FILE + ".tmp", FILE)
    time.sleep(float(os.environ.get("SYNFIN_PAUSE_S", "10")))


def pytest_configure(config):
    if POINT == "container-start":
        from docker.models.containers import ContainerCollection
        run = ContainerCollection.run

        def paused_run(self, *args, **kwargs):
            pause("container-start")
            return run(self, *args, **kwargs)

        ContainerCollection.run = paused_run
    if POINT == "teardown":
        from harness.target import Target
        reset = Target.reset

        def paused_reset(self):
            pause("teardown")
            return reset(self)

        Target.reset = paused_reset


def pytest_collection_modifyitems(items):
    pause("collection")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    pause("case")
