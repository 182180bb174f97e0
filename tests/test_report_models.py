"""The report's state-machines page (synfin-report --models DIR): two small learned models written
as synfin-learn writes them, a diff between them written by hand, and the page models.html as the
report builds it; also the models alone (no results.json) and the refusals of broken files."""
import html.parser
import json
import os
import re
import shutil
import subprocess

import pytest

from harness.learn.model import Model
from harness.report.cli import main
from test_report import document, listing, record, small_doc, write

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SERVER = ["SYN", "ACK", "RST"]


# -- two small models, as synfin-learn writes them ------------------------------------------------
def linux_model() -> Model:
    t = {("s0", "SYN"): ("SA", "s1"), ("s0", "ACK"): ("R", "s0"), ("s0", "RST"): ("TIMEOUT", "s0"),
         ("s1", "SYN"): ("A", "s1"), ("s1", "ACK"): ("TIMEOUT", "s2"), ("s1", "RST"): ("TIMEOUT", "s0"),
         ("s2", "SYN"): ("A", "s2"), ("s2", "ACK"): ("TIMEOUT", "s2"), ("s2", "RST"): ("TIMEOUT", "s0")}
    return Model(SERVER, t, target="linux", side="server",
                 identity={"stack": "linux", "version": "6.12.0", "kernel": "6.12.0"},
                 learning={"algorithm": "L#", "oracle": {"name": "random-words", "effort": {"walks": 400, "max_len": 8}},
                           "queries": 1234, "steps": 9876, "wall_s": 321.5, "rounds": 3, "lanes": 2},
                 settings=[{"name": "net.ipv4.tcp_syncookies", "value": "0", "default": "1",
                            "why": "a SYN flood of the learner's resets must not switch the stack to cookies"}],
                 settings_check={"sampled": 40, "words": 120, "dependent": [
                     {"word": ["SYN", "SYN"], "learned": ["SA", "A"], "default": ["SA", "SA"],
                      "state": "s1", "input": "SYN"}], "transitions": ["s1 SYN"]},
                 tcp_states={"s0": "LISTEN", "s1": "SYN-RECEIVED", "s2": "ESTABLISHED"},
                 conformance=[
                     {"state": "s0", "tcp_state": "LISTEN", "input": "ACK", "output": "R", "allowed": ["R"],
                      "verdict": "conforms", "requirement": "R9293-3.10.7.2/second", "step": "§3.10.7.2 second"},
                     {"state": "s0", "tcp_state": "LISTEN", "input": "SYN", "output": "SA", "allowed": ["SA"],
                      "verdict": "conforms", "requirement": "R9293-3.10.7.2/third", "step": "§3.10.7.2 third"}])


def lwip_model() -> Model:
    t = {("s0", "SYN"): ("SA", "s1"), ("s0", "ACK"): ("TIMEOUT", "s0"), ("s0", "RST"): ("TIMEOUT", "s0"),
         ("s1", "SYN"): ("SA", "s1"), ("s1", "ACK"): ("TIMEOUT", "s2"), ("s1", "RST"): ("TIMEOUT", "s0"),
         ("s2", "SYN"): ("R", "s0"), ("s2", "ACK"): ("TIMEOUT", "s2"), ("s2", "RST"): ("TIMEOUT", "s0")}
    return Model(SERVER, t, target="lwip", side="server", identity={"stack": "lwip", "version": "2.1.3"},
                 learning={"algorithm": "L#", "oracle": {"name": "random-words", "effort": {"walks": 400}},
                           "queries": 800, "steps": 5000, "wall_s": 95.0, "lanes": 1},
                 settings=[], settings_check=None,
                 tcp_states={"s0": "LISTEN", "s1": "SYN-RECEIVED", "s2": "ESTABLISHED"},
                 conformance=[
                     {"state": "s0", "tcp_state": "LISTEN", "input": "ACK", "output": "TIMEOUT", "allowed": ["R"],
                      "verdict": "forbidden", "requirement": "R9293-3.10.7.2/second", "step": "§3.10.7.2 second",
                      "why": "TIMEOUT is not among the answers §3.10.7.2 second allows: R", "level": "MUST",
                      "rfc": '§3.10.7.2 second: "An acceptable reset segment should be formed for any arriving '
                             'ACK-bearing segment"', "next": "s0", "next_tcp_state": "LISTEN", "row": "LISTEN-ACK"},
                     {"state": "s0", "tcp_state": "LISTEN", "input": "SYN", "output": "SA", "allowed": ["SA"],
                      "verdict": "conforms", "requirement": "R9293-3.10.7.2/third", "step": "§3.10.7.2 third"}])


