"""Placement: which sources to put on which of N hosts so that every host
fits its RAM after KSM and the fleet saves the most.

A host's memory after KSM is its sources' pages less the pages KSM frees
there, pages_sharing + ksm_zero_pages, of the settled counters of what
the host holds (counts.group_summary with the chosen use_zero_pages).
Co-locating never frees less (a content's kept pages, ceil(n / max_page_sharing),
grow slower than its copies), and a host's memory only grows as sources
join it: a partial plan that overflows stays overflowing.

Evaluator computes a host's saving in O(pairs of the signature table):
the host's copies per signature, grouped by value; a content's saving
depends only on its copies, so saving = sum over the copy values v of
(contents with v copies) x (pages_sharing of one content of v copies),
the latter from settled_counters itself, memoised; the zero pages are
one more settled_counters call.  tests/fleet check it equal to
counts.group_summary + settled_counters for random groups.  Host results
are memoised by their set of sources.

search(): a plan is compared by (total overflow, -total saving): first
fit, then save.  Greedy (largest source first, onto the host where it
adds the most saving and still fits, one empty host tried at most), then
local search (the best improving move of one source or swap of two,
until none improves), then the same local search from `restarts` random
plans drawn with numpy's generator seeded by `seed`: deterministic for a
seed.  brute_force() enumerates every plan up to host renaming (set
partitions into at most N blocks): the tests hold search within 2% of it.
"""
from dataclasses import dataclass

import numpy as np

from .counts import ContentSummary, group_copies, settled_counters

RESTARTS = 8


class Evaluator:
    """Savings and memory of groups of sources (see the module doc)."""

    def __init__(self, table, pages, zero_pages, knobs, use_zero_pages=None):
        self.table = table
        self.pages = np.asarray(pages, np.int64)
        self.zero_pages = np.asarray(zero_pages, np.int64)
        self.mps = knobs["max_page_sharing"]
        self.uzp = bool(knobs["use_zero_pages"] if use_zero_pages is None else use_zero_pages)
        self._per_value = {}
        self._per_zero = {}
        self._groups = {}

    def _counters(self, summary):
        c = settled_counters(summary, max_page_sharing=self.mps, use_zero_pages=self.uzp)
        return int(c["pages_sharing"]) + int(c["ksm_zero_pages"])

    def _value_saving(self, values):
        missing = [int(v) for v in values if int(v) not in self._per_value]
        for v in missing:
            self._per_value[v] = self._counters(
                ContentSummary(pages=v, zero_pages=0, copies=np.array([v], np.int64)))
        return np.array([self._per_value[int(v)] for v in values], np.int64)

    def _zero_saving(self, z):
        if z not in self._per_zero:
            self._per_zero[z] = self._counters(
                ContentSummary(pages=z, zero_pages=z, copies=np.zeros(0, np.int64)))
        return self._per_zero[z]

    def group(self, members):
        """(pages, saving) of the sources with members[i] true."""
        members = np.asarray(members, bool)
        key = np.packbits(members).tobytes()
        got = self._groups.get(key)
        if got is None:
            per_row = group_copies(self.table, members)
            held = per_row > 0
            values, inverse = np.unique(per_row[held], return_inverse=True)
            contents = np.bincount(inverse, weights=self.table.mult[held],
                                   minlength=len(values)).astype(np.int64)
            saving = int((contents * self._value_saving(values)).sum())
            saving += self._zero_saving(int(self.zero_pages[members].sum()))
            got = (int(self.pages[members].sum()), saving)
            self._groups[key] = got
        return got

    def plan(self, assign, nhosts, cap):
        """(overflow pages, total saving, [memory after KSM per host])."""
        assign = np.asarray(assign)
        mem, saved = [], 0
        for h in range(nhosts):
            p, s = self.group(assign == h)
            mem.append(p - s)
            saved += s
        return sum(max(0, m - cap) for m in mem), saved, mem


@dataclass
class Plan:
    assign: np.ndarray     # host index of each source
    overflow: int          # pages over cap, summed over hosts (0: it fits)
    saving: int            # pages freed by KSM, all hosts
    memory: list           # memory after KSM per host, pages

    @property
    def fits(self):
        return self.overflow == 0


