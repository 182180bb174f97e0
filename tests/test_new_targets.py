"""gVisor's netstack and Linux 6.1 as a user-mode kernel: the answers are theirs, their wire and
their settings work as the host kernel's do, and they leave nothing behind."""
import json
import os
import shutil

import jsonschema
import pytest
from suite import ROOT, run_cases

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="building labs needs root")
needs_uml = pytest.mark.skipif(shutil.which("linux.uml") is None, reason="needs user-mode-linux")
needs_runsc = pytest.mark.skipif(shutil.which("runsc") is None, reason="needs runsc (gVisor)")

OPEN_AND_SET = """
@requirement("R9293-3.10.7.2/third", "MUST")
def test_open_with_a_setting(lab):
    assert lab.target.sysctl("net.ipv4.tcp_fin_timeout", "17") == "17"
    lab.passive_open()

@requirement("R9293-3.10.7.2/third", "MUST")
def test_setting_put_back(lab):
    lab.note("fin_timeout", lab.target.sysctl("net.ipv4.tcp_fin_timeout"))
    lab.passive_open()
"""


@needs_uml
def test_linux_6_1_is_its_own_kernel_on_its_own_wire(tmp_path):
    # --runtime=netns: the target starts in a thread while pytest collects, and must outlive it
    proc, verdicts = run_cases(tmp_path, OPEN_AND_SET, "--target=linux-6.1", "--runtime=netns", "--evidence=all", timeout=120,
                               target="linux-6.1")
    assert {v["verdict"] for v in verdicts.values()} == {"PASS"}, proc.stdout[-3000:]
    # a setting is the guest kernel's own (through its agent), and put back after the case
    assert verdicts["test_setting_put_back"]["notes"]["fin_timeout"] == "60"
    assert "(set by the case; was 60)" in verdicts["test_open_with_a_setting"]["settings"]["net.ipv4.tcp_fin_timeout"]
    # the exchange came over the SEQPACKET wire and looks as on a veth: the handshake, in order
    flags = [s["flags"] for s in verdicts["test_setting_put_back"]["exchange"]["segments"]]
    assert flags[:3] == ["SYN", "SYN,ACK", "ACK"], flags
    evidence = tmp_path / "results" / verdicts["test_setting_put_back"]["evidence"]["pcap"]
    assert evidence.stat().st_size > 24 + 3 * 16
    assert_results_schema(tmp_path, "linux-6.1", "uml")


@needs_runsc
def test_gvisor_answers_from_its_sandbox_with_the_namespace_kernel_silent(tmp_path):
    proc, verdicts = run_cases(tmp_path, """
        import subprocess

        @requirement("R9293-3.10.7.2/third", "MUST")
        def test_open(lab):
            lab.passive_open()
            # runsc took the address over: the namespace's own kernel holds none to answer with
            shown = subprocess.run(["nsenter", f"--net={lab.session.instance.netns}", "ip", "-4", "addr"],
                                   capture_output=True, text=True).stdout
            lab.note("lab_address_in_namespace", lab.target.ip in shown)
        """, "--target=gvisor", "--runtime=netns", "-n", "2", timeout=120, target="gvisor")  # started while collecting
    record = verdicts["test_open"]
    assert record["verdict"] == "PASS", proc.stdout[-3000:]
    assert record["notes"]["lab_address_in_namespace"] == "False"
    assert_results_schema(tmp_path, "gvisor", "runsc")


def assert_results_schema(tmp_path, target: str, sandbox: str) -> None:
    """The run's results.json is one the schema (and so synfin-report) takes, with the sandbox
    the stack ran in as its runtime."""
    doc = json.loads((tmp_path / "results" / "results.json").read_text())
    with open(os.path.join(ROOT, "harness", "schema", "results-1.schema.json")) as f:
        jsonschema.validate(doc, json.load(f))
    assert doc["targets"][target]["runtime"] == sandbox