DIFFERENCES = [  # word, a's outputs, b's outputs, the state both are in before the last input,
                 # requirement, confirmed, live
    (["ACK"], ["R"], ["TIMEOUT"], ("s0", "LISTEN"), "R9293-3.10.7.2/second", True, {"a": ["R"], "b": ["TIMEOUT"]}),
    (["SYN", "SYN"], ["SA", "A"], ["SA", "SA"], ("s1", "SYN-RECEIVED"), "R9293-3.6", False,
     {"a": ["SA", "SA"], "b": ["SA", "SA"]}),
    (["SYN", "ACK", "SYN"], ["SA", "TIMEOUT", "A"], ["SA", "TIMEOUT", "R"], ("s2", "ESTABLISHED"), None, None, None),
]


def diff_doc(a_file: str, b_file: str) -> dict:
    """A synfin-model-diff/1 document, written by hand in the format synfin-learn diff writes."""
    return {"schema": "synfin-model-diff/1",
            "a": {"target": "linux", "side": "server", "file": a_file},
            "b": {"target": "lwip", "side": "server", "file": b_file},
            "alphabet": SERVER, "left_out": ["CLOSE"],
            "differences": [{"word": w, "a": a, "b": b, "state_a": state, "state_b": state,
                             "tcp_state_a": tcp, "tcp_state_b": tcp, "requirement": r,
                             "confirmed": c, "live": live} for w, a, b, (state, tcp), r, c, live in DIFFERENCES]}


def learned_dir(tmp_path) -> str:
    """linux and lwip learned in two directories (as two runs would), gathered into one, with the diff."""
    runs = {"linux": linux_model().write(str(tmp_path / "run-linux")),
            "lwip": lwip_model().write(str(tmp_path / "run-lwip"))}
    models = tmp_path / "learned"
    models.mkdir()
    for paths in runs.values():
        for p in paths.values():
            shutil.copy(p, models)
    write(models / "linux-server-vs-lwip-server.json",
          diff_doc(str(models / "linux-server.json"), str(models / "lwip-server.json")))
    return str(models)


# -- reading the page -----------------------------------------------------------------------------
class Page(html.parser.HTMLParser):
    """The differences (word, mark, text), the nav links, the images and every id of a page."""
    def __init__(self):
        super().__init__()
        self.differences, self.nav_links, self.images, self.ids, self.links = [], [], [], set(), []
        self._diff_depth = None
        self._in_nav = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "nav":
            self._in_nav = True
        if tag == "a":
            self.links.append(attrs.get("href"))
            if self._in_nav:
                self.nav_links.append(attrs.get("href"))
        if tag == "img":
            self.images.append(attrs.get("src"))
        if tag == "div" and "difference" in (attrs.get("class") or "").split():
            self.differences.append({"word": attrs["data-word"], "mark": attrs["data-mark"], "text": "",
                                     "class": attrs["class"]})
            self._diff_depth = 0
        elif self._diff_depth is not None and tag not in ("br", "img", "input", "meta", "link"):
            self._diff_depth += 1

    def handle_endtag(self, tag):
        if tag == "nav":
            self._in_nav = False
        if self._diff_depth is not None:
            if tag == "div" and self._diff_depth == 0:
                self._diff_depth = None
            else:
                self._diff_depth -= 1

    def handle_data(self, data):
        if self._diff_depth is not None:
            self.differences[-1]["text"] += data


