"""The AS-level engine agrees with BGPy, AS for AS, on CAIDA-like graphs.

BGPy (PyPI ``bgpy-pkg``) simulates Gao-Rexford BGP one AS object at a time: local
preference origin > customer > peer > provider, then the shorter AS path, then the
lowest neighbour ASN — the rules ``propagate`` packs into its keys.  Each graph here is
built once for BGPy (offline, from links; nothing is downloaded) and reused for every
case, only the origins changing: ValidPrefix with every origin a "victim" announcing the
prefix.  For every AS the origin, the AS path (so its length) and whether it has a route
at all must be the same.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from anyedge.routing import Rank, RoutingGraph, Seeds, propagate
from anyedge.routing.propagate import as_path

if TYPE_CHECKING:
    from bgpy.as_graphs import ASGraph

# bgpy takes ~1.5 s to import: imported where it is used, not by every worker that
# collects this module
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("bgpy") is None, reason="bgpy is not installed (the test extra)"
)


@dataclass(frozen=True)
class Graph:
    """A CAIDA-like graph by row (ASNs sorted ascending) and BGPy's graph of it."""

    asn: np.ndarray
    p2c: np.ndarray  # (E, 2) provider row, customer row
    p2p: np.ndarray  # (P, 2)
    stubs: np.ndarray  # rows of ASes without customers
    ours: RoutingGraph
    bgpy: ASGraph


