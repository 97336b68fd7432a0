"""Benchmark: the best path from every site to every origin, beside networkx.

On the default 300-site world with 1,000 origins in real cities (metros of the world's
Internet), times

* ``anyedge.backbone.origin_paths``: scipy's all-pairs Dijkstra over the backbone and the
  (sites x sites) by (sites x origins) min-plus product in numpy (median of 5 runs);
* the same with networkx: the backbone plus one node per origin, reached over any site's
  transit, one ``single_source_dijkstra_path_length`` per landing site — timed on a
  sample of landing sites, checked equal to anyedge's there, and scaled to all sites;
* SR-TE: the 4 shortest paths between 100 site pairs (Yen's, scipy inside) against
  networkx's ``shortest_simple_paths``, and placing 2,000 demands under capacity.

Run: ``python bench/bench_backbone.py`` (``--origins N``, ``--sample N``).  The target:
all paths for 300 sites x 1,000 origins in under 2 s.
"""

from __future__ import annotations

import argparse
import time
from itertools import islice

import networkx as nx
import numpy as np

from anyedge.backbone import Demand, Graph, k_shortest, origin_paths, place, transit_rtt
from anyedge.model import Origins
from anyedge.model.worldgen import build_world
from bench_control import median_time  # the same timing as the control benchmark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--origins", type=int, default=1000)
    ap.add_argument("--sample", type=int, default=10, help="landing sites networkx runs from")
    args = ap.parse_args()
    world = build_world()
    rng = np.random.default_rng(1)
    m = world.internet.metros
    pick = rng.choice(len(m), size=args.origins, replace=False)
    origins = Origins(
        name=tuple(f"o{i}" for i in range(args.origins)),
        city=tuple(m.name[i] for i in pick),
        country=tuple(m.country[i] for i in pick),
        lat=m.lat[pick],
        lon=m.lon[pick],
    )
    n = len(world.network.sites)
    paths, t_ours = median_time(lambda: origin_paths(world, origins), 5)
    print(f"anyedge: {n} sites x {args.origins} origins, all best paths: {t_ours:.3f} s")

    transit = transit_rtt(world, origins)
    g = Graph.from_links(world.backbone.links, n)

    def nx_build() -> nx.DiGraph:
        ref = nx.DiGraph()
        for a, b, w in zip(g.src.tolist(), g.dst.tolist(), g.latency_ms.tolist(), strict=True):
            ref.add_edge(a, b, weight=2 * w)
        for e in range(n):
            for o in range(args.origins):
                ref.add_edge(e, ("o", o), weight=float(transit[e, o]))
        return ref

    ref, t_build = median_time(nx_build, 1)
    sample = rng.choice(n, size=args.sample, replace=False).tolist()
    t0 = time.perf_counter()
    for s in sample:
        length = nx.single_source_dijkstra_path_length(ref, s)
        got = np.array([length[("o", o)] for o in range(args.origins)])
        assert np.allclose(got, paths.best_rtt[s]), s
    t_nx = t_build + (time.perf_counter() - t0) * n / args.sample
    print(
        f"networkx: {t_nx:.1f} s (graph {t_build:.1f} s, Dijkstra from {args.sample} sites "
        f"scaled to {n}); equal on the sample; anyedge is {t_nx / t_ours:.0f}x faster"
    )
    print(f"target under 2 s: {'met' if t_ours < 2.0 else 'MISSED'}")

    pairs = [tuple(rng.choice(n, size=2, replace=False).tolist()) for _ in range(100)]
    _, t_k = median_time(lambda: [k_shortest(g, a, b, 4) for a, b in pairs], 3)
    one = nx.DiGraph()
    for a, b, w in zip(g.src.tolist(), g.dst.tolist(), g.latency_ms.tolist(), strict=True):
        one.add_edge(a, b, weight=w)

    def nx_k() -> None:
        for a, b in pairs:
            list(islice(nx.shortest_simple_paths(one, a, b, weight="weight"), 4))

    _, t_k_nx = median_time(nx_k, 3)
    print(
        f"SR-TE 4 shortest for 100 pairs: {t_k:.3f} s, networkx {t_k_nx:.3f} s "
        f"(ratio {t_k_nx / t_k:.2f})"
    )
    demands = [
        Demand(int(a), int(b), float(rng.choice([0.5, 2.0, 10.0])))
        for a, b in (rng.choice(n, size=2, replace=False) for _ in range(2000))
    ]
    placed, t_place = median_time(lambda: place(g, demands), 1)
    print(
        f"SR-TE placing {len(demands)} demands: {t_place:.3f} s, "
        f"{len(placed.unplaced)} without room, max link load "
        f"{float((placed.load / g.capacity).max()):.0%}"
    )


if __name__ == "__main__":
    main()
