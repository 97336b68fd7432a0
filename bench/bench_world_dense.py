"""Benchmark: the calibrated world's dense peering against the uncalibrated sparse graph.

Builds the uncalibrated world and the default, calibrated one (exchange points with
route-server peering: several times the peer links), then times on each a router (the routing
engine's arrays and every link's hand-over points) and one catchment (Gao-Rexford
propagation and the hot-potato walk of every user), and prints each step's median over
a few runs with the ratio dense / sparse measured in the same process.

Run: ``python bench/bench_world_dense.py`` (``--runs N`` for more repeats).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from anyedge.model.worldgen import WorldOptions, build_world
from anyedge.routing import Announcement, Router


def median_time(fn: Callable[[], Any], runs: int) -> tuple[Any, float]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def one_catchment(router: Router) -> Any:
    n = len(router.world.network.sites)
    ann = Announcement(
        np.ones(n, dtype=np.bool_), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int8)
    )
    return router.catchment(ann)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    build_world()  # load the city data once, outside the timings
    rows = []
    for name, opts in (("sparse", WorldOptions(calibrated=False)), ("dense", WorldOptions())):
        world, t_build = median_time(lambda o=opts: build_world(o), args.runs)
        router, t_router = median_time(lambda w=world: Router(w), args.runs)
        _, t_catch = median_time(lambda r=router: one_catchment(r), args.runs)
        inet = world.internet
        rows.append((name, len(inet.p2c), len(inet.p2p), t_build, t_router, t_catch))
    print(f"{'graph':8} {'p2c':>6} {'p2p':>6} {'build s':>8} {'router s':>9} {'catchment s':>12}")
    for name, pc, pp, b, r, c in rows:
        print(f"{name:8} {pc:6} {pp:6} {b:8.2f} {r:9.3f} {c:12.3f}")
    s, d = rows
    print(
        f"ratio dense / sparse: build {d[3] / s[3]:.2f}x, router {d[4] / s[4]:.2f}x, "
        f"catchment {d[5] / s[5]:.2f}x (medians of {args.runs})"
    )


if __name__ == "__main__":
    main()
