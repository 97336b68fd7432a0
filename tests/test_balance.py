"""The load balancer's control plane (``anyedge.balance``): bucket tables, the flow hash,
weights from CPU and the Maglev baseline.

Every change to a table is checked against what it promises (:func:`check_change`):
counts are the largest-remainder targets, within one bucket of each server's quota;
exactly the buckets the new targets require move; a moved bucket keeps its old first
hop as second hop; an unmoved one keeps its second hop; no bucket names a removed
server; the old table is untouched and the same change gives the same table.
Hypothesis draws weights, table sizes and series of 50 changes.  Then a simulation of
1,000 connections through adds, drains and removals: with daisy chaining none breaks;
without the second hop exactly the flows of moved buckets would.
"""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anyedge.balance import (
    NONE,
    ServerState,
    Table,
    apportion,
    flow_hash,
    fold6,
    jhash_3words,
    maglev,
    weights_from_cpu,
)

ROOT = Path(__file__).resolve().parent.parent
REMOVED = ServerState.REMOVED

# ---- what every change must do ----------------------------------------------------------


def quota(table: Table) -> np.ndarray:
    eff = table.effective
    return table.buckets * eff / eff.sum()


def check_table(t: Table) -> None:
    """Invariants of any table on its own."""
    n, counts = t.servers, t.counts()
    assert t.first.dtype == t.second.dtype == np.int32
    assert t.first.min() >= 0
    assert t.first.max() < n
    assert t.second.min() >= NONE
    assert t.second.max() < n
    assert counts.sum() == t.buckets
    assert np.all(np.abs(counts - quota(t)) < 1 + 1e-9), "a count is a bucket off its quota"
    assert np.all(counts[t.effective == 0] == 0), "a draining, removed or 0-weight server"
    gone = np.flatnonzero(t.state == REMOVED)
    assert not np.isin(t.first, gone).any()
    assert not np.isin(t.second, gone).any(), "a removed server is still a second hop"
    named = t.second >= 0
    assert not np.any(t.second[named] == t.first[named])
    assert not t.first.flags.writeable
    assert not t.second.flags.writeable


def check_change(old: Table, new: Table) -> None:
    """``new`` is what ``old`` must become: fewest moves, daisy-chained second hops."""
    check_table(new)
    n = new.servers
    old_counts = np.bincount(old.first, minlength=n)
    # the new counts are the largest-remainder targets (ties to what a server holds)
    assert np.array_equal(new.counts(), apportion(new.effective, new.buckets, old_counts))
    moved = old.first != new.first
    need = np.maximum(old_counts - new.counts(), 0).sum()
    assert moved.sum() == need, "more buckets moved than the new targets need"
    removed = new.state == REMOVED
    was = old.first[moved]
    carried = np.where(removed[was], old.second[moved], was)
    carried[(carried >= 0) & removed[np.maximum(carried, 0)]] = NONE
    carried[carried == new.first[moved]] = NONE
    assert np.array_equal(new.second[moved], carried), "a moved bucket lost its old owner"
    kept = old.second[~moved].copy()
    kept[(kept >= 0) & removed[np.maximum(kept, 0)]] = NONE
    assert np.array_equal(new.second[~moved], kept), "an unmoved bucket's second hop changed"


@dataclass(frozen=True)
class Change:
    """One operator action on a table; ``server`` is taken modulo the servers."""

    kind: str  # add, drain, activate, remove, reweight
    server: int
    weight: float

    def apply(self, t: Table) -> Table:
        s = self.server % t.servers
        if self.kind == "add":
            return t.add(self.weight)
        if self.kind == "reweight":
            return t.reweight(s, self.weight)
        return {"drain": t.drain, "activate": t.activate, "remove": t.remove}[self.kind](s)

    def leaves_no_server(self, t: Table) -> bool:
        """Whether the change would leave no active server with weight (refused)."""
        w, s = t.weight.copy(), t.state.copy()
        i = self.server % t.servers
        if self.kind == "add":
            w, s = np.append(w, self.weight), np.append(s, 0)
        elif self.kind == "reweight":
            w[i] = self.weight
        else:
            s[i] = {"drain": 1, "activate": 0, "remove": 2}[self.kind]
        return not np.where(s == 0, w, 0.0).sum() > 0


