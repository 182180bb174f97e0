"""AALpy's view of a stack: membership queries answered from a cache or live, contradictions
settled by a majority of repeated runs, and an equivalence oracle that runs its test words in
parallel lanes.

The cache is prefix-closed (every prefix of a word answered live is known), so a word answered
once is never run again. When a live answer contradicts what is known, the shortest contradicted
prefix is run again until one answer holds a clear majority; if the majority overturns what the
learner was already told, learning restarts from the corrected cache (`Relearn`), which costs
little: everything else is still cached. A word that keeps answering differently is reported by
name (`NonDeterministic`).
"""
import collections
import random

from aalpy.base import SUL, Oracle

from .lanes import LearnError


class Relearn(Exception):
    """The cache was corrected by a majority: the learner must start again from it."""


class NonDeterministic(LearnError):
    def __init__(self, word, counts: collections.Counter):
        self.word, self.counts = tuple(word), counts
        seen = ", ".join(f"{' '.join(o)} ({n}×)" for o, n in counts.most_common())
        super().__init__(f"the stack answers the input sequence {' '.join(word)} in more than one way: {seen}; "
                         "no answer holds a majority, so the stack is not deterministic under this mapper "
                         "(a timer of its own, or a setting the learning needs)")


class StackSUL(SUL):
    """`run(words) -> outputs per word` is the live system (harness/learn/lanes.py LiveSystem.run,
    or a simulation in the tests)."""

    def __init__(self, run, lanes: int = 1, votes: int = 5):
        super().__init__()
        self._run = run
        self.lanes = lanes
        self.votes = votes       # runs of a contradicted prefix before the majority is taken
        self.cache: dict[tuple, str] = {}
        self.live_queries = 0
        self.live_steps = 0
        self.contradictions: list[dict] = []  # each settled one: word, answers and counts
        self.overturned: collections.Counter = collections.Counter()

    # AALpy calls query() itself; pre/post/step are the per-letter interface it would use otherwise.
    def pre(self):
        pass

    def post(self):
        pass

    def step(self, letter):
        raise NotImplementedError("words are run whole (query), in lanes")

    def cached(self, word: tuple) -> list[str] | None:
        out = []
        for i in range(1, len(word) + 1):
            o = self.cache.get(word[:i])
            if o is None:
                return None
            out.append(o)
        return out

    def query(self, word) -> list:
        word = tuple(word)
        if not word:
            return [None]
        self.num_queries += 1
        self.num_steps += len(word)
        known = self.cached(word)
        if known is not None:
            self.num_cached_queries += 1
            return known
        return self.run_many([word])[0]

    def run_many(self, words: list[tuple]) -> list[list[str]]:
        """Outputs of each word: from the cache, or live in batches of `lanes`."""
        results: dict[int, list[str]] = {}
        todo = []
        for k, word in enumerate(words):
            known = self.cached(word)
            if known is not None:
                results[k] = known
            else:
                todo.append(k)
        for start in range(0, len(todo), self.lanes):
            batch = todo[start:start + self.lanes]
            outs = self._live([words[k] for k in batch])
            for k, out in zip(batch, outs):
                results[k] = self._store(words[k], out)
        return [results[k] for k in range(len(words))]

    def _live(self, words) -> list[list[str]]:
        self.live_queries += len(words)
        self.live_steps += sum(len(w) for w in words)
        return self._run(list(words))

    def _store(self, word: tuple, out: list[str]) -> list[str]:
        for i, o in enumerate(out):
            prefix = word[:i + 1]
            known = self.cache.get(prefix)
            if known is None:
                self.cache[prefix] = o
            elif known != o:
                return self._settle(word, out, i)
        return out

    def _settle(self, word: tuple, out: list[str], i: int) -> list[str]:
        """The answer to word[:i+1] contradicts the cache: a majority of fresh runs decides."""
        prefix = word[:i + 1]
        told = tuple(self.cached(prefix))
        counts = collections.Counter({told: 1, tuple(out[:i + 1]): 1})
        for _ in range(self.votes):
            counts[tuple(self._live([prefix])[0])] += 1
            best, n = counts.most_common(1)[0]
            if n >= 3 and 3 * n >= 2 * sum(counts.values()):  # a clear majority: two thirds
                break
        else:
            raise NonDeterministic(prefix, counts)
        self.contradictions.append({"word": list(prefix), "answers": [[list(o), n] for o, n in counts.most_common()]})
        if best != told:
            self.overturned[prefix] += 1
            if self.overturned[prefix] > 1:  # overturned, then overturned again: no stable answer
                raise NonDeterministic(prefix, counts)
            # The learner was told something a majority now overturns: forget every word through
            # the prefix, keep the majority, and learn again from the cache.
            for key in [k for k in self.cache if k[:len(prefix)] == prefix or prefix[:len(k)] == k]:
                del self.cache[key]
            for j in range(len(prefix)):
                self.cache[prefix[:j + 1]] = best[j]
            raise Relearn(prefix)
        # The new run was the odd one out: run the whole word again until it agrees.
        for _ in range(self.votes):
            again = self._live([word])[0]
            if tuple(again[:i + 1]) == told:
                return self._store(word, again)
        raise NonDeterministic(prefix, counts)


class LaneOracle(Oracle):
    """AALpy's StatePrefix oracle, with its test words run in parallel lanes: from every state's
    access sequence, `walks` random walks of `length` inputs; the shortest failing prefix of any
    mismatch is the counterexample. Seeded, so an effort names a reproducible set of tests."""

    def __init__(self, alphabet, sul: StackSUL, walks: int, length: int, seed: int = 0):
        super().__init__(alphabet, sul)
        self.walks, self.length = walks, length
        self.rng = random.Random(seed)

    def find_cex(self, hypothesis):
        hypothesis.compute_prefixes()
        words = []
        for state in hypothesis.states:
            prefix = tuple(state.prefix)
            for _ in range(self.walks):
                words.append(prefix + tuple(self.rng.choice(self.alphabet) for _ in range(self.length)))
        self.num_queries += len(words)
        self.num_steps += sum(len(w) for w in words)
        outs = self.sul.run_many(words)
        best = None
        for word, out in zip(words, outs):
            hypothesis.reset_to_initial()
            for i, letter in enumerate(word):
                if hypothesis.step(letter) != out[i]:
                    if best is None or i + 1 < len(best):
                        best = word[:i + 1]
                    break
        return list(best) if best is not None else None
