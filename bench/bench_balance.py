"""Benchmark: the load balancer's bucket table beside Maglev's, at 16, 100 and 1,000 servers.

For each size, with equal weights, it builds anyedge's table of 65,536 buckets and
Maglev's lookup table of 65,537 slots (the prime next to 2¹⁶, the same size), then
removes one server — each of eight servers spread over the indices, one at a time —
and counts the buckets whose server changed.  The ideal is that only the removed
server's own buckets move, 1/N of the table; it prints each table's disruption as a
ratio to that 1/N share (averaged over the eight removals) and to the removed server's
own share, then the same for anyedge with unequal weights.  Maglev was measured at
1.05× at 16 servers, 1.56× at 100 and 6.7× at 1,000.

Times are medians.  anyedge's build includes ordering the buckets (a sort of 65,536
numbers); its change is one removal.  Maglev's population is the paper's loop in plain
Python (``anyedge.balance.maglev``): its time is shown, but it is not Maglev's C++
speed, and only its disruption is a fair comparison.  Then the data plane's two steps
for a million flows: hashing the 5-tuples and looking the hashes up.

Targets (issue 14): anyedge's build under 20 ms at 1,000 servers; disruption 1.00× the
ideal.

Run: ``python bench/bench_balance.py``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from anyedge.balance import Table, flow_hash, maglev

BUCKETS = 1 << 16
MAGLEV_SIZE = 65_537
REMOVALS = 8


def timed(fn: Callable[[], Any], repeat: int) -> tuple[Any, float]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def removed_servers(n: int) -> list[int]:
    return sorted({round(k * (n - 1) / (REMOVALS - 1)) for k in range(REMOVALS)})


def anyedge_row(n: int) -> tuple[float, float, float, float]:
    """Build ms, one removal ms, disruption × 1/N, disruption × the removed server's share."""
    table, build = timed(lambda: Table.build(np.ones(n), buckets=BUCKETS), 7)
    _, change = timed(lambda: table.remove(n // 2), 7)
    to_n, to_own = [], []
    for s in removed_servers(n):
        moved = int((table.remove(s).first != table.first).sum())
        to_n.append(moved / (BUCKETS / n))
        to_own.append(moved / int((table.first == s).sum()))
    return build, change, statistics.mean(to_n), statistics.mean(to_own)


def maglev_row(n: int) -> tuple[float, float, float]:
    """Build s, disruption × 1/N, disruption × the removed server's share."""
    names = [f"server-{i}" for i in range(n)]
    entry, build = timed(lambda: maglev.build(names, MAGLEV_SIZE), 3)
    to_n, to_own = [], []
    for s in removed_servers(n):
        rest = np.array([i for i in range(n) if i != s])
        after = rest[maglev.build(names[:s] + names[s + 1 :], MAGLEV_SIZE)]
        moved = int((after != entry).sum())
        to_n.append(moved / (MAGLEV_SIZE / n))
        to_own.append(moved / int((entry == s).sum()))
    return build, statistics.mean(to_n), statistics.mean(to_own)


def weighted() -> None:
    """Unequal weights: Hamilton's method can, in principle, shift a bucket between
    servers that stay (the new-states paradox); how often it does here."""
    rng = np.random.default_rng(2)
    parts = []
    for n in (16, 100, 1_000):
        table = Table.build(rng.uniform(1.0, 3.0, n), buckets=BUCKETS)
        ratios = [
            (table.remove(s).first != table.first).sum() / (table.first == s).sum()
            for s in removed_servers(n)
        ]
        parts.append(f"{n:,}: {statistics.mean(ratios):.3f}x (worst {max(ratios):.3f}x)")
    print("anyedge, weights 1-3 at random, disruption x its own share: " + ", ".join(parts))


def data_plane() -> None:
    rng = np.random.default_rng(1)
    n = 1_000_000
    src = rng.integers(0, 2**32, n, dtype=np.uint64)
    sport = rng.integers(1024, 65536, n)
    table = Table.build(np.ones(100)).add(1.0)
    h, t_hash = timed(lambda: flow_hash(src, 0xC6336407, sport, 443, 6), 5)
    _, t_look = timed(lambda: table.lookup(h), 5)
    print(
        f"data plane, 1,000,000 flows: hash {1e3 * t_hash:.1f} ms, lookup {1e3 * t_look:.1f} ms",
        flush=True,
    )


def main() -> None:
    print(
        f"anyedge: {BUCKETS:,} buckets; Maglev: {MAGLEV_SIZE:,} slots (Python loop); "
        f"disruption averaged over removing each of {REMOVALS} servers",
        flush=True,
    )
    for n in (16, 100, 1_000):
        build, change, a_n, a_own = anyedge_row(n)
        m_build, m_n, m_own = maglev_row(n)
        print(
            f"{n:>5,} servers: anyedge build {1e3 * build:5.1f} ms, remove {1e3 * change:4.1f} "
            f"ms, disruption {a_n:.2f}x 1/N ({a_own:.2f}x its own); Maglev build "
            f"{1e3 * m_build:5.0f} ms, disruption {m_n:.2f}x 1/N ({m_own:.2f}x its own); "
            f"Maglev/anyedge disruption x{m_n / a_n:.2f}",
            flush=True,
        )
    weighted()
    data_plane()


if __name__ == "__main__":
    main()
