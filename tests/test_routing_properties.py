"""The vectorised propagation against a naive reference, and incremental against fresh.

The reference engine below is BGP written the slow, obvious way: every round, every AS
picks its best route among its own seed and what each neighbour currently exports to it
(Gao-Rexford: a route learned from a customer, or originated, goes to everyone; one
learned from a peer or a provider only to customers), preferring lower rank, then a
shorter AS path, then the lower neighbour ASN, and refusing paths that already hold it.
Rounds repeat until nothing changes.  Hypothesis draws random hierarchies (providers
strictly above their customers, peers anywhere else) and origins; ``propagate`` must
agree with the reference on every AS, path included.

Then on the default world: withdrawing or re-announcing a site incrementally must give
exactly what a fresh catchment gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from anyedge.model import World
from anyedge.routing import (
    Catchment,
    Mode,
    Rank,
    Router,
    RouteState,
    RoutingGraph,
    Seeds,
    propagate,
    update,
    withdraw,
)
from anyedge.routing.propagate import as_path

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Case:
    """A random AS graph (rows 0..n-1, ASNs ascending) and origins announcing one prefix."""

    asn: tuple[int, ...]
    p2c: tuple[tuple[int, int], ...]  # (provider row, customer row)
    p2p: tuple[tuple[int, int], ...]
    origins: tuple[int, ...]  # rows
    prepend: tuple[int, ...]

    @property
    def n(self) -> int:
        return len(self.asn)

    def graph(self) -> RoutingGraph:
        return RoutingGraph.from_links(self.asn, self.p2c, self.p2p)

    def seeds(self) -> Seeds:
        return Seeds.origins(list(self.origins), prepend=list(self.prepend))


# ------------------------------------------------------------------ reference engine

Route = tuple[int, int, int, int, tuple[int, ...]]  # rank, length, nbr ASN, origin, path


def reference(case: Case, gone: frozenset[int] = frozenset()) -> list[Route | None]:
    """Best route of every AS row by synchronous rounds to a fixed point.

    ``gone``: origin indices that do not announce.  A path is a tuple of AS rows from
    the AS itself to the origin AS (prepends counted in the length only).
    """
    n = case.n
    # (neighbour, rank a route from it gets here, whether it sends any route here)
    links: list[list[tuple[int, int, bool]]] = [[] for _ in range(n)]
    for p, c in case.p2c:
        links[c].append((p, Rank.PROVIDER, True))  # providers send everything down
        links[p].append((c, Rank.CUSTOMER, False))
    for a, b in case.p2p:
        links[a].append((b, Rank.PEER, False))
        links[b].append((a, Rank.PEER, False))
    own: list[Route | None] = [None] * n
    for k, (row, pre) in enumerate(zip(case.origins, case.prepend, strict=True)):
        if k not in gone:
            own[row] = (Rank.ORIGIN, 1 + pre, 0, k, (row,))
    best = list(own)
    for _ in range(4 * n + 8):
        new: list[Route | None] = []
        for a in range(n):
            cands = [] if own[a] is None else [own[a]]
            for b, rank, sends_all in links[a]:
                r = best[b]
                if r is None or a in r[4]:
                    continue
                if not sends_all and r[0] > Rank.CUSTOMER:
                    continue  # peer and provider routes only go down to customers
                cands.append((rank, r[1] + 1, case.asn[b], r[3], (a, *r[4])))
            new.append(min(cands, key=lambda x: x[:3]) if cands else None)
        if new == best:
            return best
        best = new
    raise AssertionError("the reference did not converge")


def table(case: Case, state: RouteState) -> list[Row]:
    """(origin, length, rank, AS path) per row, as the engine says."""
    return [
        (
            int(state.origin[a]),
            int(state.length[a]),
            int(state.rank[a]),
            as_path(state, np.asarray(case.asn, dtype=np.int64), a, {}),
        )
        for a in range(case.n)
    ]


Row = tuple[int, int, int, list[int]]


def reference_table(case: Case, routes: list[Route | None]) -> list[Row]:
    return [
        (-1, 0, int(Rank.NONE), [])
        if r is None
        else (r[3], r[1], int(r[0]), [case.asn[x] for x in r[4]])
        for r in routes
    ]


def same_routes(a: RouteState, b: RouteState) -> None:
    np.testing.assert_array_equal(a.key, b.key)
    np.testing.assert_array_equal(a.via, b.via)
    np.testing.assert_array_equal(a.origin, b.origin)


# ------------------------------------------------------------------------ strategies


@st.composite
def cases(draw: st.DrawFn, max_n: int = 24) -> Case:
    n = draw(st.integers(2, max_n))
    asn = sorted(draw(st.sets(st.integers(1, 2**32 - 1), min_size=n, max_size=n)))
    height = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    p2c, p2p = [], []
    for i in range(n):
        for j in range(i + 1, n):
            link = draw(st.integers(0, 9))
            if link in (7, 8) and height[i] != height[j]:
                hi, lo = (i, j) if height[i] > height[j] else (j, i)
                p2c.append((hi, lo))  # the provider is always higher
            elif link == 9:
                p2p.append((i, j))  # never also a provider-customer pair
    k = draw(st.integers(1, min(5, n)))
    origins = draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k, unique=True))
    prepend = draw(st.one_of(st.just([0] * k), st.lists(st.integers(0, 3), min_size=k, max_size=k)))
    return Case(tuple(asn), tuple(p2c), tuple(p2p), tuple(origins), tuple(prepend))


# The graph of test_routing_rules.HAND (ASNs 1..10 on rows 0..9), origins AS 1 and AS 8:
# once AS 8 comes back, AS 3 takes the longer customer route 3-6-8 and its customer 7
# must follow it from 7-3-1 to 7-3-6-8.
HAND = Case(
    asn=tuple(range(1, 11)),
    p2c=((0, 2), (1, 3), (2, 5), (5, 7), (2, 6), (3, 6), (3, 4), (8, 9)),
    p2p=((0, 1), (4, 5), (7, 8)),
    origins=(0, 7),
    prepend=(0, 0),
)
# Withdrawing origin AS 9 (index 1) makes AS 3 take the short provider route 3-1
# instead of the long customer route 3-4-5-6-9; its customer 50 should then leave
# 50-2-7-1 for the shorter 50-3-1 although 50's route never came from AS 9.
VALLEY = Case(
    asn=(1, 2, 3, 4, 5, 6, 7, 9, 50),
    p2c=((0, 2), (2, 3), (3, 4), (4, 5), (5, 7), (2, 8), (1, 8), (6, 1), (0, 6)),
    p2p=(),
    origins=(0, 7),
    prepend=(0, 0),
)


# ------------------------------------------------------------------ graph properties


def test_reference_on_the_hand_example() -> None:
    """The reference itself gives the BGPy-checked answer of the worked example."""
    got = reference_table(HAND, reference(HAND))
    assert [(o, n, r) for o, n, r, _ in got] == [
        (0, 1, 0),
        (0, 2, 2),
        (1, 3, 1),
        (0, 3, 3),
        (1, 3, 2),
        (1, 2, 1),
        (1, 4, 3),
        (1, 1, 0),
        (1, 2, 2),
        (1, 3, 3),
    ]
    assert got[6][3] == [7, 3, 6, 8]


@SETTINGS
@given(cases())
@example(HAND)
@example(VALLEY)
def test_propagate_matches_reference(case: Case) -> None:
    state = propagate(case.graph(), case.seeds())
    assert table(case, state) == reference_table(case, reference(case))
    np.testing.assert_array_equal(state.has_route, state.origin >= 0)
    np.testing.assert_array_equal(state.rank == Rank.NONE, state.origin < 0)


@SETTINGS
@given(cases())
@example(HAND)
def test_propagate_without_an_origin_matches_reference(case: Case) -> None:
    seeds = case.seeds()
    for k in range(len(seeds)):
        state = propagate(case.graph(), seeds.without(k))
        want = reference_table(case, reference(case, frozenset({k})))
        assert table(case, state) == want


@SETTINGS
@given(cases(), st.integers(0, 4))
@example(VALLEY, 1)
def test_withdraw_equals_fresh_propagation(case: Case, k: int) -> None:
    g, seeds = case.graph(), case.seeds()
    k %= len(seeds)
    after = withdraw(g, propagate(g, seeds), seeds, k)
    same_routes(after, propagate(g, seeds.without(k)))
    assert not np.any(after.origin == k)


@SETTINGS
@given(cases(), st.integers(0, 4))
@example(HAND, 1)
def test_update_after_withdraw_restores_the_state(case: Case, k: int) -> None:
    g, seeds = case.graph(), case.seeds()
    k %= len(seeds)
    before = propagate(g, seeds)
    # from a fresh state without k (so that only update() is under test)
    again = update(g, propagate(g, seeds.without(k)), seeds.without(k), seeds)
    same_routes(again, before)


@SETTINGS
@given(cases())
def test_update_from_nothing_equals_propagate(case: Case) -> None:
    """From no seeds to all of them, update gives what propagate gives."""
    g, seeds = case.graph(), case.seeds()
    empty = RouteState.empty(g.n)
    same_routes(update(g, empty, seeds.only(-1), seeds), propagate(g, seeds))


# ------------------------------------------------------------------- the default world

SITES = ["CHC", "AKL", "IAD", "LHR", "SIN"]


@pytest.fixture(scope="module")
def router(default_world: World) -> Router:
    return Router(default_world)


@pytest.fixture(scope="module")
def everywhere(router: Router) -> Catchment:
    return router.catchment()


def same_catchment(a: Catchment, b: Catchment) -> None:
    np.testing.assert_array_equal(a.eyeball_site, b.eyeball_site)
    np.testing.assert_allclose(a.walk.km, b.walk.km, equal_nan=True)
    np.testing.assert_allclose(a.eyeball_rtt_ms, b.eyeball_rtt_ms, equal_nan=True)
    np.testing.assert_allclose(a.site_demand(), b.site_demand())


def test_default_world_everything_reachable(everywhere: Catchment) -> None:
    share = everywhere.site_share()
    assert share.sum() == pytest.approx(1.0)
    assert everywhere.unreached_demand() == 0.0
    assert np.all(everywhere.eyeball_site >= 0)
    assert np.all(everywhere.state.has_route)


@pytest.mark.parametrize("code", SITES)
def test_default_world_withdraw_equals_fresh(
    default_world: World, router: Router, everywhere: Catchment, code: str
) -> None:
    s = default_world.network.sites.index(code)
    assert everywhere.site_demand()[s] > 0
    inc = router.withdraw(everywhere, s)
    fresh = router.catchment(everywhere.announcement.withdraw(s))
    same_catchment(inc, fresh)
    np.testing.assert_array_equal(inc.state.key, fresh.state.key)
    assert not np.any(inc.eyeball_site == s)
    assert inc.site_demand()[s] == 0.0
    total = default_world.peak_demand_rps()
    assert inc.site_share().sum() + inc.unreached_demand() / total == pytest.approx(1.0)
    assert inc.site_share().sum() == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("code", SITES)
def test_default_world_reannounce_prepend_equals_fresh(
    default_world: World, router: Router, everywhere: Catchment, code: str
) -> None:
    s = default_world.network.sites.index(code)
    ann = everywhere.announcement.with_prepend(s, 3)
    inc = router.change(everywhere, ann)
    fresh = router.catchment(ann)
    same_catchment(inc, fresh)
    np.testing.assert_array_equal(inc.state.key, fresh.state.key)
    # three prepends cost the site some of its demand, never win it more
    assert fresh.site_demand()[s] <= everywhere.site_demand()[s]
    assert fresh.site_share().sum() == pytest.approx(1.0)
    # and withdrawing after re-announcing plain gives back the first catchment
    back = router.change(inc, everywhere.announcement)
    same_catchment(back, everywhere)


def test_default_world_incremental_as_mode(default_world: World) -> None:
    r = Router(default_world, Mode.AS)
    c = r.catchment()
    for code in SITES:
        s = default_world.network.sites.index(code)
        same_catchment(r.withdraw(c, s), r.catchment(c.announcement.withdraw(s)))
        ann = c.announcement.with_prepend(s, 3)
        same_catchment(r.change(c, ann), r.catchment(ann))


def test_default_world_incremental_paths(
    default_world: World, router: Router, everywhere: Catchment
) -> None:
    for code in SITES:
        s = default_world.network.sites.index(code)
        inc = router.withdraw(everywhere, s)
        fresh = router.catchment(everywhere.announcement.withdraw(s))
        assert inc.as_rows() == fresh.as_rows()


def test_default_world_chc_goes_to_akl(
    default_world: World, router: Router, everywhere: Catchment
) -> None:
    """The reference's worked example: with CHC withdrawn its users go to Auckland."""
    sites = default_world.network.sites
    chc, akl = sites.index("CHC"), sites.index("AKL")
    e = default_world.internet.eyeballs
    was = everywhere.eyeball_site == chc
    assert e.rps[was].sum() > 0
    after = router.withdraw(everywhere, chc)
    moved = np.bincount(after.eyeball_site[was], weights=e.rps[was], minlength=len(sites))
    assert moved.sum() == pytest.approx(e.rps[was].sum())  # none left unreached
    assert int(moved.argmax()) == akl
    assert moved[akl] / moved.sum() > 0.9