def _plan(ev, assign, nhosts, cap):
    o, s, m = ev.plan(assign, nhosts, cap)
    return Plan(np.array(assign, np.int64), o, s, m)


def _better(a, b):
    return (a.overflow, -a.saving) < (b.overflow, -b.saving)


def greedy(ev, nhosts, cap):
    n = len(ev.pages)
    assign = np.full(n, -1, np.int64)
    for s in sorted(range(n), key=lambda i: (-ev.pages[i], i)):
        best = None
        used_empty = False
        for h in range(nhosts):
            empty = not np.any(assign == h)
            if empty and used_empty:
                continue
            used_empty |= empty
            before = ev.group(assign == h)
            trial = assign.copy()
            trial[s] = h
            p, sv = ev.group(trial == h)
            key = (max(0, p - sv - cap), -(sv - before[1]), p - sv)
            if best is None or key < best[0]:
                best = (key, h)
        assign[s] = best[1]
    return _plan(ev, assign, nhosts, cap)


def local_search(ev, plan, nhosts, cap):
    """Best-improvement moves and swaps until none improves."""
    n = len(plan.assign)
    while True:
        best = plan
        cur = plan.assign
        for s in range(n):
            for h in range(nhosts):
                if h != cur[s]:
                    trial = cur.copy()
                    trial[s] = h
                    t = _plan(ev, trial, nhosts, cap)
                    if _better(t, best):
                        best = t
            for s2 in range(s + 1, n):
                if cur[s2] != cur[s]:
                    trial = cur.copy()
                    trial[s], trial[s2] = cur[s2], cur[s]
                    t = _plan(ev, trial, nhosts, cap)
                    if _better(t, best):
                        best = t
        if best is plan:
            return plan
        plan = best


def search(ev, nhosts, cap, *, seed=0, restarts=RESTARTS):
    """The best Plan found (see the module doc); may not fit."""
    rng = np.random.default_rng(seed)
    best = local_search(ev, greedy(ev, nhosts, cap), nhosts, cap)
    for _ in range(restarts):
        start = _plan(ev, rng.integers(0, nhosts, len(ev.pages)), nhosts, cap)
        p = local_search(ev, start, nhosts, cap)
        if _better(p, best):
            best = p
    return best


def random_plan(ev, nhosts, cap, *, seed=0):
    """A plan drawn uniformly (numpy generator seeded by seed + 1)."""
    rng = np.random.default_rng(seed + 1)
    return _plan(ev, rng.integers(0, nhosts, len(ev.pages)), nhosts, cap)


def set_partitions(n, k):
    """Every assignment of n items to at most k unlabelled blocks, as
    restricted growth strings (item 0 in block 0, each next item in a
    used block or the first unused one)."""
    a = [0] * n
    def rec(i, used):
        if i == n:
            yield np.array(a, np.int64)
            return
        for b in range(min(used + 1, k)):
            a[i] = b
            yield from rec(i + 1, max(used, b + 1))
    if n:
        yield from rec(1, 1)
    else:
        yield np.zeros(0, np.int64)


def brute_force(ev, nhosts, cap):
    """The optimum Plan by enumeration (small instances only)."""
    best = None
    for assign in set_partitions(len(ev.pages), nhosts):
        p = _plan(ev, assign, nhosts, cap)
        if best is None or _better(p, best):
            best = p
    return best


def lower_bound_shortfall(ev, nhosts, cap):
    """Pages that no plan can avoid overflowing by: all sources on one host
    free the most, so memory(all) - nhosts x cap is a floor on the total
    overflow; and a source that alone exceeds cap overflows by its excess.
    0 when neither rules a plan out."""
    n = len(ev.pages)
    p, s = ev.group(np.ones(n, bool))
    short = max(0, p - s - nhosts * cap)
    for i in range(n):
        only = np.zeros(n, bool)
        only[i] = True
        pi, si = ev.group(only)
        short = max(short, pi - si - cap)
    return short
