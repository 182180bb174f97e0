"""Short words for the matrix: case labels, file-name slugs, and what a stack chose in a few words."""
import hashlib
import re

# Protocol words that read wrongly in lower case once a key's underscores become spaces.
_UPPER = {"rst": "RST", "syn": "SYN", "fin": "FIN", "ack": "ACK", "psh": "PSH", "urg": "URG", "ecn": "ECN",
          "isn": "ISN", "iss": "ISS", "irs": "IRS", "mss": "MSS", "msl": "MSL", "rto": "RTO", "ts": "TS",
          "tcb": "TCB", "sack": "SACK", "rfc": "RFC", "tsval": "TSval", "wnd": "WND"}
_SLUG_MAX = 120


def humanise(key: str) -> str:
    """'rst_in_time_wait' -> 'RST in TIME-WAIT'."""
    words = [_UPPER.get(w.lower(), w) for w in re.split(r"[_\s]+", key.strip()) if w]
    return re.sub(r"\btime wait\b", "TIME-WAIT", " ".join(words), flags=re.IGNORECASE)


def case_label(case: str) -> str:
    """The case's test function as words, with its parameters: 'rst in time wait policy [ack]'."""
    name = case.rsplit("::", 1)[-1]
    name, _, params = name.partition("[")
    name = re.sub(r"^test_", "", name).replace("_", " ")
    return f"{name} [{params}" if params else name


def case_file(case: str) -> str:
    """'cases/time_wait/test_reopen.py::test_x' -> 'time_wait/test_reopen.py'."""
    return re.sub(r"^cases/", "", case.split("::", 1)[0])


def _clean(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "x"


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def slugs(cases) -> dict[str, str]:
    """A file name for every case id, readable and unique (also on case-insensitive file systems):
    a short hash of the id is appended where cleaning or shortening made two ids meet."""
    base = {}
    for case in sorted(set(cases)):
        name = re.sub(r"^cases/", "", case).replace(".py::", "--").replace("::", "--").replace("/", "--")
        slug = _clean(name)
        if len(slug) > _SLUG_MAX:
            slug = slug[:_SLUG_MAX].rstrip("_.-") + "-" + _digest(case)
        base[case] = slug
    seen: dict[str, int] = {}
    for slug in base.values():
        seen[slug.lower()] = seen.get(slug.lower(), 0) + 1
    return {case: (slug if seen[slug.lower()] == 1 else f"{slug}-{_digest(case)}") for case, slug in base.items()}


def target_dir(target: str) -> str:
    """A target name as a directory name (names are short words, but nothing guarantees it)."""
    cleaned = _clean(target)
    return cleaned if cleaned == target else f"{cleaned}-{_digest(target)}"


def _head(value: str) -> str:
    """The text before the first ':' outside parentheses (what follows explains)."""
    depth = 0
    for i, ch in enumerate(value):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == ":" and depth == 0:
            return value[:i].strip()
    return value.strip()


def gist(value: str, limit: int = 34) -> str:
    """A choice's text in a few words: its head, else its head without the parentheses, else cut on a word."""
    head = _head(value)
    if len(head) <= limit:
        return head
    bare = re.sub(r"\s*\([^()]*\)", "", head).strip()
    if 0 < len(bare) <= limit:
        return bare
    cut = bare[:limit].rsplit(" ", 1)[0]
    return (cut if len(cut) > limit // 2 else bare[:limit]).rstrip(" ,;(") + "…"


def fingerprint(values: dict[str, str], limit: int = 3) -> list[dict]:
    """What a stack chose (or measured), as [{'key', 'words', 'full'}], at most `limit` of them."""
    return [{"key": humanise(k), "words": gist(str(v)), "full": f"{humanise(k)}: {v}"}
            for k, v in list(values.items())[:limit]]


def anchor(target: str) -> str:
    """The id of a target's column on a case page."""
    return "t-" + target_dir(target)
