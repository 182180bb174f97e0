"""One run, several targets: ids, labs and address blocks per target, the results' schema, JUnit
properties, the exit codes and the refusals of bad input."""
import ipaddress
import json
import os
import xml.etree.ElementTree as ET

import jsonschema
import pytest
from scapy.layers.inet import IP
from scapy.utils import rdpcap
from suite import ROOT, run_cases

from harness import runtime

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="building labs needs root"),
              pytest.mark.skipif(runtime.docker_client()[0] is None, reason="the lwip target runs in Docker")]

SCHEMA = json.load(open(os.path.join(ROOT, "harness", "schema", "results-1.schema.json")))

CASES = """
import pytest

@requirement("R9293-3.10.7.2/third", "MUST")
def test_open(lab):
    '''The passive open of every target.'''
    port = lab.port()
    listener = lab.target.listen(port)
    lab.peer.connect(port)
    lab.target.accept(listener)

@requirement("R9293-3.10.7.1", "MUST")
@pytest.mark.parametrize("flags", ["R", "RA"], ids=["rst", "rst_ack"])
def test_closed(lab, flags):
    conn = lab.peer.connection(lab.port())
    conn.send_raw("A", seq=1, ack=1)
    conn.expect(Seg("R", seq=1, tolerate="A"), within=1.0)
"""


def document(tmp_path) -> dict:
    with open(tmp_path / "results" / "results.json") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def two_targets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two")
    proc, _ = run_cases(tmp, CASES, "--target=linux,lwip", "-n", "2", f"--junitxml={tmp / 'junit.xml'}",
                        "--evidence=all", timeout=300)
    return tmp, proc, document(tmp)


def test_every_case_runs_once_per_target_with_the_target_in_its_id(two_targets):
    tmp, proc, doc = two_targets
    ids = sorted((r["nodeid"].rsplit("::", 1)[1], r["case"].rsplit("::", 1)[1], r["target"]) for r in doc["results"])
    assert ids == sorted([
        ("test_open[linux]", "test_open", "linux"), ("test_open[lwip]", "test_open", "lwip"),
        ("test_closed[rst-linux]", "test_closed[rst]", "linux"), ("test_closed[rst-lwip]", "test_closed[rst]", "lwip"),
        ("test_closed[rst_ack-linux]", "test_closed[rst_ack]", "linux"),
        ("test_closed[rst_ack-lwip]", "test_closed[rst_ack]", "lwip"),
    ]), proc.stdout + proc.stderr
    assert {r["verdict"] for r in doc["results"]} == {"PASS"}, proc.stdout
    assert proc.returncode == 0
    assert proc.stdout.rstrip().splitlines()[-1].startswith("synfin: exit 0, every result as expected")


def test_each_target_has_its_own_lab_and_address_block_and_sees_only_its_own_segments(two_targets):
    tmp, proc, doc = two_targets
    blocks = {}
    for r in doc["results"]:
        ex = r["exchange"]
        net = ipaddress.ip_network(f"{ex['target_ip']}/24", strict=False)
        assert net.subnet_of(ipaddress.ip_network("198.18.0.0/15"))
        blocks.setdefault((r["worker"], r["target"]), set()).add(net)
        # Every frame in the case's pcap belongs to its own target's lab.
        for pkt in rdpcap(os.path.join(tmp, "results", r["evidence"]["pcap"])):
            if IP in pkt:
                assert {pkt[IP].src, pkt[IP].dst} <= {ex["peer_ip"], ex["target_ip"]}, r["nodeid"]
    # One block per worker × target, never shared: a lab is never another target's.
    assert all(len(b) == 1 for b in blocks.values())
    assert len({net for b in blocks.values() for net in b}) == len(blocks)
    assert {target for _, target in blocks} == {"linux", "lwip"}


def test_results_follow_the_schema_with_each_targets_identity(two_targets):
    tmp, proc, doc = two_targets
    jsonschema.validate(doc, SCHEMA)
    assert doc["schema"] == "synfin-results/1" and doc["synfin"]["version"]
    lwip, linux = doc["targets"]["lwip"], doc["targets"]["linux"]
    assert lwip["stack"] == "lwip" and lwip["version"] == "2.1.3" and lwip["image"]["id"].startswith("sha256:")
    assert linux["version"] == os.uname().release and linux["sysctls"]["net.ipv4.tcp_timestamps"] in ("0", "1", "2")
    record = next(r for r in doc["results"] if r["case"].endswith("::test_open") and r["target"] == "lwip")
    assert record["title"] == "The passive open of every target."
    assert record["rerun"].endswith("test_fault.py::test_open --target=lwip")
    assert [c["op"] for c in record["exchange"]["calls"]] == ["listen", "accept"]