def parse(path) -> Page:
    page = Page()
    with open(path, encoding="utf-8") as f:
        page.feed(f.read())
    return page


def text_of(path) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def words(text: str) -> str:
    return re.sub(r"[ \t\n]+", " ", text)  # the templates break lines where they like


def section(page_html: str, anchor: str) -> str:
    """The page's <section> with that id, its white space collapsed."""
    start = page_html.index(f'id="{anchor}"')
    end = page_html.find("<section", start)
    return words(page_html[start:end if end != -1 else None])


# -- the page -------------------------------------------------------------------------------------
def test_models_page_is_linked_from_the_index_and_shows_the_models_and_the_diff(tmp_path, capsys):
    models = learned_dir(tmp_path)
    results = write(tmp_path / "results.json", small_doc())
    out = tmp_path / "site"
    assert main([results, "--out", str(out), "--models", models]) == 0
    assert capsys.readouterr().out.strip() == str(out / "index.html")

    index = parse(out / "index.html")
    assert "models.html" in index.nav_links
    page_path = out / "models.html"
    assert page_path.is_file()
    page = parse(page_path)
    body = text_of(page_path)

    # Every difference word is listed, once, in order, each with its own mark.
    assert [d["word"] for d in page.differences] == ["ACK", "SYN SYN", "SYN ACK SYN"]
    marks = {d["word"]: d for d in page.differences}
    assert marks["ACK"]["mark"] == "confirmed" and "confirmed live" in marks["ACK"]["text"]
    assert marks["SYN SYN"]["mark"] == "unconfirmed" and "not confirmed" in marks["SYN SYN"]["text"]
    assert "confirmed live" not in marks["SYN SYN"]["text"]
    assert marks["SYN ACK SYN"]["mark"] == "unreplayed" and "not replayed" in marks["SYN ACK SYN"]["text"]
    # The output where the models part is the one highlighted: R against TIMEOUT at input 1; A against R at 3.
    assert '<code class="sym differs">R</code>' in section_of_difference(body, "ACK")
    # Replayed live, linux sent SA where its model says A: that live output is marked, the difference not confirmed.
    second = section_of_difference(body, "SYN SYN")
    assert second.count('class="sym off"') == 2 and '<code class="sym off">SA</code>' in second  # and the key
    assert "in linux's state <code>s1</code> (SYN-RECEIVED)" in second
    third = section_of_difference(body, "SYN ACK SYN")
    assert third.count('class="sym differs"') == 4  # in the sentence (2) and the table (2)
    assert '<code class="sym differs">TIMEOUT</code>' not in third and "They part at input 3" in third
    # The requirement the matrix has is linked to its row there; one it lacks is plain text.
    assert "index.html#req-R9293-3.6" in page.links and "req-R9293-3.6" in parse(out / "index.html").ids
    assert not any(h and "3.10.7.2" in h for h in page.links)

    # The forbidden finding of lwip, prominent, with its requirement and step; linux has none.
    lwip = section(body, "m-lwip-server")
    assert 'class="forbidden-box"' in lwip and "1 forbidden" in lwip
    assert '<code class="sym differs">TIMEOUT</code>' in lwip and "R9293-3.10.7.2/second" in lwip
    assert "§3.10.7.2 second" in lwip and "TIMEOUT is not among the answers §3.10.7.2 second allows: R" in lwip
    assert "1 transition conforms" in lwip
    linux = section(body, "m-linux-server")
    assert "forbidden-box" not in linux and "no forbidden transition" in linux and "2 transitions conform" in linux

    # Per model: identity, counts, learning, settings and their check, states; the drawing copied in.
    assert "6.12.0" in linux and "3 states, 9 transitions" in linux
    assert "random-words (effort: walks=400, max_len=8)" in linux and "1\u202f234" in linux and "5 min 22 s" in linux
    assert "net.ipv4.tcp_syncookies" in linux and "a SYN flood of the learner" in linux
    assert "1 word answered differently" in linux and "(40 sampled, 120 words)" in linux
    assert '<code>s1</code> on <code class="sym">SYN</code>' in linux  # the transition that depends on them
    assert "SYN-RECEIVED" in linux and "not checked" not in linux
    assert "none: the stack was learned with its own settings" in lwip and "nothing to check" in lwip
    for stem in ("linux-server", "lwip-server"):
        assert f"models/{stem}.svg" in page.images
        assert (out / "models" / f"{stem}.svg").is_file() and (out / "models" / f"{stem}.dot").is_file()
    assert "CLOSE" in section(body, "d-linux-server-vs-lwip-server")  # the input left out


