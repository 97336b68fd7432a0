"""Path computations of anyedge.backbone against a plain networkx reference on small
random graphs (hypothesis), and the post's shapes on the default world."""

from __future__ import annotations

import itertools
import math

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anyedge.backbone import (
    Demand,
    Graph,
    k_shortest,
    origin_paths,
    paths_from,
    place,
    spell,
    tiers,
)
from anyedge.backbone.graph import path_latency
from anyedge.model import World


@st.composite
def graphs(draw: st.DrawFn, max_n: int = 8) -> Graph:
    n = draw(st.integers(2, max_n))
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs)))
    ms = st.integers(1, 50).map(float)  # whole ms: ties are exact on both sides
    gbps = st.sampled_from([10.0, 40.0, 100.0])
    return Graph.from_edges(n, [(a, b, draw(ms), draw(gbps)) for a, b in chosen])


def reference(g: Graph, usable: np.ndarray | None = None) -> nx.DiGraph:
    ref = nx.DiGraph()
    ref.add_nodes_from(range(g.n))
    keep = np.ones(g.src.size, bool) if usable is None else usable
    for a, b, w in zip(
        g.src[keep].tolist(), g.dst[keep].tolist(), g.latency_ms[keep].tolist(), strict=False
    ):
        if not ref.has_edge(a, b) or ref[a][b]["weight"] > w:
            ref.add_edge(a, b, weight=w)
    return ref


@settings(max_examples=150, deadline=None)
@given(graphs())
def test_shortest_paths_match_networkx(g: Graph) -> None:
    dist, pred = g.shortest()
    want = dict(nx.all_pairs_dijkstra_path_length(reference(g)))
    edges = g.edge_index()
    for s in range(g.n):
        for t in range(g.n):
            assert dist[s, t] == want[s].get(t, math.inf)
            p = spell(pred[s], s, t)
            assert (p is None) == (t not in want[s])
            if p is not None:
                assert p[0] == s
                assert p[-1] == t
                assert len(set(p)) == len(p)
                assert path_latency(g, p, edges) == dist[s, t]


@settings(max_examples=100, deadline=None)
@given(graphs(), st.data())
def test_origin_paths_match_networkx(g: Graph, data: st.DataObject) -> None:
    m = data.draw(st.integers(1, 4))
    rtt = st.integers(1, 300).map(float)
    transit = np.array([[data.draw(rtt) for _ in range(m)] for _ in range(g.n)])
    paths = paths_from(g, transit)
    # reference: origins as extra nodes, reached over any site's transit
    ref = nx.DiGraph()
    for a, b, d in reference(g).edges(data=True):
        ref.add_edge(a, b, weight=2 * d["weight"])
    for e in range(g.n):
        for o in range(m):
            ref.add_edge(e, ("origin", o), weight=transit[e, o])
    for s in range(g.n):
        length = nx.single_source_dijkstra_path_length(ref, s)
        for o in range(m):
            assert paths.best_rtt[s, o] == length[("origin", o)]
            e = paths.egress[s, o]
            assert paths.best_rtt[s, o] == paths.backbone_rtt[s, e] + transit[e, o]
            assert paths.best_rtt[s, o] <= paths.direct_rtt[s, o] == transit[s, o]
            p = paths.path(s, o)
            assert p[0] == s
            assert p[-1] == e
            if e != s:  # the backbone only when strictly faster
                assert paths.best_rtt[s, o] < transit[s, o]
            cands = paths.candidates(s, o, k=3)
            assert s in [c[0] for c in cands]
            assert len({c[0] for c in cands}) == len(cands) <= 3
            assert cands[0][1] == paths.best_rtt[s, o]
            via = {e: w + transit[e, o] for e, w in length.items() if isinstance(e, int)}
            assert all(ms == via[e] for e, ms in cands)
            others = sorted(ms for e, ms in via.items() if e != s)[:2]
            assert sorted(ms for e, ms in cands if e != s) == others


