"""Benchmark: one anycast propagation over a 70,000-AS graph, beside BGPy.

Generates a CAIDA-like graph (a tier-1 clique, a few hundred transits, the rest stubs,
about 120,000 customer-provider links), picks 20 origin ASes, and times

* anyedge's vectorised propagation (median of several runs) against BGPy's
  ``SimulationEngine`` on the same graph and origins, checking that both give every AS
  the same origin and AS-path length;
* recomputing after one origin withdraws: anyedge's incremental ``withdraw`` against a
  fresh propagation without that origin;
* a catchment of the default 300-site world (metro-level, with hot-potato walks) and an
  incremental withdrawal of one site.

Run: ``python bench/bench_routing.py`` (``--ases N`` for another size; BGPy is optional:
``pip install bgpy-pkg``).  The target: at least 50 times faster than BGPy.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from anyedge.model.worldgen import build_world
from anyedge.model.worldgen.asgraph import ASGraph, caida_like
from anyedge.routing import Router, RoutingGraph, Seeds, propagate, withdraw


def best_of(fn: Callable[[], Any], runs: int) -> tuple[Any, float]:
    times = []
    out = None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def bgpy_run(g: ASGraph, origins: list[int]) -> tuple[dict[int, tuple[int, int]], float, float]:
    """(asn → (origin, path length)), graph build seconds, propagation seconds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from bgpy.as_graphs import ASGraph as BGPyGraph
        from bgpy.as_graphs import ASGraphInfo, CustomerProviderLink, PeerLink
        from bgpy.shared.enums import Prefixes
        from bgpy.simulation_engine import BGP, SimulationEngine
        from bgpy.simulation_framework import ScenarioConfig, ValidPrefix
    asn = g.asn
    t0 = time.perf_counter()
    info = ASGraphInfo(
        customer_provider_links=frozenset(
            CustomerProviderLink(customer_asn=int(asn[c]), provider_asn=int(asn[p]))
            for p, c in g.p2c.tolist()
        ),
        peer_links=frozenset(PeerLink(int(asn[a]), int(asn[b])) for a, b in g.p2p.tolist()),
    )
    graph = BGPyGraph(info, BasePolicyCls=BGP, store_customer_cone_size=False)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine = SimulationEngine(graph)
    cfg = ScenarioConfig(
        ScenarioCls=ValidPrefix,
        BasePolicyCls=BGP,
        num_victims=len(origins),
        override_victim_asns=frozenset(origins),
        override_attacker_asns=frozenset(),
        override_adopting_asns=frozenset(),
    )
    scenario = ValidPrefix(scenario_config=cfg, engine=engine)
    scenario.setup_engine(engine)
    engine.run(propagation_round=0, scenario=scenario)
    t_prop = time.perf_counter() - t0
    prefix = Prefixes.PREFIX.value
    out = {}
    for a in graph.ases:
        ann = a.policy.local_rib.get(prefix)
        if ann is not None:
            out[a.asn] = (ann.origin, len(ann.as_path))
    return out, t_build, t_prop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ases", type=int, default=70_000)
    ap.add_argument("--origins", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    g = caida_like(args.ases, seed=1)
    print(
        f"graph: {g.asn.size:,} ASes, {len(g.p2c):,} customer-provider and "
        f"{len(g.p2p):,} peer links"
    )
    rng = np.random.default_rng(7)
    origin_rows = np.sort(
        rng.choice(np.arange(g.asn.size // 2, g.asn.size), args.origins, replace=False)
    )
    origins = [int(g.asn[r]) for r in origin_rows]

    rg, t_graph = best_of(lambda: RoutingGraph.from_internet(g.internet()), 1)
    seeds = Seeds.origins(origin_rows)
    state, t_ours = best_of(lambda: propagate(rg, seeds), args.runs)
    print(
        f"anyedge: graph {t_graph:.3f} s, propagation {t_ours * 1000:.1f} ms "
        f"(median of {args.runs})"
    )

    try:
        theirs, t_bbuild, t_bgpy = bgpy_run(g, origins)
    except ImportError:
        print("BGPy not installed (pip install bgpy-pkg): no baseline ratio")
        theirs, t_bgpy = None, None
    if theirs is not None and t_bgpy is not None:
        mine_origin = np.where(state.origin >= 0, np.asarray(origins)[state.origin], -1)
        agree = all(
            (int(mine_origin[r]), int(state.length[r])) == theirs.get(int(g.asn[r]), (-1, 0))
            for r in range(g.asn.size)
        )
        print(f"BGPy:    graph {t_bbuild:.3f} s, propagation {t_bgpy * 1000:.1f} ms")
        print(
            f"  ratio BGPy / anyedge propagation: {t_bgpy / t_ours:,.0f}x   "
            f"same origin and path length for every AS: {agree}"
        )

    caught = np.bincount(state.origin[state.origin >= 0], minlength=len(origins))
    for what, k in (
        ("biggest", int(np.argmax(caught))),
        ("median", int(np.argsort(caught)[len(caught) // 2])),
    ):
        inc, t_inc = best_of(lambda k=k: withdraw(rg, state, seeds, k), args.runs)
        fresh, t_full = best_of(lambda k=k: propagate(rg, seeds.without(k)), args.runs)
        print(
            f"withdraw the {what} origin ({int(caught[k]):,} ASes move): incremental "
            f"{t_inc * 1000:.1f} ms, fresh {t_full * 1000:.1f} ms, ratio {t_full / t_inc:.1f}x, "
            f"equal: {bool(np.array_equal(inc.key, fresh.key))}"
        )

    world = build_world()
    router, t_router = best_of(lambda: Router(world), 1)
    c, t_c = best_of(router.catchment, args.runs)
    site = world.network.sites.index("LHR")
    _, t_w = best_of(lambda: router.withdraw(c, site), args.runs)
    _, t_wf = best_of(lambda: router.catchment(c.announcement.withdraw(site)), args.runs)
    print(
        f"default world ({len(world.network.sites)} sites, {len(world.internet.eyeballs):,} "
        f"eyeballs): router {t_router * 1000:.0f} ms, catchment {t_c * 1000:.1f} ms, "
        f"withdraw LHR incremental {t_w * 1000:.1f} ms vs fresh {t_wf * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