def section_of_difference(page_html: str, word: str) -> str:
    start = page_html.index(f'data-word="{word}"')
    end = page_html.find('<div class="difference', start)
    return words(page_html[start:end if end != -1 else page_html.index("</section>", start)])


def test_models_alone_make_a_report_without_results(tmp_path, capsys):
    out = tmp_path / "site"
    assert main(["--models", learned_dir(tmp_path), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    index = parse(out / "index.html")
    assert [d["word"] for d in index.differences] == ["ACK", "SYN SYN", "SYN ACK SYN"]
    assert "index.html" not in index.nav_links  # no matrix to link to
    assert (out / "models.html").is_file() and not (out / "cases").exists()
    # Requirements cannot be linked to a matrix that is not there.
    assert not any(h and "#req-" in h for h in parse(out / "models.html").links)


def test_the_index_has_no_models_link_without_models(tmp_path):
    out = tmp_path / "site"
    assert main([write(tmp_path / "r.json", small_doc()), "--out", str(out)]) == 0
    assert "models.html" not in parse(out / "index.html").nav_links and not (out / "models.html").exists()


def test_page_text_is_escaped(tmp_path):
    models = learned_dir(tmp_path)
    doc = diff_doc("linux-server.json", "lwip-server.json")
    doc["differences"][0]["word"] = ["<script>alert(1)</script>"]
    write(os.path.join(models, "linux-server-vs-lwip-server.json"), doc)
    out = tmp_path / "site"
    assert main(["--models", models, "--out", str(out)]) == 0
    body = text_of(out / "models.html")
    assert "<script>alert(1)" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_a_stand_in_drawing_is_said_so_or_redrawn_when_graphviz_is_here(tmp_path):
    models = learned_dir(tmp_path)
    stand_in = ('<svg xmlns="http://www.w3.org/2000/svg" width="420" height="40"><text x="8" y="24">'
                "Graphviz (dot) is not installed: open the .dot file beside this one</text></svg>\n")
    with open(os.path.join(models, "lwip-server.svg"), "w") as f:
        f.write(stand_in)  # what Model.write leaves on a machine without Graphviz
    out = tmp_path / "site"
    assert main(["--models", models, "--out", str(out)]) == 0
    lwip = section(text_of(out / "models.html"), "m-lwip-server")
    copied = text_of(out / "models" / "lwip-server.svg")
    if shutil.which("dot"):
        assert "Drawn by the report from the DOT file" in lwip and "Drawn without Graphviz" not in lwip
        assert "Graphviz (dot) is not installed" not in copied and "ESTABLISHED" in copied
        # linux's drawing was Graphviz's own already: copied as it is, nothing said about it.
        assert "Drawn" not in section(text_of(out / "models.html"), "m-linux-server")
    else:
        assert "Drawn without Graphviz" in lwip and copied == stand_in


# -- refusals -------------------------------------------------------------------------------------
def broken(models: str, which: str) -> str:
    """Break one file of the learned directory; the path of the file the message must name."""
    path = os.path.join(models, "lwip-server.json")
    text = text_of(path)
    data = json.loads(text)
    if which == "truncated model":
        open(path, "w").write(text[: len(text) // 2])
    elif which == "model missing a field":
        del data["transitions"]
        write(path, data)
    elif which == "incomplete model":
        data["transitions"] = [t for t in data["transitions"] if not (t["from"] == "s1" and t["input"] == "RST")]
        write(path, data)
    elif which == "diff of another schema":
        path = os.path.join(models, "linux-server-vs-lwip-server.json")
        doc = json.loads(text_of(path))
        doc["schema"] = "synfin-model-diff/2"
        write(path, doc)
    elif which == "diff with a short output":
        path = os.path.join(models, "linux-server-vs-lwip-server.json")
        doc = json.loads(text_of(path))
        doc["differences"][1]["b"] = ["SA"]
        write(path, doc)
    return path


@pytest.mark.parametrize("which, words", [
    ("truncated model", "truncated JSON"),
    ("model missing a field", "'transitions' is a required property"),
    ("incomplete model", "no transition from s1 on input RST"),
    ("diff of another schema", "not synfin-model-diff/1"),
    ("diff with a short output", "differences[1] has 1 outputs of b for a word of 2 inputs"),
])
def test_a_broken_file_is_refused_in_one_line_naming_it(tmp_path, capsys, which, words):
    models = learned_dir(tmp_path)
    bad = broken(models, which)
    results = write(tmp_path / "results.json", small_doc())
    out = tmp_path / "site"
    assert main([results, "--out", str(out), "--models", models]) == 4
    err = capsys.readouterr()
    lines = err.err.strip().splitlines()
    assert err.out == "" and len(lines) == 1, err.err
    assert "Traceback" not in err.err and bad in lines[0] and words in lines[0], lines[0]
    assert not out.exists()


def test_refusals_of_the_directory_and_of_options_that_need_results(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.json").write_text('{"schema": "something-else/1"}')
    cases = [(["--models", str(tmp_path / "nope")], "no such directory"),
             (["--models", str(empty)], "no learned model"),
             (["--models", learned_dir(tmp_path), "--baseline", write(tmp_path / "r.json", small_doc())],
              "--baseline needs a results.json")]
    for argv, words in cases:
        before = listing(tmp_path)
        assert main(argv + ["--out", str(tmp_path / "site")]) == 4
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and words in err, err
        assert listing(tmp_path) == before


def test_other_json_files_in_the_directory_are_left_out_and_said_so(tmp_path):
    models = learned_dir(tmp_path)
    write(os.path.join(models, "queries-cache.json"), {"whatever": 1})
    out = tmp_path / "site"
    assert main(["--models", models, "--out", str(out)]) == 0
    assert "not a model or a model diff (left out): <code>queries-cache.json</code>" in text_of(out / "models.html")


# -- in Chromium ----------------------------------------------------------------------------------
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: the page cannot be rendered")
def test_chromium_renders_the_page_with_the_drawings(tmp_path):
    out = tmp_path / "site"
    assert main([write(tmp_path / "results.json", small_doc()), "--out", str(out),
                 "--models", learned_dir(tmp_path)]) == 0
    probe = out / "probe.html"
    probe.write_text(text_of(out / "models.html").replace("</body>", """<script>
window.addEventListener("load", function () {
  document.body.dataset.images = Array.from(document.images).map(function (i) { return i.naturalWidth; }).join(",");
  const d = document.querySelector(".difference.diff-confirmed").getBoundingClientRect();
  document.body.dataset.diff = [d.width, d.height].join(",");
});
</script></body>"""))
    dom = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,2000",
                          "--virtual-time-budget=2000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    widths = [int(w) for w in dom.split('data-images="', 1)[1].split('"', 1)[0].split(",")]
    assert len(widths) == 2 and all(w > 0 for w in widths), widths  # both drawings load from the site
    width, height = (float(v) for v in dom.split('data-diff="', 1)[1].split('"', 1)[0].split(","))
    assert width > 300 and height > 40


def test_a_model_no_transition_of_which_was_checked_says_so_and_contradictions_read_as_words(tmp_path):
    # gVisor reports no connection states: none of its transitions meets the oracle table, which
    # is not the same as "no forbidden transition".
    t = {("s0", a): ("TIMEOUT", "s0") for a in SERVER}
    m = Model(SERVER, t, target="gvisor", side="server", identity={"stack": "gvisor"},
              learning={"algorithm": "L#", "queries": 3, "steps": 3, "wall_s": 1.0,
                        "contradictions": [{"word": ["SYN", "ACK"], "answers": [[["SA", "A"], 3], [["SA", "TIMEOUT"], 1]]}]},
              settings=[], settings_check=None, tcp_states={}, conformance=[])
    models = tmp_path / "learned"
    m.write(str(models))
    out = tmp_path / "site"
    assert main(["--models", str(models), "--out", str(out)]) == 0
    text = words(re.sub(r"<[^>]+>", "", text_of(out / "models.html")))  # as a reader sees it
    assert "no forbidden transition" not in text
    assert "Conformance: not checked" in text and "did not report the TCP state" in text
    assert re.search(r"gvisorserver gvisor13 not checked", text)  # the models table: 1 state, 3 transitions
    assert "SYN ACK: SA A (3×), SA TIMEOUT (1×)" in text


def test_a_finding_shows_what_the_matrix_cell_of_its_row_says_on_that_stack(tmp_path):
    # The same (state, segment) as one of the matrix's cells: the finding links that cell's page,
    # with its verdict on the model's stack, so a reader sees whether the case agrees.
    cell = "cases/matrix/test_cells.py::test_cell[LISTEN-ACK]"
    doc = small_doc()
    doc["results"] += [record(cell, "lwip", "EXPECTED"), record(cell, "linux", "PASS")]
    out = tmp_path / "site"
    assert main([write(tmp_path / "results.json", doc), "--out", str(out), "--models", learned_dir(tmp_path)]) == 0
    lwip = section(text_of(out / "models.html"), "m-lwip-server")
    finding = lwip[lwip.index('<tr class="forbidden">'):]
    finding = finding[:finding.index("</tr>")]
    href = re.search(r'href="(cases/[^"]+\.html)"', finding)
    assert href and (out / href.group(1)).is_file(), finding
    assert cell.split("::")[1] in text_of(out / href.group(1))
    assert 'class="chip v-EXPECTED"' in finding and "LISTEN-ACK" in finding
    assert "1 of them the matrix's own cell shows too" in lwip


def test_a_finding_whose_matrix_cell_passes_is_marked_as_a_disagreement(tmp_path):
    cell = "cases/matrix/test_cells.py::test_cell[LISTEN-ACK]"
    doc = small_doc()
    doc["results"] += [record(cell, "lwip", "PASS")]
    out = tmp_path / "site"
    assert main([write(tmp_path / "results.json", doc), "--out", str(out), "--models", learned_dir(tmp_path)]) == 0
    lwip = section(text_of(out / "models.html"), "m-lwip-server")
    assert 'class="chip v-PASS"' in lwip and "the model and the cell disagree" in lwip
    assert "this is the initial state" in lwip  # s0


def test_a_finding_without_a_matrix_cell_in_the_results_says_so(tmp_path):
    out = tmp_path / "site"
    assert main([write(tmp_path / "results.json", small_doc()), "--out", str(out), "--models",
                 learned_dir(tmp_path)]) == 0
    lwip = section(text_of(out / "models.html"), "m-lwip-server")
    assert "not in these results" in lwip
