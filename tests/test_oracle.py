"""The matrix's table (harness/oracle.py): every row can be read against the catalogue and the RFC."""
import os
import re

import pytest

from harness import oracle
from harness.requirements import lookup, rows

SEG = {"SEG.SEQ": 1000, "SEG.ACK": 2000, "SEG.LEN": 10, "SND.UNA": 2000, "SND.NXT": 2001, "RCV.NXT": 1000,
       "RCV.WND": 65535, "ISS": 1999}


@pytest.mark.parametrize("row", oracle.TABLE, ids=lambda r: r.id)
def test_row_names_a_catalogue_row_that_cites_its_requirement_and_a_step_of_3_10_7(row):
    catalogue_row = row.catalogue_row or lookup(row.requirement).row
    assert row.requirement in rows()[catalogue_row].ids, f"{row.id}: {catalogue_row} does not cite {row.requirement}"
    assert re.match(r"§3\.10\.7\.[1-4] (first|second|third|fourth|fifth|sixth|seventh|eighth)$", row.step), row.step
    assert row.rfc.startswith("§3.10.7") and '"' in row.rfc, f"{row.id}: the sentence it checks is not quoted"
    assert row.answers and len({a.name for a in row.answers}) == len(row.answers), "answers need distinct names"
    for reply in row.answers:
        for expr in (reply.seq, reply.ack, reply.follow):
            if expr is not None:
                oracle.value(expr, SEG)  # an unknown term is a KeyError
    oracle.value(row.seg_ack, SEG)
    oracle.value(row.follow_at, SEG)


def test_ids_are_unique_and_readable():
    ids = [row.id for row in oracle.TABLE]
    assert len(ids) == len(set(ids))
    assert "ESTABLISHED-RST-inside" in ids and "SYN-SENT-ACK-ack_unsent" in ids
    assert all(re.fullmatch(r"[A-Za-z0-9+_-]+", i) for i in ids)


def test_value_reads_rfc_expressions():
    assert oracle.value("SEG.SEQ+SEG.LEN", SEG) == 1010
    assert oracle.value("RCV.NXT-1", SEG) == 999
    assert oracle.value("SND.UNA-1", {"SND.UNA": 0}) == (1 << 32) - 1  # modulo 2**32
    with pytest.raises(KeyError):
        oracle.value("SND.WND", SEG)


RFC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "rfc")


def _rfc_text(number: int) -> str:
    with open(os.path.join(RFC_DIR, f"rfc{number}.txt"), encoding="utf-8") as f:
        text = " ".join(f.read().split())
    return re.sub(r"(\w)- (\w)", r"\1-\2", text)  # a word hyphenated across a line break


def test_every_quoted_sentence_is_in_the_rfc_it_cites():
    texts = {n: _rfc_text(n) for n in (9293, 5961, 1337)}
    missing = []
    for row in oracle.TABLE:
        for m in re.finditer(r'"([^"]+)"', row.rfc):
            # A quote is RFC 9293's unless it is introduced as another RFC's: `RFC 1337 §3 (F1): "..."`.
            named = re.search(r"RFC (5961|1337) §[\d.]+(?: \(\w+\))?: $", row.rfc[:m.start()])
            text = texts[int(named.group(1))] if named else texts[9293]
            for piece in (p.strip(" .,") for p in m.group(1).split("...")):
                plain = " ".join(piece.replace("'", '"').split())
                if len(plain) > 12 and plain not in text.replace("'", '"'):
                    missing.append(f"{row.id}: {piece}")
    assert not missing, "\n".join(sorted(set(missing)))