@settings(max_examples=100, deadline=None)
@given(graphs(max_n=7), st.data())
def test_k_shortest_match_networkx(g: Graph, data: st.DataObject) -> None:
    s, t = data.draw(st.integers(0, g.n - 1)), data.draw(st.integers(0, g.n - 1))
    k = data.draw(st.integers(1, 6))
    got = k_shortest(g, s, t, k)
    ref = reference(g)
    if s == t:
        assert got == [(0.0, (s,))]
        return
    try:
        want = [
            nx.path_weight(ref, p, "weight")
            for _, p in zip(
                range(k), nx.shortest_simple_paths(ref, s, t, weight="weight"), strict=False
            )
        ]
    except nx.NetworkXNoPath:
        want = []
    assert [ms for ms, _ in got] == want
    edges = g.edge_index()
    assert len({p for _, p in got}) == len(got)
    for ms, p in got:
        assert p[0] == s
        assert p[-1] == t
        assert len(set(p)) == len(p)
        assert path_latency(g, p, edges) == ms


@settings(max_examples=100, deadline=None)
@given(graphs(), st.data())
def test_placement_never_overloads_and_is_shortest_with_room(g: Graph, data: st.DataObject) -> None:
    node = st.integers(0, g.n - 1)
    demands = data.draw(
        st.lists(
            st.builds(Demand, node, node, st.sampled_from([5.0, 10.0, 30.0, 60.0])), max_size=12
        )
    )
    got = place(g, demands)
    assert np.all(got.load <= g.capacity)
    # replay with networkx: largest first, each over the edges that still have room
    residual = g.capacity.copy()
    for i in sorted(range(len(demands)), key=lambda i: (-demands[i].gbps, i)):
        d = demands[i]
        usable = residual >= d.gbps
        try:
            length = nx.dijkstra_path_length(reference(g, usable), d.source, d.target)
        except nx.NetworkXNoPath:
            assert got.paths[i] is None
            continue
        p = got.paths[i]
        assert p is not None
        assert got.latency_ms[i] == length
        for a, b in itertools.pairwise(p):
            rows = np.flatnonzero((g.src == a) & (g.dst == b) & usable)
            residual[rows[np.argmin(g.latency_ms[rows])]] -= d.gbps
    assert np.allclose(g.capacity - residual, got.load)


def site_origin(world: World, site: str, origin: str) -> tuple[int, int]:
    return world.network.sites.code.index(site), world.backbone.origins.index(origin)


def test_johannesburg_origin_fetches_faster_over_the_backbone(default_world: World) -> None:
    """The post: origin fetches from Johannesburg up to about 22 % faster over the backbone."""
    paths = origin_paths(default_world)
    jnb = default_world.network.sites.code.index("JNB")
    gain = paths.gain[jnb]
    assert 0.15 <= gain.max() <= 0.30
    for origin in ("eu-lisbon", "eu-london", "us-east"):  # via the Lisbon-Johannesburg route
        _, o = site_origin(default_world, "JNB", origin)
        assert gain[o] > 0.08
        assert len(paths.path(jnb, o)) > 1


def test_amsterdam_singapore_backbone_stays_up_through_a_cable_cut(default_world: World) -> None:
    """The post: Amsterdam-Singapore on the backbone stays near flat through the AAE-1 cut,
    because other routes between Europe and Asia carry it; the transit paths spike."""
    code = default_world.network.sites.code
    ams, sin = code.index("AMS"), code.index("SIN")
    g = Graph.from_links(default_world.backbone.links, len(code))
    before, _ = g.shortest([ams])
    corridor = {code.index("MRS")}, {code.index("SIN"), code.index("BOM")}
    cut = np.array(
        [
            (a in corridor[0] and b in corridor[1]) or (b in corridor[0] and a in corridor[1])
            for a, b in zip(g.src.tolist(), g.dst.tolist(), strict=False)
        ]
    )
    assert cut.sum() == 4  # both ways of two links
    after, pred = g.shortest([ams], ~cut)
    rise = after[0, sin] / before[0, sin]
    assert 1.0 < rise < 1.15
    detour = spell(pred[0], ams, sin)
    assert detour is not None
    assert code.index("MRS") not in detour


def test_tiers_pick_the_upper_site_nearest_each_origin(default_world: World) -> None:
    paths = origin_paths(default_world)
    ups = np.flatnonzero(default_world.network.sites.kind == 1)
    t = tiers(paths, ups)
    assert set(t.upper.tolist()) <= set(ups.tolist())
    for o, u in enumerate(t.upper.tolist()):
        assert paths.best_rtt[u, o] == paths.best_rtt[ups, o].min() == t.upper_origin_rtt[o]
        assert t.to_upper_rtt[u, o] == 0.0
    assert np.all(t.full_miss_rtt >= t.upper_origin_rtt[None, :])
    with pytest.raises(ValueError, match="at least one"):
        tiers(paths, [])