def test_the_schema_rejects_what_it_does_not_describe(two_targets):
    tmp, proc, doc = two_targets
    broken = json.loads(json.dumps(doc))
    del broken["results"][0]["verdict"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**doc, "schema": "synfin-results/0"}, SCHEMA)


def test_junit_xml_carries_requirement_verdict_and_rerun_per_testcase(two_targets):
    tmp, proc, doc = two_targets
    cases = ET.parse(tmp / "junit.xml").getroot().iter("testcase")
    seen = 0
    for case in cases:
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert props["synfin_verdict"] == "PASS" and props["synfin_target"] in ("linux", "lwip")
        assert props["synfin_requirement"] in ("R9293-3.10.7.2/third", "R9293-3.10.7.1")
        assert props["synfin_rerun"].startswith(".venv/bin/pytest ") and f"--target={props['synfin_target']}" in props["synfin_rerun"]
        seen += 1
    assert seen == 6


@pytest.mark.parametrize("args, line", [
    (("--target=linux,nosuch",), "unknown target 'nosuch'; known targets: "),
    (("--target=linux,linux",), "'linux' is given twice"),
    (("--target=linux,",), "an empty name in the list"),
    (("--report-dir=/proc/synfin-report",), "--report-dir /proc/synfin-report: cannot be created in /proc"),
    (("--report-dir={tmp}/foreign",), "not empty and not a synfin report; refusing to replace it"),
    (("--results={tmp}/foreign/notes.txt",), "--results {tmp}/foreign/notes.txt: {tmp}/foreign/notes.txt is not a directory"),
    (("--target=linux,lwip", "--runtime=netns"), "--runtime=netns: target lwip runs only in a Docker container"),
])
def test_bad_input_is_one_line_and_exit_4(tmp_path, args, line):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    proc, _ = run_cases(tmp_path, CASES, *(a.format(tmp=tmp_path) for a in args))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(errors) == 1 and line.format(tmp=tmp_path) in errors[0], errors
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()
    assert os.listdir(tmp_path / "foreign") == ["notes.txt"]


def test_a_fail_exits_1_and_the_last_line_says_so(tmp_path):
    proc, verdicts = run_cases(tmp_path, """
        @requirement("R9293-3.10.7.1", "MUST")
        def test_wrong(lab):
            conn = lab.peer.connection(lab.port())
            conn.syn()
            conn.expect(Seg("R", seq=0), within=0.3)   # Linux answers RST,ACK: a FAIL of this spec
        """)
    assert verdicts["test_wrong"]["verdict"] == "FAIL" and proc.returncode == 1
    assert proc.stdout.rstrip().splitlines()[-1].startswith("synfin: exit 1, unexpected results (FAIL)")
    assert verdicts["test_wrong"]["expectation_met"] is False


@pytest.mark.skipif(runtime.docker_client()[0] is None, reason="needs a Docker engine")
def test_errors_and_a_target_that_cannot_start_are_recorded_by_the_schema(tmp_path):
    proc, _ = run_cases(tmp_path, """
        @requirement("R9293-3.10.7.2/third", "MUST")
        def test_open(lab):
            pass

        @requirement("R9293-3.10.7.2/third", "MUST")
        def test_without_lab():
            "A case that needs no lab still runs once per target."
        """, "--target=linux,lwip", "--runtime=docker", env={"SYNFIN_BASE_IMAGE": "synfin-no-such-base:1"})
    doc = document(tmp_path)
    jsonschema.validate(doc, SCHEMA)
    verdicts = {(r["case"].rsplit("::", 1)[1], r["target"]): r["verdict"] for r in doc["results"]}
    assert verdicts == {("test_open", "linux"): "ERROR", ("test_open", "lwip"): "ERROR",
                        ("test_without_lab", "linux"): "PASS", ("test_without_lab", "lwip"): "PASS"}
    for name in ("linux", "lwip"):
        assert "synfin-no-such-base:1" in doc["targets"][name]["error"], doc["targets"][name]
    error = next(r for r in doc["results"] if r["verdict"] == "ERROR")
    assert [s["verdict"] for s in error["steps"]] == ["ERROR"]
    assert proc.returncode == 2 and doc["exit_code"] == 2
    assert proc.stdout.rstrip().splitlines()[-1].startswith("synfin: exit 2, verdicts incomplete")


def test_an_unsupported_case_is_recorded_by_the_schema_and_passes_the_run(tmp_path):
    proc, verdicts = run_cases(tmp_path, """
        @requirement("R9293-3.10.7.2/third", "MUST")
        def test_needs(lab):
            lab.target.require("no_such_capability")
        """)
    jsonschema.validate(document(tmp_path), SCHEMA)
    assert verdicts["test_needs"]["verdict"] == "UNSUPPORTED" and proc.returncode == 0