weights_st = st.one_of(
    st.integers(0, 4).map(float),  # ties, zeros
    st.floats(0.0, 100.0, allow_nan=False, allow_infinity=False),
)
weight_lists = st.lists(weights_st, min_size=1, max_size=12).filter(lambda w: sum(w) > 0)
bucket_sizes = st.sampled_from([1, 2, 16, 64, 256, 1024])
changes = st.builds(
    Change,
    st.sampled_from(["add", "drain", "activate", "remove", "reweight"]),
    st.integers(0, 1_000),
    weights_st,
)


def apply_checked(t: Table, c: Change) -> Table:
    """Apply a change and check it (a refused change leaves the table as it was)."""
    before = (t.first.copy(), t.second.copy())
    if c.leaves_no_server(t):
        with pytest.raises(ValueError, match="no active server"):
            c.apply(t)
        return t
    new = c.apply(t)
    assert np.array_equal(t.first, before[0]), "the old table changed"
    assert np.array_equal(t.second, before[1]), "the old table changed"
    check_change(t, new)
    again = c.apply(t)
    assert np.array_equal(again.first, new.first), "the same change gave another table"
    assert np.array_equal(again.second, new.second)
    return new


# ---- tables: properties -------------------------------------------------------------


@settings(max_examples=300)
@given(weight_lists, bucket_sizes, st.integers(0, 2**32 - 1))
def test_a_built_table_is_within_one_bucket_of_each_quota(
    weights: list[float], buckets: int, seed: int
) -> None:
    t = Table.build(weights, buckets=buckets, seed=seed)
    check_table(t)
    assert np.all(t.second == NONE)
    assert np.array_equal(t.counts(), apportion(weights, buckets))


@settings(max_examples=300)
@given(weight_lists, bucket_sizes, changes)
def test_one_change_moves_the_fewest_buckets_and_chains_the_old_owner(
    weights: list[float], buckets: int, change: Change
) -> None:
    apply_checked(Table.build(weights, buckets=buckets), change)


@settings(max_examples=40)
@given(weight_lists, st.sampled_from([64, 1024]), st.lists(changes, min_size=50, max_size=50))
def test_fifty_consecutive_changes_keep_every_invariant(
    weights: list[float], buckets: int, series: list[Change]
) -> None:
    t = Table.build(weights, buckets=buckets, seed=7)
    for c in series:
        t = apply_checked(t, c)


@settings(max_examples=50)
@given(weight_lists, st.lists(changes, min_size=1, max_size=10), st.integers(0, 2**32 - 1))
def test_same_inputs_give_the_same_table(
    weights: list[float], series: list[Change], seed: int
) -> None:
    def run() -> Table:
        t = Table.build(weights, buckets=256, seed=seed)
        for c in series:
            if not c.leaves_no_server(t):
                t = c.apply(t)
        return t

    a, b = run(), run()
    assert np.array_equal(a.first, b.first)
    assert np.array_equal(a.second, b.second)


def test_the_seed_picks_the_buckets_not_the_counts() -> None:
    a = Table.build([1.0, 2.0, 3.0], seed=1)
    b = Table.build([1.0, 2.0, 3.0], seed=2)
    assert np.array_equal(a.counts(), b.counts())
    assert 0.5 < (a.first != b.first).mean() < 0.8  # about 1 - (1/36 + 4/36 + 9/36)


