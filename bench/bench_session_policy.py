"""Benchmark: what sessions' MEDs and communities cost the routing engine.

On a CAIDA-like graph (``--ases``, default 70,000) with 20 origins, times one full
propagation three ways in the same run, interleaved so that the shared machine's noise
falls on all of them alike: plain seeds (the baseline), every seed with a MED (the
lowest-MED choice at seeding), and three seeds in four tagged with a community
(``no-peers``, ``no-providers`` or NO_EXPORT: the exports are checked on every edge).
Prints the minimum and median of each and the ratios to the baseline.

Run: ``python bench/bench_session_policy.py [--ases N] [--runs R]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import numpy as np

from anyedge.model.worldgen.asgraph import caida_like
from anyedge.routing import RoutingGraph, Seeds, propagate
from anyedge.routing.announce import Block


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ases", type=int, default=70_000)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    g0 = caida_like(args.ases)
    g = RoutingGraph.from_links(g0.asn, g0.p2c, g0.p2p)
    rng = np.random.default_rng(0)
    plain = Seeds.origins(rng.choice(g.n, 20, replace=False))
    with_med = replace(plain, med=rng.integers(0, 100, len(plain)))
    tags = np.array([Block.PEERS, Block.PROVIDERS, Block.NO_EXPORT, 0], dtype=np.int64)
    tagged = replace(plain, block=tags[np.arange(len(plain)) % 4])
    cases = {"plain": plain, "MED on every seed": with_med, "communities on 3/4": tagged}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.runs):
        for name, seeds in cases.items():
            t0 = time.perf_counter()
            propagate(g, seeds)
            times[name].append(time.perf_counter() - t0)
    base = min(times["plain"])
    print(f"{g.n:,} ASes, 20 origins, {args.runs} runs each, interleaved")
    for name, ts in times.items():
        print(
            f"{name:>20}: min {min(ts) * 1e3:6.2f} ms, median {statistics.median(ts) * 1e3:6.2f}"
            f" ms, min ratio to plain {min(ts) / base:.2f}x"
        )


if __name__ == "__main__":
    main()
