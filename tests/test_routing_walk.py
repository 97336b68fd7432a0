"""The hot-potato walk against a plain per-walker loop, on small random worlds.

Points sit on a coarse grid, so many hand-overs are equally far; exits share tie-break
orders; some edges have no places (they hand over "here") and some walkers start
nowhere in particular.  The walk must give every walker the same origin, km (the very
same float), hops and path as the loop — also when its geography already remembers
distances from an earlier walk, and when it may remember none.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anyedge.routing.announce import Seeds
from anyedge.routing.exits import Exits
from anyedge.routing.walk import HERE, MAX_HOPS, Geography, Walk, walk


def reference(
    start_as: list[int], start_pt: list[int], x: Exits, seeds: Seeds, geo: Geography, sites: bool
) -> Walk:
    """Each walker alone: every hand-over of every exit, nearest by (km, order), first."""
    n = len(start_as)
    origin, km = [-1] * n, [0.0] * n
    paths: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        a, p = start_as[i], start_pt[i]
        if x.ptr[a + 1] == x.ptr[a]:
            continue
        for _ in range(MAX_HOPS):
            paths[i].append(a)
            best = None
            for j in range(int(x.ptr[a]), int(x.ptr[a + 1])):
                s, e = int(x.seed[j]), int(x.edge[j])
                if s >= 0:
                    pts = [geo.n_metros + int(seeds.origin[s])] if sites else [HERE]
                else:
                    pts = geo.hand_pt[geo.hand_ptr[e] : geo.hand_ptr[e + 1]].tolist() or [HERE]
                for q in pts:
                    d = 0.0
                    if p >= 0 and q >= 0:
                        d = float(geo.km(np.array([p]), np.array([q]))[0])
                    if best is None or (d, int(x.order[j])) < best[0]:
                        best = ((d, int(x.order[j])), j, q)
            assert best is not None
            (d, _), j, q = best
            km[i] += d
            p = p if q == HERE else q
            if x.seed[j] >= 0:
                origin[i] = int(seeds.origin[x.seed[j]])
                break
            a = int(x.next_as[j])
    width = max(1, max(len(p) for p in paths))
    path = np.full((n, width), -1, dtype=np.int64)
    for i, p in enumerate(paths):
        path[i, : len(p)] = p
    kms = np.where(np.array(origin) >= 0, np.array(km), np.nan)
    return Walk(np.array(origin), kms, np.array([len(p) for p in paths]), path)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[Exits, Seeds, Geography, list[int], list[int]]:
    m = draw(st.integers(1, 6))
    n_sites = draw(st.integers(1, 3))
    grid = st.sampled_from([-40.0, 0.0, 10.0, 20.0])
    lat = np.array(draw(st.lists(grid, min_size=m + n_sites, max_size=m + n_sites)))
    lon = np.array(draw(st.lists(grid, min_size=m + n_sites, max_size=m + n_sites)))
    n_edges = draw(st.integers(0, 5))
    places = draw(
        st.lists(st.lists(st.integers(0, m - 1), max_size=3), min_size=n_edges, max_size=n_edges)
    )
    geo = Geography(
        lat=lat,
        lon=lon,
        n_metros=m,
        hand_ptr=np.cumsum([0] + [len(p) for p in places]).astype(np.int64),
        hand_pt=np.array([q for p in places for q in p], dtype=np.int64),
    )
    n_as = draw(st.integers(1, 5))
    n_seeds = draw(st.integers(1, 3))
    seeds = replace(
        Seeds.origins(np.zeros(n_seeds, dtype=np.int64)),
        origin=np.array(
            draw(st.lists(st.integers(0, n_sites - 1), min_size=n_seeds, max_size=n_seeds))
        ),
    )
    # every AS has an exit (a walk only enters ASes that have a route)
    exit_ = st.one_of(
        st.tuples(st.just(-1), st.integers(0, n_seeds - 1), st.just(-1)),
        *(
            [st.tuples(st.integers(0, n_edges - 1), st.just(-1), st.integers(0, n_as - 1))]
            if n_edges
            else []
        ),
    )
    per_as = [
        draw(st.lists(st.tuples(exit_, st.integers(0, 2)), min_size=1, max_size=4))
        for _ in range(n_as)
    ]
    if draw(st.booleans()):  # as tables are built: in order within each AS
        per_as = [sorted(xs, key=lambda t: t[1]) for xs in per_as]
    rows = [x for xs in per_as for x in xs]
    exits = Exits(
        ptr=np.cumsum([0] + [len(xs) for xs in per_as]).astype(np.int64),
        edge=np.array([e for (e, _, _), _ in rows], dtype=np.int64),
        seed=np.array([s for (_, s, _), _ in rows], dtype=np.int64),
        next_as=np.array([a for (_, _, a), _ in rows], dtype=np.int64),
        order=np.array([o for _, o in rows], dtype=np.int64),
    )
    w = draw(st.integers(1, 12))
    start_as = draw(st.lists(st.integers(0, n_as - 1), min_size=w, max_size=w))
    start_pt = draw(st.lists(st.integers(-1, m - 1), min_size=w, max_size=w))
    return exits, seeds, geo, start_as, start_pt


def same(a: Walk, b: Walk) -> None:
    np.testing.assert_array_equal(a.origin, b.origin)
    assert a.km.tobytes() == b.km.tobytes()  # the very same floats
    np.testing.assert_array_equal(a.hops, b.hops)
    np.testing.assert_array_equal(a.path, b.path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.booleans())
def test_walk_matches_a_per_walker_loop(case, sites: bool) -> None:  # type: ignore[no-untyped-def]
    exits, seeds, geo, start_as, start_pt = case
    args = (np.array(start_as), np.array(start_pt), exits, seeds, geo)
    same(walk(*args, site_points=sites), reference(start_as, start_pt, exits, seeds, geo, sites))
    # again, from what the geography remembers, in another order
    back = (np.array(start_as[::-1]), np.array(start_pt[::-1]), exits, seeds, geo)
    ref = reference(start_as[::-1], start_pt[::-1], exits, seeds, geo, sites)
    same(walk(*back, site_points=sites), ref)
    # a geography that remembers nothing (its memory full from the start)
    fresh = replace(geo)
    fresh.nearest.MAX_KEPT = 0
    same(walk(*back[:4], fresh, site_points=sites), ref)
    assert fresh.nearest.keys.size == 0