def test_what_moves_is_spread_over_the_hash_space() -> None:
    """Adding a ninth server to eight takes a ninth of every server's buckets, from all
    over the hash space: each sixteenth of it loses close to its share, and the longest
    run of consecutive moved buckets is short."""
    t = Table.build(np.ones(8))
    moved = t.first != t.add(1.0).first
    per_slice = moved.reshape(16, -1).sum(axis=1)
    expected = moved.sum() / 16
    assert moved.sum() == 7281  # what the new server takes: seven keep 7,282, one 7,281
    assert np.all(np.abs(per_slice - expected) < 5 * np.sqrt(expected))
    edges = np.diff(np.concatenate([[0], moved.astype(np.int8), [0]]))
    longest = (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max()
    assert longest < 10
    for server in range(8):  # each server gives up buckets all over its own range too
        mine = t.first == server
        assert np.ptp(np.flatnonzero(moved & mine)) > 0.9 * t.buckets


def test_drain_then_remove() -> None:
    t = Table.build([1.0, 1.0, 1.0, 1.0])
    d = t.drain(1)
    assert d.counts()[1] == 0
    assert np.all(d.second[t.first == 1] == 1), "the drained server is its buckets' second hop"
    assert d.state[1] == ServerState.DRAINING
    r = d.remove(1)
    assert np.array_equal(r.first, d.first), "removing a drained server moves nothing"
    assert not np.any(r.second == 1)
    assert repr(d) == (
        "Table(buckets=65536, servers=4: 3 active, 1 draining, 0 removed; 16384 second hops)"
    )
    back = d.activate(1)
    assert back.counts()[1] == 16_384
    assert np.array_equal(d.settled().first, d.first)
    assert np.all(d.settled().second == NONE)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="power of two"):
        Table.build([1.0], buckets=1000)
    with pytest.raises(ValueError, match="non-negative"):
        Table.build([1.0, -1.0])
    with pytest.raises(ValueError, match="non-negative"):
        Table.build([1.0, float("nan")])
    with pytest.raises(ValueError, match="no active server"):
        Table.build([0.0, 0.0])
    with pytest.raises(ValueError, match="overflows"):
        Table.build([1e308, 1e308])
    t = Table.build([1.0, 1.0])
    with pytest.raises(ValueError, match="no active server"):
        t.drain(0).drain(1)
    with pytest.raises(IndexError):
        t.remove(2)
    with pytest.raises(ValueError, match="keep their index"):
        t.change(weight=[1.0])
    with pytest.raises(TypeError):
        t.lookup(np.array([0.5]))


# ---- lookup and the flow hash -------------------------------------------------------


def test_lookup_takes_the_low_bits_of_the_hash() -> None:
    t = Table.build([1.0, 2.0, 3.0], buckets=1024).add(1.0)
    h = np.array([0, 1023, 1024, 0xFFFF_FFFF, 0x1234_5678], dtype=np.uint32)
    first, second = t.lookup(h)
    assert np.array_equal(first, t.first[[0, 1023, 0, 1023, 0x278]])
    assert np.array_equal(second, t.second[[0, 1023, 0, 1023, 0x278]])


def _jhash_3words_scalar(a: int, b: int, c: int, initval: int) -> int:
    """The kernel's C, line for line, on Python integers."""
    m = 0xFFFF_FFFF

    def rol(x: int, k: int) -> int:
        return ((x << k) | (x >> (32 - k))) & m

    iv = (initval + 0xDEADBEEF + 12) & m
    a, b, c = (a + iv) & m, (b + iv) & m, (c + iv) & m
    c ^= b
    c = (c - rol(b, 14)) & m
    a ^= c
    a = (a - rol(c, 11)) & m
    b ^= a
    b = (b - rol(a, 25)) & m
    c ^= b
    c = (c - rol(b, 16)) & m
    a ^= c
    a = (a - rol(c, 4)) & m
    b ^= a
    b = (b - rol(a, 14)) & m
    c ^= b
    c = (c - rol(b, 24)) & m
    return c


