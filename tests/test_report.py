"""The HTML report: loading and merging results.json, the baseline, refusals, and the rendered
pages as Chromium shows them (one cell per case x target, a FAIL cell in the FAIL colour)."""
import copy
import html.parser
import json
import os
import shutil
import subprocess

import jsonschema
import pytest
from PIL import Image

from harness.report import BadInput, load, merge, validate, write_site
from harness.report.cli import main
from harness.report.ladder import svg

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FAIL_RGB = (0xD3, 0x2F, 0x2F)  # --fail in static/report.css
PASS_RGB = (0xC8, 0xE6, 0xC9)  # --pass


# -- synthetic documents --------------------------------------------------------------------------
def exchange(broke: bool = False, missing: bool = False) -> dict:
    """A handshake and a close; `broke`: the target's FIN broke the expectation; `missing`: its
    answer never came."""
    def seg(t, frm, flags, seq, ack, length=0, **extra):
        return {"t": t, "from": frm, "peer_port": 40001, "target_port": 8080, "flags": flags, "seq": seq,
                "ack": ack, "len": length, "win": 64240, "options": [["mss", 1460]] if "SYN" in flags else [],
                **extra}
    segments = [seg(0.001, "peer", "SYN", 0, None), seg(0.0015, "target", "SYN,ACK", 0, 1),
                seg(0.002, "peer", "ACK", 1, 1), seg(0.003, "peer", "FIN,ACK", 1, 1)]
    if not missing:
        segments.append(seg(0.004, "target", "FIN,ACK", 1, 2, **({"broke": True} if broke else {})))
    failure = None
    if broke or missing:
        failure = {"peer_port": 40001, "expected": ["ACK of the FIN: A seq=1 ack=2"], "t": 1.004,
                   "broke": 4 if broke else None}
    return {"segments": segments, "peer_ip": "10.0.0.1", "target_ip": "10.0.0.2", "failure": failure,
            "calls": [{"op": "listen", "args": {"port": 8080}, "result": "ok", "t_call": 0.0, "t": 0.0005},
                      {"op": "accept", "args": {}, "result": "fd 5", "t_call": 0.0006, "t": 0.0021}]}


def record(case: str, target: str, verdict: str = "PASS", **over) -> dict:
    area = case.split("/")[1]
    r = {"case": case, "nodeid": f"{case}[{target}]", "target": target, "area": area,
         "title": f"§3.6: the checked sentence of {case.rsplit('::', 1)[-1]}",
         "doc": "§3.6: the checked sentence.\nIt goes on for a second line.",
         "requirement": "R9293-3.6", "level": "MUST", "requirement_text": "the requirement in one line",
         "case_requirement": "R9293-3.6", "case_level": "MUST", "verdict": verdict,
         "step": None, "message": "" if verdict in ("PASS", "INFO") else f"{verdict}: expected ACK; received FIN,ACK",
         "signature": None, "expectations": [], "expectation_met": verdict not in ("FAIL", "ERROR"),
         "choices": {}, "notes": {}, "settings": {}, "steps": [], "checks": [],
         "durations": {"call": 0.1, "wall": 0.2}, "evidence": None,
         "rerun": f"sudo .venv/bin/python -m pytest '{case}' --target={target}",
         "exchange": exchange(broke=verdict == "FAIL")}
    r.update(over)
    return r


def document(targets: list[str], records: list[dict]) -> dict:
    return {"schema": "synfin-results/1", "synfin": {"version": "0.1.0", "commit": "abc123", "dirty": False},
            "started": "2025-01-01T10:00:00+00:00", "finished": "2025-01-01T10:05:00+00:00",
            "command": ["pytest", "cases/"], "exit_code": 1,
            "targets": {t: {"name": t, "stack": t, "version": f"{t}-1.0", "runtime": "docker"} for t in targets},
            "results": records}


CASES = ["cases/close/test_a.py::test_one", "cases/close/test_a.py::test_two", "cases/reset/test_b.py::test_three"]


