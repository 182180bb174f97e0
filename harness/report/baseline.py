"""What changed since a baseline document: per case x target, the verdict and the choices."""
from dataclasses import dataclass, field


@dataclass
class Change:
    new: bool = False                 # the pair is not in the baseline at all
    was_verdict: str | None = None    # set when the verdict changed
    was_choices: dict | None = None   # set when the choices changed (the old ones, maybe {})
    changed_keys: list = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.was_verdict is not None or self.was_choices is not None


@dataclass
class Comparison:
    changes: dict            # (case, target) -> Change, only for pairs that changed or are new
    gone: list               # (case, target) in the baseline but not in the document
    baseline: dict           # the baseline's run facts (started, commit) for the page

    @property
    def changed(self) -> int:
        return sum(1 for c in self.changes.values() if c.changed)

    @property
    def new(self) -> int:
        return sum(1 for c in self.changes.values() if c.new)


def _by_pair(doc: dict) -> dict:
    return {(r["case"], r["target"]): r for r in doc["results"]}


def compare(doc: dict, baseline: dict) -> Comparison:
    old = _by_pair(baseline)
    now = _by_pair(doc)
    changes = {}
    for pair, record in now.items():
        before = old.get(pair)
        if before is None:
            changes[pair] = Change(new=True)
            continue
        change = Change()
        if before["verdict"] != record["verdict"]:
            change.was_verdict = before["verdict"]
        was, is_ = before.get("choices") or {}, record.get("choices") or {}
        if was != is_:
            change.was_choices = was
            change.changed_keys = sorted(k for k in set(was) | set(is_) if was.get(k) != is_.get(k))
        if change.changed:
            changes[pair] = change
    gone = sorted(pair for pair in old if pair not in now)
    facts = {"started": baseline["started"], "commit": baseline["synfin"].get("commit"),
             "version": baseline["synfin"].get("version")}
    return Comparison(changes, gone, facts)