def test_flow_hash_is_the_kernels_jhash() -> None:
    """Vectors from include/linux/jhash.h's jhash_3words compiled with gcc: 192.0.2.1:
    40000 → 198.51.100.7:443 TCP and 203.0.113.9:5353 → 198.51.100.7:53 UDP."""
    h = flow_hash(
        [0xC0000201, 0xCB007109], [0xC6336407, 0xC6336407], [40000, 5353], [443, 53], [6, 17]
    )
    assert h.dtype == np.uint32
    assert h.tolist() == [3197784169, 2701927846]
    assert flow_hash(0xC0000201, 0xC6336407, 40000, 443, 6, seed=12345).tolist() == [3211108249]
    assert jhash_3words(0, 0, 0, 0).tolist() == [459859287]
    assert jhash_3words(*[0xFFFF_FFFF] * 4).tolist() == [3275992843]


u32s = st.integers(0, 2**32 - 1)


@settings(max_examples=200)
@given(st.lists(st.tuples(u32s, u32s, u32s, u32s), min_size=1, max_size=20))
def test_vectorised_jhash_equals_the_c_line_for_line(words: list[tuple[int, ...]]) -> None:
    a, b, c, iv = (np.array(col, dtype=np.uint32) for col in zip(*words, strict=True))
    assert jhash_3words(a, b, c, iv).tolist() == [_jhash_3words_scalar(*w) for w in words]


def test_flow_hash_spreads_flows_evenly_and_folds_ipv6() -> None:
    rng = np.random.default_rng(3)
    n = 200_000
    h = flow_hash(rng.integers(0, 2**32, n), 0xC6336407, rng.integers(1024, 65536, n), 443, 6)
    per_bucket = np.bincount(h & 255, minlength=256)
    assert np.abs(per_bucket - n / 256).max() < 5 * np.sqrt(n / 256)
    six = np.array([[0x20010DB8, 0, 0, 1], [0x20010DB8, 0, 0, 2]], dtype=np.uint32)
    assert fold6(six).tolist() == [0x20010DB8 ^ 1, 0x20010DB8 ^ 2]
    with pytest.raises(ValueError, match="ports"):
        flow_hash(1, 2, 70_000, 443, 6)


# ---- connections survive changes ----------------------------------------------------


def test_a_thousand_connections_survive_adds_drains_and_removals() -> None:
    """1,000 flows on 4 servers.  Before each change every flow is on its bucket's first
    hop (connections older than the previous change have ended); after it, a flow
    survives if its server is its bucket's first or second hop.  With daisy chaining
    none breaks; without a second hop a flow breaks exactly when its bucket moved, and
    the share of broken flows is the share of moved buckets (within sampling error)."""
    rng = np.random.default_rng(2026)
    n = 1_000
    src = rng.integers(0, 2**32, n, dtype=np.uint64)
    sport = rng.integers(1024, 65536, n)
    h = flow_hash(src, 0xC6336407, sport, 443, 6)
    table = Table.build([1.0, 1.0, 1.0, 1.0])
    steps = [
        ("add server 4", lambda t: t.add(1.0)),
        ("add server 5, twice as big", lambda t: t.add(2.0)),
        ("drain server 1", lambda t: t.drain(1)),
        ("remove server 1", lambda t: t.remove(1)),
        ("reweight server 0 to 3", lambda t: t.reweight(0, 3.0)),
        ("drain server 5", lambda t: t.drain(5)),
        ("remove server 5", lambda t: t.remove(5)),
        ("add server 6", lambda t: t.add(1.0)),
    ]
    moved_any = 0
    for name, step in steps:
        server, _ = table.lookup(h)  # where each connection is
        new = step(table)
        first, second = new.lookup(h)
        broken = ~((first == server) | (second == server))
        assert broken.sum() == 0, name
        moved = new.first != table.first
        broken_without_second = first != server
        assert np.array_equal(broken_without_second, moved[table.bucket(h)]), name
        share, expect = broken_without_second.mean(), moved.mean()
        assert abs(share - expect) <= 4 * np.sqrt(expect * (1 - expect) / n) + 1 / n, name
        old_counts = np.bincount(table.first, minlength=new.servers)
        assert moved.sum() == np.maximum(old_counts - new.counts(), 0).sum(), name
        moved_any += int(broken_without_second.sum())
        table = new
    assert moved_any > 300  # the changes moved real traffic