def small_doc() -> dict:
    """3 cases x 2 targets; one FAIL (test_one on lwip), one INFO with a choice."""
    return document(["linux", "lwip"], [
        record(CASES[0], "linux"), record(CASES[0], "lwip", "FAIL"),
        record(CASES[1], "linux", "INFO", choices={"rst_in_time_wait": "ignored (RFC 1337 F1): TIME-WAIT kept"}),
        record(CASES[1], "lwip", "INFO", choices={"rst_in_time_wait": "accepted (RFC 9293): TIME-WAIT ended"}),
        record(CASES[2], "linux"), record(CASES[2], "lwip", "EXPECTED"),
    ])


def write(path, doc) -> str:
    with open(path, "w") as f:
        json.dump(doc, f)
    return str(path)


# -- reading the output ---------------------------------------------------------------------------
class Cells(html.parser.HTMLParser):
    """The matrix cells of a page: case (from the row), target, verdict, class and text of each."""
    def __init__(self):
        super().__init__()
        self.cells, self._depth, self._cell, self._case = [], 0, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "tr":
            self._case = attrs.get("data-case")
        elif tag == "td" and "cell" in classes:
            verdict = next(c[2:] for c in classes if c.startswith("v-"))
            self._cell = {"case": self._case, "target": attrs["data-target"], "verdict": verdict,
                          "class": attrs["class"], "text": ""}
            self.cells.append(self._cell)
            self._depth = 0
        elif self._cell is not None:
            self._depth += 1

    def handle_endtag(self, tag):
        if self._cell is None:
            return
        if tag == "td" and self._depth == 0:
            self._cell = None
        else:
            self._depth -= 1

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def cells_of(html_text: str) -> list[dict]:
    parser = Cells()
    parser.feed(html_text)
    return parser.cells


def read(path) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def cell_at(cells, case, target) -> dict:
    return next(c for c in cells if c["case"] == case and c["target"] == target)


