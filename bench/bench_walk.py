"""Benchmark: the hot-potato walk on the failover atlas's workload, before and after.

Builds the default 300-site world's :class:`~anyedge.predict.Predictor`, records the
arguments of every walk the routing engine runs for its base catchment and a sample of
the atlas's scenarios (the incremental re-walks of ``anyedge predict --all``), then
replays them through

* the walk as it was before it was made cheaper (a faithful copy below: one
  ``np.lexsort`` per step over every candidate, a haversine per candidate), and
* today's :func:`anyedge.routing.walk.walk`,

checking that every walker's origin, km (bit for bit), hops and path are equal, and
prints the CPU time per call of each (median of several rounds) and their ratio.  The
new walk's memory of nearest hand-overs (one per router) starts empty in each round, as
in one ``anyedge predict --all`` run.

Run: ``python bench/bench_walk.py`` (``--every N``: replay every N-th scenario;
``--rounds R``).  The target: the new walk at least 1.5 times cheaper.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

from anyedge.model.worldgen import build_world
from anyedge.predict import Predictor, atlas_scenarios
from anyedge.routing import catchment as catchment_module
from anyedge.routing.announce import Seeds
from anyedge.routing.exits import Exits
from anyedge.routing.walk import HERE, MAX_HOPS, Geography, Walk, _expand, walk


def old_walk(
    start_as: Any, start_pt: Any, exits: Exits, seeds: Seeds, geo: Geography, site_points: bool
) -> Walk:
    """The walk before: the baseline, kept as it was."""
    w = start_as.size
    cur_as = start_as.astype(np.int64).copy()
    cur_pt = start_pt.astype(np.int64).copy()
    origin = np.full(w, -1, dtype=np.int64)
    km = np.zeros(w)
    hops = np.zeros(w, dtype=np.int64)
    path = np.full((w, MAX_HOPS), -1, dtype=np.int64)
    n_exits = exits.count()
    hand_ptr = geo.hand_ptr if geo.hand_ptr.size > 1 else np.zeros(2, dtype=np.int64)
    live = n_exits[cur_as] > 0
    npts = geo.lat.size + 1
    for step in range(MAX_HOPS):
        idx = np.flatnonzero(live)
        if not idx.size:
            break
        path[idx, step] = cur_as[idx]
        hops[idx] += 1
        states, inv = np.unique(cur_as[idx] * npts + (cur_pt[idx] + 1), return_inverse=True)
        s_as, s_pt = states // npts, states % npts - 1
        st, ex = _expand(exits.ptr, s_as)
        is_seed = exits.seed[ex] >= 0
        e = exits.edge[ex]
        cnt = np.where(is_seed, 1, hand_ptr[np.maximum(e, 0) + 1] - hand_ptr[np.maximum(e, 0)])
        cnt = np.where(is_seed, 1, np.maximum(cnt, 1))
        cand = np.repeat(np.arange(ex.size), cnt)
        k = np.arange(cand.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        ce = e[cand]
        has_pts = (ce >= 0) & (hand_ptr[np.maximum(ce, 0) + 1] > hand_ptr[np.maximum(ce, 0)])
        pt = np.full(cand.size, HERE, dtype=np.int64)
        pt[has_pts] = geo.hand_pt[hand_ptr[ce[has_pts]] + k[has_pts]]
        seed_c = is_seed[cand]
        if site_points:
            pt[seed_c] = geo.n_metros + seeds.origin[exits.seed[ex[cand[seed_c]]]]
        here = s_pt[st[cand]]
        known = (pt >= 0) & (here >= 0)
        dist = np.zeros(cand.size)
        if known.any():
            dist[known] = geo.km(here[known], pt[known])
        owner = st[cand]
        o = np.lexsort((exits.order[ex[cand]], dist, owner))
        first = np.ones(o.size, dtype=np.bool_)
        first[1:] = owner[o][1:] != owner[o][:-1]
        pick = o[first]
        p_ex = ex[cand[pick]]
        p_pt = np.where(pt[pick] == HERE, s_pt, pt[pick])
        p_dist = dist[pick]
        d_ex, d_pt, d_dist = p_ex[inv], p_pt[inv], p_dist[inv]
        km[idx] += d_dist
        cur_pt[idx] = d_pt
        arrived = exits.seed[d_ex] >= 0
        done = idx[arrived]
        origin[done] = seeds.origin[exits.seed[d_ex[arrived]]]
        moving = idx[~arrived]
        cur_as[moving] = exits.next_as[d_ex[~arrived]]
        live[done] = False
    km[origin < 0] = np.nan
    return Walk(origin=origin, km=km, hops=hops, path=path[:, : max(1, int(hops.max(initial=0)))])


def same(a: Walk, b: Walk) -> bool:
    """Equal walkers, km compared bit for bit."""
    return (
        np.array_equal(a.origin, b.origin)
        and np.array_equal(a.km.view(np.int64), b.km.view(np.int64))
        and np.array_equal(a.hops, b.hops)
        and np.array_equal(a.path, b.path)
    )


def record(every: int) -> list[tuple[Any, ...]]:
    """The walks of a predictor's base catchment and every ``every``-th atlas scenario."""
    calls: list[tuple[Any, ...]] = []

    def spy(*args: Any, **kw: Any) -> Walk:
        calls.append((*args, kw["site_points"]))
        return walk(*args, **kw)

    world = build_world()
    catchment_module.walk = spy  # type: ignore[assignment]
    try:
        p = Predictor(world)
        for sc in atlas_scenarios(world)[::every]:
            p.catchment(sc)
    finally:
        catchment_module.walk = walk
    return calls


def cpu_per_call(fn: Any, calls: list[tuple[Any, ...]]) -> float:
    """CPU seconds per call, starting from a router's first walk (nothing remembered)."""
    for c in calls:
        c[4].__dict__.pop("nearest", None)
    t0 = time.process_time()
    for c in calls:
        fn(*c)
    return (time.process_time() - t0) / len(calls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    calls = record(args.every)
    walkers = statistics.median(c[0].size for c in calls)
    print(f"{len(calls)} walks recorded (median {walkers:,.0f} walkers each)")
    for c in calls:
        c[4].__dict__.pop("nearest", None)  # compare from a cold start
    equal = all(same(old_walk(*c), walk(*c)) for c in calls)
    print(f"every walker equal (origin, km bit for bit, hops, path): {equal}")
    old, new = [], []
    for _ in range(args.rounds):
        old.append(cpu_per_call(old_walk, calls))
        new.append(cpu_per_call(walk, calls))
    t_old, t_new = statistics.median(old), statistics.median(new)
    print(
        f"CPU per walk (median of {args.rounds} rounds): before {t_old * 1000:.2f} ms, "
        f"now {t_new * 1000:.2f} ms; ratio {t_old / t_new:.2f}x"
    )
    kept = {id(c[4]): c[4].nearest.keys.size for c in calls}
    print(f"(point, target) pairs remembered at the end: {sum(kept.values()):,}")
    if not equal:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