def test_a_failed_server_breaks_only_its_own_connections() -> None:
    rng = np.random.default_rng(5)
    h = rng.integers(0, 2**32, 1_000).astype(np.uint32)
    table = Table.build([1.0, 1.0, 1.0, 1.0]).add(1.0)  # server 4 is new: second hops exist
    server, _ = table.lookup(h)
    new = table.remove(2)  # fails without draining
    first, second = new.lookup(h)
    broken = ~((first == server) | (second == server))
    assert np.array_equal(broken, server == 2)
    assert broken.sum() > 100


# ---- weights from CPU ---------------------------------------------------------------


def test_weights_from_cpu_even_out_utilisation() -> None:
    """Servers of different speed under one load: utilisation = load × share × cost.
    Halving the imbalance each step (damping 0.5), 30 steps leave them equal."""
    cost = np.array([1.0, 1.0, 1.5, 0.7, 2.0])  # per unit of share, at capacity 1,000
    capacity = np.full(5, 1_000.0)
    w = np.ones(5)
    for _ in range(30):
        cpu = 2_000.0 * w / w.sum() * cost
        new = weights_from_cpu(w, cpu, capacity, damping=0.5)
        assert new.sum() == pytest.approx(w.sum())
        w = new
    u = 2.0 * w / w.sum() * cost
    assert np.ptp(u) < 1e-6
    assert np.argsort(w).tolist() == np.argsort(-cost).tolist()  # slower, less weight


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.floats(0.1, 10.0), st.floats(0.2, 5.0), st.floats(100.0, 10_000.0)),
        min_size=1,
        max_size=30,
    ),
    st.floats(0.05, 1.0),
)
def test_weights_from_cpu_move_each_server_toward_the_even_share(
    servers: list[tuple[float, float, float]], damping: float
) -> None:
    """Under the linear model (CPU time = load × share × cost), one undamped step makes
    every utilisation equal; a damped step goes ``damping`` of the way; hotter servers
    always lose weight relative to cooler ones; the total stays."""
    w, cost, capacity = (np.array(col) for col in zip(*servers, strict=True))
    load = 0.5 * capacity.sum()
    cpu = load * w / w.sum() * cost
    full = weights_from_cpu(w, cpu, capacity, damping=1.0, floor=1e-9)
    u = load * full / full.sum() * cost / capacity
    assert np.ptp(u) <= 1e-9 * u.max()
    assert full.sum() == pytest.approx(w.sum())
    step = weights_from_cpu(w, cpu, capacity, damping=damping, floor=1e-9)
    assert step == pytest.approx((1 - damping) * w + damping * full)
    util = cpu / capacity
    ratio = step / w
    hotter = util[:, None] > util[None, :] * (1 + 1e-9)
    mine, theirs = np.broadcast_arrays(ratio[:, None], ratio[None, :])
    assert np.all(mine[hotter] < theirs[hotter] * (1 + 1e-9))