def listing(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


# -- headless Chromium ----------------------------------------------------------------------------
def chromium(*args: str) -> str:
    cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1200",
           "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout


# Measures the FAIL cell in the page itself; appended to a copy of index.html, never to the site.
MEASURE = """<script>
const r = document.querySelector('td.cell.v-FAIL').getBoundingClientRect();
const p = document.querySelector('td.cell.v-PASS').getBoundingClientRect();
document.body.dataset.fail = [r.left, r.top, r.right, r.bottom].join(",");
document.body.dataset.pass = [p.left, p.top, p.right, p.bottom].join(",");
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: the rendered pages cannot be checked")
def test_chromium_renders_one_cell_per_case_and_target_and_a_red_fail(tmp_path):
    out = tmp_path / "site"
    write_site(small_doc(), str(out), results_dir=str(tmp_path))
    index = out / "index.html"

    dom = chromium("--dump-dom", index.as_uri())
    cells = cells_of(dom)
    assert len(cells) == len(CASES) * 2
    assert {(c["case"], c["target"]) for c in cells} == {(c, t) for c in CASES for t in ("linux", "lwip")}
    assert cell_at(cells, CASES[0], "lwip")["verdict"] == "FAIL"
    assert "ignored (RFC 1337 F1)" in cell_at(cells, CASES[1], "linux")["text"]

    probe = out / "probe.html"  # same directory, so the stylesheet loads as for index.html
    probe.write_text(read(index).replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    measured = chromium("--dump-dom", probe.as_uri())
    fail = [float(x) for x in measured.split('data-fail="')[1].split('"')[0].split(",")]
    good = [float(x) for x in measured.split('data-pass="')[1].split('"')[0].split(",")]
    shot = tmp_path / "index.png"
    chromium(f"--screenshot={shot}", probe.as_uri())
    image = Image.open(shot).convert("RGB")
    # Bottom corners of each cell: inside the padding and the flag's inset border, clear of text.
    for rect, colour in ((fail, FAIL_RGB), (good, PASS_RGB)):
        left, top, right, bottom = rect
        assert bottom < image.height, "the cell is below the screenshot"
        for x, y in ((left + 6, bottom - 5), (right - 6, bottom - 5)):
            assert image.getpixel((int(x), int(y))) == colour, (rect, (x, y))

    case_page = out / "cases" / "close--test_a--test_one.html"
    case_shot = tmp_path / "case.png"
    chromium(f"--screenshot={case_shot}", case_page.as_uri())
    pixels = Image.open(case_shot).convert("RGB").getdata()
    assert sum(1 for p in pixels if p == FAIL_RGB) > 200  # the FAIL badge and the red arrow
    case_dom = chromium("--dump-dom", case_page.as_uri())
    assert case_dom.count("<svg") == 2 and 'class="seg broke"' in case_dom


# Ticks "show only deviations" and folds the first area, then records what is displayed.
FILTER = """<script>
document.getElementById("only-deviations").click();
document.body.dataset.rows = Array.from(document.querySelectorAll("tr.case"),
  r => r.dataset.case + "=" + getComputedStyle(r).display).join("|");
document.querySelector("button.fold").click();
document.body.dataset.folded = getComputedStyle(document.querySelector("section.area table")).display;
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: the page's script cannot be run")
def test_the_deviation_filter_hides_rows_of_only_pass_and_info_and_areas_fold(tmp_path):
    out = tmp_path / "site"
    write_site(small_doc(), str(out))
    probe = out / "probe.html"
    probe.write_text(read(out / "index.html").replace("</body>", FILTER + "</body>"), encoding="utf-8")
    dom = chromium("--dump-dom", probe.as_uri())
    shown = dict(pair.rsplit("=", 1) for pair in dom.split('data-rows="')[1].split('"')[0].split("|"))
    assert shown == {CASES[0]: "table-row", CASES[1]: "none", CASES[2]: "table-row"}  # FAIL, INFO only, EXPECTED
    assert 'data-folded="none"' in dom


def test_merge_of_two_single_target_runs_gives_both_columns(tmp_path):
    whole = small_doc()
    linux = document(["linux"], [r for r in whole["results"] if r["target"] == "linux"])
    lwip = document(["lwip"], [r for r in whole["results"] if r["target"] == "lwip"])
    lwip["started"] = "2025-01-01T09:00:00+00:00"
    merged = merge([linux, lwip])
    validate(merged)
    assert list(merged["targets"]) == ["linux", "lwip"] and len(merged["results"]) == 6
    assert merged["started"] == "2025-01-01T09:00:00+00:00"

    out = tmp_path / "site"
    write_site(merged, str(out))
    cells = cells_of(read(out / "index.html"))
    assert len(cells) == 6 and {c["target"] for c in cells} == {"linux", "lwip"}
    page = read(out / "cases" / "close--test_a--test_one.html")
    assert 'id="t-linux"' in page and 'id="t-lwip"' in page


def test_a_later_document_replaces_the_record_of_the_same_case_and_target():
    first = small_doc()
    rerun = document(["lwip"], [record(CASES[0], "lwip", "PASS")])
    merged = merge([first, rerun])
    assert len(merged["results"]) == 6
    assert next(r for r in merged["results"] if r["case"] == CASES[0] and r["target"] == "lwip")["verdict"] == "PASS"


def test_merge_through_the_cli_keeps_each_runs_evidence(tmp_path):
    for target in ("linux", "lwip"):
        run = tmp_path / "runs" / target
        (run / "ev").mkdir(parents=True)
        (run / "ev" / "capture.pcap").write_bytes(target.encode())
        doc = document([target], [record(CASES[0], target, evidence={"dir": "ev", "pcap": "ev/capture.pcap"})])
        write(run / "results.json", doc)
    out = tmp_path / "site"
    assert main([str(tmp_path / "runs" / t / "results.json") for t in ("linux", "lwip")] + ["--out", str(out)]) == 0
    for target in ("linux", "lwip"):
        copied = out / "evidence" / target / "close--test_a--test_one" / "capture.pcap"
        assert copied.read_bytes() == target.encode()
    page = read(out / "cases" / "close--test_a--test_one.html")
    assert 'href="../evidence/lwip/close--test_a--test_one/capture.pcap"' in page


def test_merged_writes_one_results_json_that_loads_keeps_the_evidence_and_serves_as_baseline(tmp_path, capsys):
    """--merged: the merge of shards from several directories as a results.json of its own, its
    evidence paths made relative to where it is written, and fit to be the next night's baseline."""
    whole = small_doc()
    shards = []
    for n, (target, part) in enumerate((("linux", slice(0, None, 2)), ("lwip", slice(None)),
                                        ("linux", slice(1, None, 2)))):  # no pair in two shards
        run = tmp_path / "shards" / f"results-{target}-{n}"
        (run / "ev").mkdir(parents=True)
        (run / "ev" / "capture.pcap").write_bytes(f"{target} {n}".encode())
        mine = [r for r in whole["results"] if r["target"] == target][part]
        doc = document([target], [dict(r, evidence={"dir": "ev", "pcap": "ev/capture.pcap"}) for r in mine])
        shards.append(write(run / "results.json", doc))
    merged = tmp_path / "night" / "merged" / "results.json"
    assert main(shards + ["--out", str(tmp_path / "report"), "--merged", str(merged)]) == 0

    doc = load(str(merged))  # validated against the schema on the way in, too
    assert {(r["case"], r["target"]): r["verdict"] for r in doc["results"]} == \
        {(r["case"], r["target"]): r["verdict"] for r in whole["results"]}
    assert sorted(doc["targets"]) == ["linux", "lwip"]
    for r in doc["results"]:
        pcap = merged.parent / r["evidence"]["pcap"]
        assert pcap.read_bytes().startswith(r["target"].encode()), r["evidence"]
    assert sorted(os.listdir(merged.parent)) == ["results.json"]  # no scratch file left behind

    capsys.readouterr()
    assert main(shards + ["--out", str(tmp_path / "next"), "--baseline", str(merged)]) == 0
    page = read(tmp_path / "next" / "index.html")
    assert "0 changed since baseline" in page
    assert not [c for c in cells_of(page) if {"delta", "isnew"} & set(c["class"].split())]


def test_baseline_marks_a_changed_verdict_and_a_changed_choice_and_nothing_else(tmp_path):
    old = small_doc()
    new = copy.deepcopy(old)
    changed = {(CASES[0], "linux"), (CASES[1], "lwip")}
    for r in new["results"]:
        if (r["case"], r["target"]) == (CASES[0], "linux"):
            r.update(verdict="WARN", message="a SHOULD not met")
        if (r["case"], r["target"]) == (CASES[1], "lwip"):
            r["choices"] = {"rst_in_time_wait": "ignored (RFC 1337 F1): TIME-WAIT kept"}
        r["durations"] = {"call": 9.0, "wall": 9.0}  # not a change worth a mark
    out = tmp_path / "site"
    write_site(new, str(out), baseline=old)
    page = read(out / "index.html")
    assert "2 changed since baseline" in page
    cells = cells_of(page)
    marked = {(c["case"], c["target"]) for c in cells if "delta" in c["class"].split()}
    assert marked == changed
    assert "was PASS" in cell_at(cells, CASES[0], "linux")["text"]
    assert "was: RST in TIME-WAIT accepted (RFC 9293)" in cell_at(cells, CASES[1], "lwip")["text"]
    assert all("was" not in c["text"] for c in cells if (c["case"], c["target"]) not in changed)


def test_baseline_without_the_pair_calls_it_new(tmp_path):
    old = small_doc()
    old["results"] = [r for r in old["results"] if r["case"] != CASES[2]]
    write_site(small_doc(), str(tmp_path / "site"), baseline=old)
    cells = cells_of(read(tmp_path / "site" / "index.html"))
    assert {(c["case"], c["target"]) for c in cells if "isnew" in c["class"].split()} == {(CASES[2], "linux"),
                                                                                        (CASES[2], "lwip")}


# -- bad input ------------------------------------------------------------------------------------
def bad_inputs(tmp_path) -> dict:
    good = write(tmp_path / "good.json", small_doc())
    text = json.dumps(small_doc(), indent=1)
    truncated = tmp_path / "truncated.json"
    truncated.write_text(text[: len(text) // 2])
    other = small_doc()
    other["schema"] = "synfin-results/2"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return {
        "no input": ([], "no results.json given"),
        "missing file": ([str(tmp_path / "nope.json")], "no such file"),
        "truncated": ([str(truncated)], "truncated JSON at line"),
        "other schema": ([write(tmp_path / "v2.json", other)], "not synfin-results/1 (schema 'synfin-results/2')"),
        "bad baseline": ([good, "--baseline", str(tmp_path / "old.json")], "no such file"),
        "unwritable out": ([good, "--out", str(blocker / "site")], "cannot write"),
        "unwritable merged": ([good, "--merged", str(blocker / "merged.json")], "cannot write"),
        "merged is a directory": ([good, "--merged", str(tmp_path)], "is a directory"),
    }


@pytest.mark.parametrize("which", ["no input", "missing file", "truncated", "other schema", "bad baseline",
                                   "unwritable out", "unwritable merged", "merged is a directory"])
def test_bad_input_exits_4_with_one_line_and_writes_nothing(tmp_path, capsys, which):
    argv, words = bad_inputs(tmp_path)[which]
    out = tmp_path / "out"
    out.mkdir()
    if "--out" not in argv:
        argv = argv + ["--out", str(out)]
    before = listing(tmp_path)
    assert main(argv) == 4
    err = capsys.readouterr()
    assert err.out == "" and len(err.err.strip().splitlines()) == 1 and words in err.err, err.err
    assert "Traceback" not in err.err
    assert listing(tmp_path) == before and os.listdir(out) == []


def test_a_foreign_non_empty_out_directory_is_not_replaced(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main([write(tmp_path / "r.json", small_doc()), "--out", str(out)]) == 4
    assert "refusing to replace it" in capsys.readouterr().err and os.listdir(out) == ["mine.txt"]


def test_a_report_replaces_the_previous_report(tmp_path, capsys):
    results = write(tmp_path / "r.json", small_doc())
    out = tmp_path / "out"
    assert main([results, "--out", str(out)]) == 0
    assert main([results, "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out / "index.html")
    assert sorted(os.listdir(tmp_path)) == ["out", "r.json"]  # no scratch directory left behind


# -- the schema -----------------------------------------------------------------------------------
def test_the_schema_rejects_a_truncated_or_wrong_version_document(tmp_path):
    good = small_doc()
    validate(good)
    assert load(write(tmp_path / "good.json", good))["results"][0]["case"] == CASES[0]

    text = json.dumps(good)
    (tmp_path / "cut.json").write_text(text[:-40])
    with pytest.raises(BadInput, match=r"cut.json: truncated JSON at line 1$"):
        load(str(tmp_path / "cut.json"))

    v2 = dict(good, schema="synfin-results/2")
    with pytest.raises(BadInput, match=r"not synfin-results/1 \(schema 'synfin-results/2'\)"):
        validate(v2)
    old_format = {"target": "linux", "results": []}  # what results.py wrote before the schema
    with pytest.raises(BadInput, match=r"not synfin-results/1 \(no 'schema' field\)"):
        validate(old_format)

    # A document cut at a record boundary is valid JSON but misses what a record must carry.
    short = copy.deepcopy(good)
    del short["results"][2]["verdict"]
    with pytest.raises(BadInput, match=r"at results\[2\]: 'verdict' is a required property"):
        validate(short)
    bad_verdict = copy.deepcopy(good)
    bad_verdict["results"][0]["verdict"] = "MAYBE"
    with pytest.raises(BadInput, match=r"at results\[0\]\.verdict"):
        validate(bad_verdict)
    from harness.report.load import schema
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(v2, schema())


# -- the ladder -----------------------------------------------------------------------------------
def test_ladder_draws_segments_calls_the_broken_one_and_the_missing_one():
    r = record(CASES[0], "lwip", "FAIL")
    picture = svg(r)
    assert picture.count('<g class="seg') == 5 and picture.count('<g class="call"') == 2
    assert picture.count('class="seg broke"') == 1 and 'stroke="#d32f2f"' in picture
    assert 'stroke-dasharray' in picture and "ACK of the FIN: A seq=1 ack=2" in picture
    assert "⋯ 1.0 s later ⋯" in picture  # the wait before the expected answer, not a second of height
    assert "listen(port=8080) → ok" in picture and "10.0.0.2:8080" in picture

    missing = record(CASES[0], "lwip", "FAIL", exchange=exchange(missing=True))
    assert "expected, never came:" in svg(missing) and "broke" not in svg(missing)
    assert "no segments were exchanged" in svg(record(CASES[0], "lwip", "ERROR", exchange=None))


def test_text_in_the_pages_is_escaped(tmp_path):
    doc = small_doc()
    doc["results"][0]["message"] = "<script>alert(1)</script>"
    doc["results"][0]["exchange"]["calls"][0]["result"] = "<b>x</b>"
    write_site(doc, str(tmp_path / "site"))
    page = read(tmp_path / "site" / "cases" / "close--test_a--test_one.html")
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    assert "<b>x</b>" not in page
