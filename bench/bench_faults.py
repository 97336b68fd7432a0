"""Benchmark: the routing engine under a fault, masked against rebuilt.

On the default 300-site world, one catchment (metro-level, hot-potato walks) with a
cable cut and a session down, two ways, in the same run:

* **masked**: ``Router.with_faults`` on a router already built for the world — the down
  links drop out of the graph's edge arrays, the lost sessions out of the seeds;
* **rebuilt**: a world without that link and session, and a new ``Router`` on it (what
  the twin did per fault before), then the same catchment.

Both must give every user the same site.  Prints the median of several runs of each
and their ratio, for the whole catchment and for the set-up alone (the faulted router
before any catchment).  Run: ``python bench/bench_faults.py``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from anyedge.model.network import Sessions
from anyedge.model.world import World
from anyedge.model.worldgen import build_world
from anyedge.routing import Faults, Router, resolve

LINKS = ["10297-2015", "LHR-10172"]


def median_s(fn: Callable[[], Any], runs: int = 7) -> tuple[Any, float]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def rebuilt(world: World, faults: Faults) -> World:
    net, inet = world.network, world.internet
    ses = net.sessions
    up = faults.session_up(len(ses))
    sessions = Sessions(site=ses.site[up], asn=ses.asn[up], kind=ses.kind[up])

    def keep(pairs: np.ndarray) -> np.ndarray:
        rows = [p for p in pairs.tolist() if (min(p), max(p)) not in set(faults.links)]
        return np.array(rows, dtype=np.int64).reshape(-1, 2)

    internet = replace(inet, p2c=keep(inet.p2c), p2p=keep(inet.p2p))
    return replace(world, network=replace(net, sessions=sessions), internet=internet)


def main() -> None:
    world = build_world()
    router = Router(world)
    faults = resolve(world, LINKS)
    a, masked = median_s(lambda: router.with_faults(faults).catchment())
    b, whole = median_s(lambda: Router(rebuilt(world, faults)).catchment())
    assert np.array_equal(a.eyeball_site, b.eyeball_site)
    _, plain = median_s(lambda: router.catchment())
    _, setup_m = median_s(lambda: router.with_faults(faults))
    _, setup_w = median_s(lambda: Router(rebuilt(world, faults)))
    print(f"default world, {' and '.join(LINKS)} down; median of 7")
    print(f"  catchment, no fault:            {1000 * plain:8.1f} ms")
    print(f"  masked (Router.with_faults):    {1000 * masked:8.1f} ms")
    print(f"  rebuilt world and Router:       {1000 * whole:8.1f} ms")
    print(f"  rebuilt / masked:               {whole / masked:8.1f}x")
    print(f"  set-up only, masked:            {1000 * setup_m:8.2f} ms")
    print(f"  set-up only, rebuilt:           {1000 * setup_w:8.2f} ms")
    print(f"  set-up, rebuilt / masked:       {setup_w / setup_m:8.1f}x")


if __name__ == "__main__":
    main()