def test_weights_from_cpu_step_by_step() -> None:
    w = np.array([1.0, 1.0, 2.0, 0.0])
    cpu = np.array([800.0, 400.0, 800.0, 0.0])  # 80 %, 40 %, 80 %, draining
    cap = np.full(4, 1_000.0)
    new = weights_from_cpu(w, cpu, cap, damping=1.0)
    # ideal ∝ w / u = 1.25, 2.5, 2.5, 0 → scaled to a total of 4
    assert new.tolist() == pytest.approx([4 * 1.25 / 6.25, 4 * 2.5 / 6.25, 4 * 2.5 / 6.25, 0])
    half = weights_from_cpu(w, cpu, cap, damping=0.5)
    assert half.tolist() == pytest.approx((0.5 * w + 0.5 * new).tolist())
    even = weights_from_cpu(w, np.array([500.0, 500.0, 1000.0, 0.0]), np.array([1e3, 1e3, 2e3, 1]))
    assert even.tolist() == pytest.approx(w.tolist())  # even already: nothing changes
    idle = weights_from_cpu([1.0, 1.0], [0.0, 500.0], [1e3, 1e3], damping=1.0, floor=0.1)
    assert idle.tolist() == pytest.approx([2 * 10 / 12, 2 * 2 / 12])  # the floor bounds it
    with pytest.raises(ValueError, match="damping"):
        weights_from_cpu(w, cpu, cap, damping=0.0)
    with pytest.raises(ValueError, match="positive"):
        weights_from_cpu(w, cpu, np.zeros(4))


def test_a_table_follows_weights_from_cpu() -> None:
    t = Table.build(np.ones(4))
    w = weights_from_cpu(t.weight, np.array([900.0, 600.0, 600.0, 600.0]), np.full(4, 1e3))
    new = t.change(weight=w)
    check_change(t, new)
    assert new.counts()[0] < 16_384 < new.counts()[1]


# ---- Maglev -------------------------------------------------------------------------


def test_maglev_reproduces_the_papers_example() -> None:
    """Table 1 of the Maglev paper: M = 7, B0 (offset 3, skip 4), B1 (0, 2), B2 (3, 1);
    lookup table B1 B0 B1 B0 B2 B2 B0, and after B1 goes B0 B0 B0 B0 B2 B2 B2."""
    assert maglev.populate([3, 0, 3], [4, 2, 1], 7).tolist() == [1, 0, 1, 0, 2, 2, 0]
    after = np.array([0, 2])[maglev.populate([3, 3], [4, 1], 7)]
    assert after.tolist() == [0, 0, 0, 0, 2, 2, 2]


def test_maglev_balances_by_turns_and_moves_more_than_it_must() -> None:
    names = [f"server-{i}" for i in range(100)]
    m = maglev.table_size(len(names), 20)
    assert m == 2003
    assert maglev.is_prime(m)
    entry = maglev.build(names, m)
    counts = np.bincount(entry, minlength=100)
    assert counts.min() >= 19
    assert counts.max() <= 21
    w = np.ones(100)
    w[:10] = 3.0
    heavy = np.bincount(maglev.build(names, m, w.tolist()), minlength=100)
    assert heavy[:10].mean() == pytest.approx(3 * heavy[10:].mean(), rel=0.05)
    without = np.array([i for i in range(100) if i != 7])[maglev.build(names[:7] + names[8:], m)]
    changed = int((entry != without).sum())
    assert changed > (entry == 7).sum()  # Maglev moves more than the removed server had
    t = Table.build(np.ones(100), buckets=2048)
    assert (t.remove(7).first != t.first).sum() == t.counts()[7]  # anyedge: exactly that
    h = np.array([0, 1, 2003, 4007], dtype=np.uint32)
    assert maglev.lookup(entry, h).tolist() == entry[[0, 1, 0, 1]].tolist()
    with pytest.raises(ValueError, match="prime"):
        maglev.build(names, 2000)


# ---- the documentation ----------------------------------------------------------------


def test_balance_doc_example_runs_and_prints_what_it_says() -> None:
    text = (ROOT / "docs" / "balance.md").read_text(encoding="utf-8")
    (code,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (shown,) = re.findall(r"It prints:\n\n```\n(.*?)```", text, flags=re.S)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/balance.md", "exec"), {})
    assert out.getvalue() == shown
