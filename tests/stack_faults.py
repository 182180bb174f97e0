"""A pytest plugin that breaks the Linux target on purpose, for the mutation suite.

    SYNFIN_FAULT=drop-fin python -m pytest cases/ -p tests.stack_faults --target=linux

Only the target named by SYNFIN_FAULT_TARGET (default linux) is broken; others in the run are not.

Each fault is applied once per target instance, inside the target's own network namespace (a
netfilter rule on its output, or one of its sysctls), after the harness has checked the stack and
before the first case runs on it. Nothing outside that namespace is touched, and the namespace
goes away with the target.
"""
import os
import shutil
import subprocess

import pytest

from harness import netns

# Linux never puts IP options on these segments, so a TCP segment carries no payload exactly
# when the IP total length is 20 bytes plus the TCP header (data offset x 4).
_PURE_ACK = "\n".join(
    f"        tcp flags & (fin | syn | rst | ack) == ack tcp doff {doff} ip length {20 + 4 * doff} drop"
    for doff in range(5, 16))


def _nft(drop: str) -> str:
    return f"""table inet synfin_fault {{
    chain out {{
        type filter hook output priority 0; policy accept;
{drop}
    }}
}}
"""


FAULTS = {
    # what the fault does: ("nft", ruleset) or ("sysctl", name, value)
    "drop-rst": ("nft", _nft("        tcp flags & rst == rst drop")),
    "drop-fin": ("nft", _nft("        tcp flags & fin == fin drop")),
    "drop-pure-ack": ("nft", _nft(_PURE_ACK)),
    "rfc1337": ("sysctl", "net.ipv4.tcp_rfc1337", "1"),
    "no-timestamps": ("sysctl", "net.ipv4.tcp_timestamps", "0"),
}


def apply(fault: str, path: str) -> None:
    kind, *what = FAULTS[fault]
    if kind == "nft":
        if shutil.which("nft") is None:
            pytest.exit("the nft command is missing (bin/setup installs nftables)", returncode=2)
        proc = subprocess.run(["nsenter", f"--net={path}", "nft", "-f", "-"], input=what[0], text=True,
                              capture_output=True)
        if proc.returncode != 0:
            pytest.exit(f"could not apply {fault} in {path}: {proc.stderr.strip()}", returncode=2)
    else:
        netns.sysctl(path, what[0], what[1])


@pytest.fixture(autouse=True)
def _synfin_stack_fault(request):
    fault = os.environ.get("SYNFIN_FAULT")
    if fault and "lab" in request.fixturenames:
        if fault not in FAULTS:
            pytest.exit(f"SYNFIN_FAULT={fault!r}: known faults are {', '.join(FAULTS)}", returncode=4)
        session = request.getfixturevalue("lab").session
        instance = session.instance
        # In a run of several targets only the broken one changes (SYNFIN_FAULT_TARGET, linux).
        if session.spec.name != os.environ.get("SYNFIN_FAULT_TARGET", "linux"):
            yield
            return
        if getattr(instance, "_synfin_fault", None) != fault:  # a restarted target gets it again
            apply(fault, instance.netns)
            instance._synfin_fault = fault
    yield
