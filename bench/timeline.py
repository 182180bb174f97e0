"""A pytest plugin for the benchmarks: when the run's milestones happen, written as JSON.

    SYNFIN_TIMELINE=/tmp/t.json python -m pytest -p timeline ... (with bench/ on PYTHONPATH)

Times are time.time() (the benchmark compares them with its own clock around the process):
`imported` (this plugin, loaded with the first plugins), `configured`, `collected`, then per case
`start` (before its setup, fixtures and a target start included), `verdict` (its call phase
reported) and `end` (after its teardown: the last one's includes closing the targets), and
`unconfigured` (pytest's last hook). Also the process's peak resident memory (`max_rss`, KiB)
and, as each target's container is closed, its cgroup's peak memory (`containers`, bytes; cgroup
v1 counts the page cache of the files it read too). Under pytest-xdist each worker writes its
own file (`<path>.<worker>`).
"""
import json
import os
import resource
import time

import pytest

MARKS: dict = {"imported": time.time(), "cases": [], "containers": {}}
CGROUP_PEAK = ("/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.peak",  # v2, systemd driver
               "/sys/fs/cgroup/docker/{id}/memory.peak",                     # v2, cgroupfs driver
               "/sys/fs/cgroup/memory/docker/{id}/memory.max_usage_in_bytes")  # v1


def _container_peak(container_id: str) -> int | None:
    for pattern in CGROUP_PEAK:
        try:
            with open(pattern.format(id=container_id)) as f:
                return int(f.read())
        except OSError:
            continue
    return None


def pytest_configure(config):
    MARKS["configured"] = time.time()
    from harness.session import Session

    close = Session.close

    def close_and_measure(self, *args, **kwargs):
        container = getattr(self.instance, "container", None)
        if container is not None:
            MARKS["containers"][self.spec.name] = _container_peak(container.id)
        close(self, *args, **kwargs)

    Session.close = close_and_measure


def pytest_collection_finish(session):
    MARKS["collected"] = time.time()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    start = time.time()
    try:
        return (yield)
    finally:
        MARKS["cases"].append({"nodeid": item.nodeid, "start": start, "verdict": VERDICT.pop(item.nodeid, None),
                               "end": time.time()})


VERDICT: dict = {}


def pytest_runtest_logreport(report):
    if report.when == "call":
        VERDICT[report.nodeid] = time.time()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    MARKS["unconfigured"] = time.time()
    MARKS["max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    path = os.environ.get("SYNFIN_TIMELINE")
    if path:
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        with open(f"{path}.{worker}" if worker else path, "w") as f:
            json.dump(MARKS, f)