def caida_like(n: int, seed: int, tier1: int = 10) -> tuple[np.ndarray, ...]:
    """Deterministic graph: a tier-1 clique, transits, stubs, some transit peering.

    Transits buy from 1-3 tier-1s or lower transits, stubs from 1-3 transits (now and then
    a tier-1 too); 2% of stubs have no provider, only peers among the transits, so that
    some ASes end up without a route.

    Roles are by position (tier-1s first, then transits, then stubs); ASNs are random
    and assigned at random, so the lowest-ASN tie-break does not follow the hierarchy.
    Returns (asn per position, p2c positions, p2p positions, stub positions).
    """
    rng = np.random.default_rng(seed)
    transit = max(20, n // 12)
    t1 = np.arange(tier1)
    tr = np.arange(tier1, tier1 + transit)
    stubs = np.arange(tier1 + transit, n)
    p2c: set[tuple[int, int]] = set()
    for i, t in enumerate(tr):
        pool = np.concatenate([t1, tr[:i]])  # tier-1s and lower transits: no loops
        # mostly directly below the tier-1s, sometimes below another transit
        for p in rng.choice(pool, size=int(rng.integers(1, 4)), replace=False):
            p2c.add((int(p), int(t)))
    p2p = {(int(a), int(b)) for i, a in enumerate(t1) for b in t1[i + 1 :]}
    for s in stubs:
        if rng.random() < 0.02:
            # no transit at all, one or two peers: reached only by their peers' own
            # and customers' routes, so often not at all
            for p in rng.choice(tr, size=int(rng.integers(1, 3)), replace=False):
                p2p.add((int(p), int(s)))
            continue
        k = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
        for p in rng.choice(tr, size=k, replace=False):
            p2c.add((int(p), int(s)))
        if rng.random() < 0.05:
            p2c.add((int(rng.choice(t1)), int(s)))
    related = {(min(a, b), max(a, b)) for a, b in p2c}
    stub_peers = len(p2p) - len(t1) * (len(t1) - 1) // 2
    while len(p2p) < len(t1) * (len(t1) - 1) // 2 + stub_peers + transit * 2:
        a, b = sorted(int(x) for x in rng.choice(tr, size=2, replace=False))
        if (a, b) not in related:
            p2p.add((a, b))
    asn = rng.choice(np.arange(1, 400_000), size=n, replace=False)
    return (
        asn,
        np.array(sorted(p2c), dtype=np.int64),
        np.array(sorted(p2p), dtype=np.int64),
        stubs,
    )


def build(n: int, seed: int) -> Graph:
    from bgpy.as_graphs import ASGraph, ASGraphInfo, CustomerProviderLink, PeerLink
    from bgpy.simulation_engine import BGP

    asn_pos, p2c_pos, p2p_pos, stub_pos = caida_like(n, seed)
    order = np.argsort(asn_pos)
    row_of_pos = np.empty(n, dtype=np.int64)
    row_of_pos[order] = np.arange(n)
    asn = asn_pos[order]
    p2c, p2p = row_of_pos[p2c_pos], row_of_pos[p2p_pos]
    info = ASGraphInfo(
        customer_provider_links=frozenset(
            CustomerProviderLink(customer_asn=int(asn[c]), provider_asn=int(asn[p])) for p, c in p2c
        ),
        peer_links=frozenset(PeerLink(int(asn[a]), int(asn[b])) for a, b in p2p),
    )
    # the customer cone sizes cost more than the whole graph and are not needed
    bgpy = ASGraph(info, BasePolicyCls=BGP, store_customer_cone_size=False)
    assert len(bgpy) == n
    ours = RoutingGraph.from_links(asn, p2c, p2p)
    return Graph(asn, p2c, p2p, np.sort(row_of_pos[stub_pos]), ours, bgpy)


def bgpy_routes(g: Graph, origins: list[int]) -> dict[int, tuple[int, tuple[int, ...]]]:
    """{ASN: (origin ASN, AS path)} for every AS with a route, the AS itself first."""
    from bgpy.shared.enums import Prefixes
    from bgpy.simulation_engine import BGP, SimulationEngine
    from bgpy.simulation_framework import ScenarioConfig, ValidPrefix

    victims = frozenset(origins)
    engine = SimulationEngine(g.bgpy)
    cfg = ScenarioConfig(
        ScenarioCls=ValidPrefix,
        BasePolicyCls=BGP,
        num_victims=len(victims),
        override_victim_asns=victims,
        override_attacker_asns=frozenset(),
        override_adopting_asns=frozenset(),
    )
    scenario = ValidPrefix(scenario_config=cfg, engine=engine)
    scenario.setup_engine(engine)
    engine.run(propagation_round=0, scenario=scenario)
    out: dict[int, tuple[int, tuple[int, ...]]] = {}
    for as_obj in g.bgpy.ases:
        ann: Any = as_obj.policy.local_rib.get(Prefixes.PREFIX.value)
        if ann is not None:
            out[int(as_obj.asn)] = (int(ann.origin), tuple(int(a) for a in ann.as_path))
    return out


def compare(g: Graph, rng: np.random.Generator) -> tuple[int, int]:
    """One random case; returns (ASes with a route, ASes without)."""
    k = int(rng.integers(2, 31))
    # mostly stubs, as content networks are, sometimes any AS (a tier-1, a transit)
    pool = g.stubs if rng.random() < 0.7 else np.arange(g.ours.n)
    rows = np.sort(rng.choice(pool, size=k, replace=False))
    theirs = bgpy_routes(g, [int(g.asn[r]) for r in rows])
    state = propagate(g.ours, Seeds.origins(rows))
    origin_asn = np.where(state.origin >= 0, g.asn[rows][np.maximum(state.origin, 0)], -1)
    length = state.length
    with_route = np.flatnonzero(state.has_route)
    # the same set of ASes without a route
    assert {int(g.asn[a]) for a in with_route} == set(theirs)
    for a in with_route:
        o, path = theirs[int(g.asn[a])]
        assert (int(origin_asn[a]), int(length[a])) == (o, len(path)), int(g.asn[a])
        assert as_path(state, g.asn, int(a), {}) == list(path)
    assert np.all(state.rank[rows] == Rank.ORIGIN)
    return with_route.size, g.ours.n - with_route.size


@pytest.fixture(scope="module")
def graph_1k() -> Graph:
    return build(1_000, seed=11)


@pytest.fixture(scope="module")
def graph_10k() -> Graph:
    return build(10_000, seed=12)


def test_generator_is_a_hierarchy(graph_1k: Graph) -> None:
    g = graph_1k
    assert g.ours.n == 1_000
    assert np.all(np.diff(g.asn) > 0)
    assert len({tuple(x) for x in g.p2c.tolist()}) == len(g.p2c)
    pairs = {(min(a, b), max(a, b)) for a, b in g.p2c.tolist()}
    assert not pairs & {(min(a, b), max(a, b)) for a, b in g.p2p.tolist()}
    assert int(g.ours.height.max()) >= 2  # stubs, transits, transits of transits, tier-1s
    # the same generator gives the same graph
    again = caida_like(1_000, seed=11)
    np.testing.assert_array_equal(np.sort(again[0]), g.asn)


def test_hand_example_with_bgpy() -> None:
    """The worked example of the notes, with a peer-only island (9, 10) hanging off 8."""
    from bgpy.as_graphs import ASGraph, ASGraphInfo, CustomerProviderLink, PeerLink
    from bgpy.simulation_engine import BGP

    asn = np.arange(1, 11)
    p2c = np.array([(1, 3), (2, 4), (3, 6), (6, 8), (3, 7), (4, 7), (4, 5), (9, 10)]) - 1
    p2p = np.array([(1, 2), (5, 6), (8, 9)]) - 1
    info = ASGraphInfo(
        customer_provider_links=frozenset(
            CustomerProviderLink(customer_asn=int(c + 1), provider_asn=int(p + 1)) for p, c in p2c
        ),
        peer_links=frozenset(PeerLink(int(a + 1), int(b + 1)) for a, b in p2p),
    )
    bg = ASGraph(info, BasePolicyCls=BGP, store_customer_cone_size=False)
    ours = RoutingGraph.from_links(asn, p2c, p2p)
    g = Graph(asn, p2c, p2p, np.array([4, 6, 7, 9]), ours, bg)
    for origins in ([1, 8], [1], [8], [5, 7], [9, 2]):
        theirs = bgpy_routes(g, origins)
        state = propagate(ours, Seeds.origins([o - 1 for o in origins]))
        mine = {
            a + 1: (origins[int(state.origin[a])], tuple(as_path(state, asn, a, {})))
            for a in np.flatnonzero(state.has_route).tolist()
        }
        assert mine == theirs, origins
    assert bgpy_routes(g, [1, 8])[7] == (8, (7, 3, 6, 8))


def test_agrees_with_bgpy_1k(graph_1k: Graph) -> None:
    rng = np.random.default_rng(2024)
    routed = unrouted = 0
    for _ in range(60):
        r, u = compare(graph_1k, rng)
        routed, unrouted = routed + r, unrouted + u
    assert routed > 50_000  # the cases did route most of the graph
    assert unrouted > 0  # and some ASes had no route (peer-only and valley cases)


@pytest.mark.slow
def test_agrees_with_bgpy_10k(graph_10k: Graph) -> None:
    rng = np.random.default_rng(2025)
    routed = 0
    for _ in range(20):
        routed += compare(graph_10k, rng)[0]
    assert routed > 150_000
