"""The routing engine on small hand-built graphs and worlds whose answers are known.

AS-level rules (Gao-Rexford preference, valley-free export, tie-breaks, prepending,
withdrawal and re-announcement) on bare graphs built with ``RoutingGraph.from_links``;
then catchments on a three-site world written inline as topology YAML: withdrawals,
prepends, scopes, more-specific prefixes, hot-potato routing and the latency of detours.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pytest

from anyedge.model import World, great_circle_km
from anyedge.model.files.topology import parse_world
from anyedge.routing import (
    Announcement,
    Catchment,
    Mode,
    Rank,
    Router,
    RouteState,
    RoutingGraph,
    Scope,
    Seeds,
    longest_match,
    prefix_for,
    propagate,
    update,
    withdraw,
)
from anyedge.routing.propagate import as_path

NONE = (-1, 0, Rank.NONE)
ORG, CUS, PEER, PROV = Rank.ORIGIN, Rank.CUSTOMER, Rank.PEER, Rank.PROVIDER

# ------------------------------------------------------------------------- AS graphs


class Net:
    """A bare AS graph by ASN: ``p2c`` as (provider, customer), ``p2p`` as (a, b)."""

    def __init__(
        self,
        asns: Iterable[int],
        p2c: Sequence[tuple[int, int]] = (),
        p2p: Sequence[tuple[int, int]] = (),
    ) -> None:
        self.asns = sorted(asns)
        self.row = {a: i for i, a in enumerate(self.asns)}
        self.g = RoutingGraph.from_links(
            self.asns,
            [(self.row[p], self.row[c]) for p, c in p2c],
            [(self.row[a], self.row[b]) for a, b in p2p],
        )

    def seeds(self, origins: Sequence[int], prepend: Sequence[int] | None = None) -> Seeds:
        return Seeds.origins([self.row[a] for a in origins], prepend=prepend)

    def run(self, origins: Sequence[int], prepend: Sequence[int] | None = None) -> RouteState:
        return propagate(self.g, self.seeds(origins, prepend))

    def table(self, state: RouteState) -> dict[int, tuple[int, int, Rank]]:
        """ASN -> (origin index, path length, rank)."""
        return {
            a: (int(state.origin[i]), int(state.length[i]), Rank(int(state.rank[i])))
            for i, a in enumerate(self.asns)
        }

    def path(self, state: RouteState, asn: int) -> list[int]:
        return as_path(state, self.g.asn, self.row[asn], {})


def same_routes(a: RouteState, b: RouteState) -> None:
    """Same best route everywhere: key (rank, length, neighbour), next hop and origin."""
    np.testing.assert_array_equal(a.key, b.key)
    np.testing.assert_array_equal(a.via, b.via)
    np.testing.assert_array_equal(a.origin, b.origin)


# The worked example of the BGPy notes, checked against BGPy itself; AS 9 peers with 8
# only and AS 10 is 9's customer (they hang off origin 8 and nothing else).
HAND = Net(
    range(1, 11),
    p2c=[(1, 3), (2, 4), (3, 6), (6, 8), (3, 7), (4, 7), (4, 5), (9, 10)],
    p2p=[(1, 2), (5, 6), (8, 9)],
)
HAND_EXPECTED = {
    1: (0, 1, ORG),
    2: (0, 2, PEER),  # 2-1
    3: (1, 3, CUS),  # customer 3-6-8 beats the shorter provider route 3-1
    4: (0, 3, PROV),  # 4-2-1: 5's peer route is not exported up to 4
    5: (1, 3, PEER),  # peer 5-6-8 beats provider 5-4-2-1
    6: (1, 2, CUS),
    7: (1, 4, PROV),  # 7-3-6-8 and 7-4-2-1 tie: lowest neighbour ASN (3), not origin ASN
    8: (1, 1, ORG),
    9: (1, 2, PEER),
    10: (1, 3, PROV),
}


def test_hand_example_matches_bgpy() -> None:
    state = HAND.run([1, 8])
    assert HAND.table(state) == HAND_EXPECTED
    assert HAND.path(state, 7) == [7, 3, 6, 8]
    assert HAND.path(state, 4) == [4, 2, 1]
    assert HAND.path(state, 10) == [10, 9, 8]
    assert HAND.path(state, 1) == [1]


def test_customer_route_beats_shorter_peer_route() -> None:
    # 100 peers with origin 20 (peer route, length 2) and reaches origin 30 through its
    # customer 40 (customer route, length 3)
    net = Net([20, 30, 40, 100], p2c=[(100, 40), (40, 30)], p2p=[(100, 20)])
    state = net.run([20, 30])
    assert net.table(state)[100] == (1, 3, CUS)
    assert net.path(state, 100) == [100, 40, 30]
    # without the customer route the peer route is taken
    state = net.run([20])
    assert net.table(state)[100] == (0, 2, PEER)


def test_peer_route_beats_shorter_provider_route() -> None:
    # 100's provider 5 is an origin (provider route, length 2); 100's peer 50 has
    # origin 60 as a customer (peer route, length 3)
    net = Net([5, 50, 60, 100], p2c=[(5, 100), (50, 60)], p2p=[(100, 50)])
    state = net.run([5, 60])
    assert net.table(state)[100] == (1, 3, PEER)
    assert net.path(state, 100) == [100, 50, 60]
    assert net.table(net.run([5]))[100] == (0, 2, PROV)


def test_peer_learned_route_goes_only_to_customers() -> None:
    # origin 1 peers with 2; 2 has provider 3, another peer 4 and customer 5
    net = Net([1, 2, 3, 4, 5], p2c=[(3, 2), (2, 5)], p2p=[(1, 2), (2, 4)])
    state = net.run([1])
    assert net.table(state) == {
        1: (0, 1, ORG),
        2: (0, 2, PEER),
        3: NONE,  # not exported up
        4: NONE,  # not exported to another peer
        5: (0, 3, PROV),
    }
    assert net.path(state, 3) == []
    assert not state.has_route[net.row[3]]


def test_provider_learned_route_goes_only_to_customers() -> None:
    # origin 1 is 2's provider; 2 has another provider 4, a peer 3 and a customer 5
    net = Net([1, 2, 3, 4, 5], p2c=[(1, 2), (4, 2), (2, 5)], p2p=[(2, 3)])
    state = net.run([1])
    assert net.table(state) == {
        1: (0, 1, ORG),
        2: (0, 2, PROV),
        3: NONE,
        4: NONE,
        5: (0, 3, PROV),
    }


def test_valleys_are_not_routes() -> None:
    # origin 10 is a customer of 1; 20 is a customer of 1 and 2; 2 could only reach 10
    # down through 1 and up through 20 (a valley), and so could 2's customer 30
    net = Net([1, 2, 10, 20, 30], p2c=[(1, 10), (1, 20), (2, 20), (2, 30)])
    state = net.run([10])
    assert net.table(state) == {
        1: (0, 2, CUS),
        2: NONE,
        10: (0, 1, ORG),
        20: (0, 3, PROV),
        30: NONE,
    }
    assert state.origin[net.row[2]] == -1


def test_shortest_path_among_same_rank_routes() -> None:
    # 100 reaches origin 40 through customer 50 (length 3) or customer 20 then 30
    # (length 4); the lower neighbour ASN (20) does not win against a shorter path
    net = Net([20, 30, 40, 50, 100], p2c=[(100, 50), (100, 20), (50, 40), (20, 30), (30, 40)])
    state = net.run([40])
    assert net.table(state)[100] == (0, 3, CUS)
    assert net.path(state, 100) == [100, 50, 40]
    assert net.path(state, 20) == [20, 30, 40]


@pytest.mark.parametrize("order", [(1, 2), (2, 1)])
def test_lowest_neighbour_asn_breaks_ties(order: tuple[int, int]) -> None:
    # 100 has providers 7 and 8; 8's customer 1 and 7's customer 2 are origins, so both
    # routes are provider routes of length 3; neighbour 7 wins whatever the origin order
    net = Net([1, 2, 7, 8, 100], p2c=[(8, 1), (7, 2), (8, 100), (7, 100)])
    state = net.run(list(order))
    via_7 = order.index(2)
    assert net.table(state)[100] == (via_7, 3, PROV)
    assert net.path(state, 100) == [100, 7, 2]


def test_prepending_moves_ases_with_equal_length_choices() -> None:
    # origins 1 and 2 are customers of 100 (provider 200 above it); 50 peers with 1 and
    # is 100's customer too
    net = Net([1, 2, 50, 100, 200], p2c=[(100, 1), (100, 2), (200, 100), (100, 50)], p2p=[(1, 50)])
    plain = net.table(net.run([1, 2]))
    assert plain[100] == (0, 2, CUS)  # neighbour 1 < 2
    assert plain[200] == (0, 3, CUS)
    assert plain[50] == (0, 2, PEER)
    state = net.run([1, 2], prepend=[1, 0])
    moved = net.table(state)
    assert moved[1] == (0, 2, ORG)  # the origin's own route counts its prepend
    assert moved[2] == (1, 1, ORG)
    assert moved[100] == (1, 2, CUS)
    assert moved[200] == (1, 3, CUS)
    assert net.path(state, 200) == [200, 100, 2]
    # a peer route beats a provider route however long it is
    assert moved[50] == (0, 3, PEER)
    assert net.table(net.run([1, 2], prepend=[5, 0]))[50] == (0, 7, PEER)


# -------------------------------------------------------------- withdraw and update


@pytest.mark.parametrize("k", [0, 1])
def test_withdraw_equals_fresh_propagation(k: int) -> None:
    seeds = HAND.seeds([1, 8])
    before = propagate(HAND.g, seeds)
    after = withdraw(HAND.g, before, seeds, k)
    fresh = propagate(HAND.g, seeds.without(k))
    same_routes(after, fresh)
    assert not np.any(after.origin == k)


def test_withdraw_known_answers() -> None:
    seeds = HAND.seeds([1, 8])
    before = propagate(HAND.g, seeds)
    assert HAND.table(withdraw(HAND.g, before, seeds, 0)) == {
        1: (1, 4, CUS),
        2: (1, 5, PEER),
        3: (1, 3, CUS),
        4: (1, 6, PROV),
        5: (1, 3, PEER),
        6: (1, 2, CUS),
        7: (1, 4, PROV),
        8: (1, 1, ORG),
        9: (1, 2, PEER),
        10: (1, 3, PROV),
    }
    after = withdraw(HAND.g, before, seeds, 1)
    assert HAND.table(after) == {
        1: (0, 1, ORG),
        2: (0, 2, PEER),
        3: (0, 2, PROV),
        4: (0, 3, PROV),
        5: (0, 4, PROV),
        6: (0, 3, PROV),
        7: (0, 3, PROV),
        8: (0, 4, PROV),
        9: NONE,  # 8's route now comes from its provider: not for its peer 9
        10: NONE,
    }
    assert HAND.path(after, 8) == [8, 6, 3, 1]
    assert after.via[HAND.row[9]] == -1
    assert after.seed[HAND.row[9]] == -1


@pytest.mark.parametrize("k", [0, 1])
def test_update_after_withdraw_restores_the_routes(k: int) -> None:
    seeds = HAND.seeds([1, 8])
    before = propagate(HAND.g, seeds)
    again = update(HAND.g, withdraw(HAND.g, before, seeds, k), seeds.without(k), seeds)
    same_routes(again, before)
    assert HAND.table(again) == HAND_EXPECTED


def test_withdraw_and_update_keep_seed_rows_consistent() -> None:
    """RouteState.seed is a row of the seeds the state goes with (as_path, Mode.AS use it)."""
    net = Net([1, 2, 3, 10], p2c=[(10, 1), (10, 2), (10, 3)])
    seeds = net.seeds([1, 2, 3])
    before = propagate(net.g, seeds)
    after = withdraw(net.g, before, seeds, 0)
    np.testing.assert_array_equal(after.seed, propagate(net.g, seeds.without(0)).seed)
    again = update(net.g, after, seeds.without(0), seeds)
    np.testing.assert_array_equal(again.seed, before.seed)


def test_withdraw_can_improve_routes_of_other_origins() -> None:
    # 3 prefers the long customer route 3-4-5-6-9 to origin 9 over its provider 1 (an
    # origin); its customer 50 takes 50-2-7-1 rather than 50-3-4-5-6-9.  Once 9
    # withdraws, 3 takes 3-1 and 50 should take the shorter 50-3-1.
    net = Net(
        [1, 2, 3, 4, 5, 6, 7, 9, 50],
        p2c=[(1, 3), (3, 4), (4, 5), (5, 6), (6, 9), (3, 50), (2, 50), (7, 2), (1, 7)],
    )
    seeds = net.seeds([1, 9])
    before = propagate(net.g, seeds)
    assert net.path(before, 50) == [50, 2, 7, 1]
    fresh = propagate(net.g, seeds.without(1))
    assert net.path(fresh, 50) == [50, 3, 1]
    after = withdraw(net.g, before, seeds, 1)
    assert net.path(after, 50) == [50, 3, 1]
    same_routes(after, fresh)


def test_a_new_origin_can_lengthen_routes_of_others() -> None:
    """Once 8 announces, 3 takes the longer customer route 3-6-8 and its customer 7
    follows: an announcement can make others' routes longer (update must follow it)."""
    seeds = HAND.seeds([1, 8])
    only_1 = propagate(HAND.g, seeds.without(1))
    both = propagate(HAND.g, seeds)
    assert HAND.path(only_1, 7) == [7, 3, 1]
    assert HAND.path(both, 7) == [7, 3, 6, 8]  # longer: 3 now prefers its customer route


def test_withdraw_of_an_origin_nobody_uses_changes_nothing() -> None:
    # origin 100 has its own route; origin 1 is its customer, whose route 100 does not
    # take; withdrawing origin 1 only changes 1 itself
    net = Net([1, 100, 200], p2c=[(100, 1), (200, 100)])
    seeds = net.seeds([100, 1])
    before = propagate(net.g, seeds)
    after = withdraw(net.g, before, seeds, 1)
    same_routes(after, propagate(net.g, seeds.without(1)))
    assert net.table(after) == {1: (0, 2, PROV), 100: (0, 1, ORG), 200: (0, 2, CUS)}


# ---------------------------------------------------------------------------- worlds

ANYEDGE = 64500
CHRISTCHURCH, AUCKLAND, LOS_ANGELES = 2192362, 2193733, 5368361

# Sites CHC and AKL buy transit from 2001 (present in both NZ cities) and peer with
# NZ access networks; LAX buys transit from tier-1 1001 (in Los Angeles and
# Christchurch).  10003 is present in both NZ cities and peers with both NZ sites;
# 10005 is in Auckland but only meets its provider 1001 in Los Angeles; 10006 has no
# transit at all and only peers with CHC.
TOPOLOGY = f"""
asn: {ANYEDGE}
latency: {{inflation: 1.3, access_ms: 2.0}}
sites:
  - code: CHC
    city: Christchurch
    country: NZ
    lat: -43.53
    lon: 172.63
    sections: [{{name: CHC01, servers: 8, cpu_per_server: 64000}}]
    transit: [2001]
    peers: [10001, 10003, 10006]
  - code: AKL
    city: Auckland
    country: NZ
    lat: -37.01
    lon: 174.79
    sections: [{{name: AKL01, servers: 16, cpu_per_server: 64000}}]
    transit: [2001]
    peers: [10002, 10003]
  - code: LAX
    city: Los Angeles
    country: US
    lat: 33.94
    lon: -118.41
    sections: [{{name: LAX01, servers: 16, cpu_per_server: 64000}}]
    transit: [1001]
prefixes:
  - {{cidr: 198.51.100.0/24, sites: all}}
  - {{cidr: 198.51.100.128/25, sites: [AKL]}}
internet:
  relations:
    - "1001|2001|-1"
    - "2001|10001|-1"
    - "2001|10002|-1"
    - "2001|10003|-1"
    - "1001|10004|-1"
    - "1001|10005|-1"
  ases:
    - {{asn: 1001, kind: tier1, metros: [{LOS_ANGELES}, {CHRISTCHURCH}]}}
    - {{asn: 2001, kind: transit, country: NZ, metros: [{CHRISTCHURCH}, {AUCKLAND}]}}
    - {{asn: 10001, kind: access, country: NZ}}
    - {{asn: 10002, kind: access, country: NZ}}
    - {{asn: 10003, kind: access, country: NZ}}
    - {{asn: 10004, kind: access, country: US}}
    - {{asn: 10005, kind: access, country: NZ, metros: [{LOS_ANGELES}]}}
    - {{asn: 10006, kind: access, country: NZ}}
  metros:
    - {{id: {CHRISTCHURCH}, name: Christchurch, country: NZ, lat: -43.53, lon: 172.63,
        population: 419200}}
    - {{id: {AUCKLAND}, name: Auckland, country: NZ, lat: -36.85, lon: 174.76,
        population: 1547200}}
    - {{id: {LOS_ANGELES}, name: Los Angeles, country: US, lat: 34.05, lon: -118.24,
        population: 3898747}}
  eyeballs:
    - {{asn: 10001, metro: {CHRISTCHURCH}, rps: 20000}}
    - {{asn: 10002, metro: {AUCKLAND}, rps: 30000}}
    - {{asn: 10003, metro: {CHRISTCHURCH}, rps: 10000}}
    - {{asn: 10003, metro: {AUCKLAND}, rps: 40000}}
    - {{asn: 10004, metro: {LOS_ANGELES}, rps: 50000}}
    - {{asn: 10005, metro: {AUCKLAND}, rps: 5000}}
    - {{asn: 10006, metro: {CHRISTCHURCH}, rps: 1000}}
"""


@pytest.fixture(scope="module")
def world() -> World:
    return parse_world(TOPOLOGY)


@pytest.fixture(scope="module")
def metro_router(world: World) -> Router:
    return Router(world)


@pytest.fixture(scope="module")
def as_router(world: World) -> Router:
    return Router(world, Mode.AS)


def site(world: World, code: str) -> int:
    return world.network.sites.index(code)


def eyeball(world: World, asn: int, metro: int) -> int:
    inet = world.internet
    a, m = inet.index(asn), inet.metros.index(metro)
    (rows,) = np.nonzero((inet.eyeballs.as_ == a) & (inet.eyeballs.metro == m))
    assert rows.size == 1
    return int(rows[0])


def where(c: Catchment) -> dict[tuple[int, int], str | None]:
    """(ASN, metro id) -> site code each eyeball reaches."""
    w = c.world
    inet, codes = w.internet, w.network.sites.code
    return {
        (int(inet.asn[a]), int(inet.metros.id[m])): codes[s] if s >= 0 else None
        for a, m, s in zip(
            inet.eyeballs.as_.tolist(),
            inet.eyeballs.metro.tolist(),
            c.eyeball_site.tolist(),
            strict=True,
        )
    }


def as_sites(c: Catchment) -> dict[int, str | None]:
    w = c.world
    codes = w.network.sites.code
    return {
        int(a): codes[s] if s >= 0 else None
        for a, s in zip(w.internet.asn.tolist(), c.as_site.tolist(), strict=True)
    }


def metro_xy(world: World, metro: int) -> tuple[float, float]:
    m = world.internet.metros
    i = m.index(metro)
    return float(m.lat[i]), float(m.lon[i])


def site_xy(world: World, code: str) -> tuple[float, float]:
    s = world.network.sites
    i = s.index(code)
    return float(s.lat[i]), float(s.lon[i])


def km(a: tuple[float, float], b: tuple[float, float]) -> float:
    return float(great_circle_km(a[0], a[1], b[0], b[1]))


BASE_METRO = {
    (10001, CHRISTCHURCH): "CHC",
    (10002, AUCKLAND): "AKL",
    (10003, CHRISTCHURCH): "CHC",
    (10003, AUCKLAND): "AKL",  # hot potato: its Auckland users leave in Auckland
    (10004, LOS_ANGELES): "LAX",
    (10005, AUCKLAND): "LAX",
    (10006, CHRISTCHURCH): "CHC",
}


def test_world_catchment_everywhere(metro_router: Router, as_router: Router) -> None:
    c = metro_router.catchment()
    assert where(c) == BASE_METRO
    assert as_sites(c) == {
        1001: "LAX",
        2001: "CHC",  # CHC and AKL tie on (customer, 2, anyedge): lower site row
        10001: "CHC",
        10002: "AKL",
        10003: "CHC",
        10004: "LAX",
        10005: "LAX",
        10006: "CHC",
    }
    a = as_router.catchment()
    assert where(a) == {**BASE_METRO, (10003, AUCKLAND): "CHC"}
    for x in (c, a):
        share = x.site_share()
        assert share.sum() == pytest.approx(1.0)
        assert x.unreached_demand() == 0.0
    # shares by site: CHC 20k+10k+1k, AKL 30k+40k, LAX 50k+5k of 156k
    np.testing.assert_allclose(c.site_share(), np.array([31, 70, 55]) / 156)
    np.testing.assert_allclose(a.site_share(), np.array([71, 30, 55]) / 156)


@pytest.mark.parametrize(
    ("mode", "incremental"),
    [
        (Mode.METRO, False),
        (Mode.METRO, True),
        (Mode.AS, False),
        pytest.param(Mode.AS, True),
    ],
)
def test_world_withdraw_site(world: World, mode: Mode, incremental: bool) -> None:
    r = Router(world, mode)
    c = r.catchment()
    chc = site(world, "CHC")
    after = r.withdraw(c, chc) if incremental else r.catchment(c.announcement.withdraw(chc))
    np.testing.assert_array_equal(after.announcement.announced, [False, True, True])
    got = where(after)
    assert got[(10001, CHRISTCHURCH)] == "AKL"  # through its provider 2001 now
    assert got[(10003, CHRISTCHURCH)] == "AKL"
    assert got[(10006, CHRISTCHURCH)] is None  # its only way was the CHC peering
    assert got[(10004, LOS_ANGELES)] == "LAX"
    assert not np.any(after.eyeball_site == chc)
    assert after.site_demand()[chc] == 0.0
    assert after.unreached_demand() == 1000.0
    assert after.site_share().sum() == pytest.approx(155 / 156)
    assert as_sites(after)[2001] == "AKL"
    rows = {row["asn"]: row for row in after.as_rows()}
    assert rows[10001]["path"] == [10001, 2001, ANYEDGE]
    assert rows[10001]["relation"] == "provider"
    assert rows[10006] == {"asn": 10006, "site": None, "relation": "none", "path": []}


def test_world_withdraw_lengthens_round_trips(world: World, metro_router: Router) -> None:
    c = metro_router.catchment()
    i = eyeball(world, 10001, CHRISTCHURCH)
    lat = world.latency
    chch = metro_xy(world, CHRISTCHURCH)
    before = float(c.eyeball_rtt_ms[i])
    assert before == pytest.approx(float(lat.rtt_ms(*chch, *site_xy(world, "CHC"))))
    after = metro_router.withdraw(c, site(world, "CHC"))
    # handed to 2001 in Christchurch, which carries it to the AKL site
    rtt = float(after.eyeball_rtt_ms[i])
    assert rtt == pytest.approx(float(lat.rtt_ms(*chch, *site_xy(world, "AKL"))))
    assert rtt > before + 5.0


def test_world_detour_through_los_angeles(world: World, metro_router: Router) -> None:
    """10005's Auckland users meet their provider in Los Angeles: the Pacific, twice."""
    c = metro_router.catchment()
    i = eyeball(world, 10005, AUCKLAND)
    lat = world.latency
    akl, la, chch = (metro_xy(world, m) for m in (AUCKLAND, LOS_ANGELES, CHRISTCHURCH))
    direct = float(lat.rtt_ms(*akl, *site_xy(world, "AKL")))
    assert c.eyeball_site[i] == site(world, "LAX")
    to_lax = km(akl, la) + km(la, site_xy(world, "LAX"))
    assert float(c.walk.km[i]) == pytest.approx(to_lax)
    assert float(c.eyeball_rtt_ms[i]) == pytest.approx(float(lat.rtt_from_km(to_lax)))
    assert c.eyeball_path(i) == [10005, 1001, ANYEDGE]
    # without LAX, 1001 hands over to 2001 in Christchurch, 2001 to the CHC site there
    after = metro_router.withdraw(c, site(world, "LAX"))
    assert after.eyeball_site[i] == site(world, "CHC")
    detour = km(akl, la) + km(la, chch) + km(chch, site_xy(world, "CHC"))
    assert float(after.walk.km[i]) == pytest.approx(detour)
    rtt = float(after.eyeball_rtt_ms[i])
    assert rtt == pytest.approx(float(lat.rtt_from_km(detour)))
    assert rtt > direct + 200.0
    assert after.eyeball_path(i) == [10005, 1001, 2001, ANYEDGE]


def test_world_prepend_moves_equal_length_choices(world: World, as_router: Router) -> None:
    chc = site(world, "CHC")
    after = as_router.catchment(Announcement.everywhere(3).with_prepend(chc, 1))
    got = as_sites(after)
    assert got[2001] == "AKL"  # (customer, 3) from CHC now loses to (customer, 2)
    assert got[10003] == "AKL"
    assert got[10001] == "CHC"  # a peer route beats a provider route, even longer
    assert got[10006] == "CHC"
    assert where(after)[(10003, CHRISTCHURCH)] == "AKL"
    assert int(after.state.length[world.internet.index(10001)]) == 3
    assert int(after.state.length[world.internet.index(2001)]) == 2


def test_world_prepend_with_hot_potato(world: World, metro_router: Router) -> None:
    c = metro_router.catchment()
    chc = site(world, "CHC")
    after = metro_router.catchment(c.announcement.with_prepend(chc, 2))
    got = where(after)
    assert got[(10003, CHRISTCHURCH)] == "AKL"  # no longer an equal choice
    assert got[(10001, CHRISTCHURCH)] == "CHC"
    i = eyeball(world, 10001, CHRISTCHURCH)
    assert after.eyeball_path(i) == [10001, ANYEDGE, ANYEDGE, ANYEDGE]
    rows = {row["asn"]: row for row in after.as_rows()}
    assert rows[10001]["path"] == [10001, ANYEDGE, ANYEDGE, ANYEDGE]
    assert rows[10001]["relation"] == "peer"


def test_world_scope_peers_only(world: World, as_router: Router) -> None:
    chc = site(world, "CHC")
    ann = Announcement.everywhere(3).with_scope(chc, Scope.PEERS)
    c = as_router.catchment(ann)
    got = as_sites(c)
    assert got[2001] == "AKL"  # CHC's transit session carries nothing now
    assert got[1001] == "LAX"
    assert got[10001] == "CHC"
    assert got[10003] == "CHC"
    assert got[10006] == "CHC"
    rows = {row["asn"]: row for row in c.as_rows()}
    assert rows[2001]["path"] == [2001, ANYEDGE]
    assert np.sum(c.seeds.origin == chc) == 3  # 10001, 10003, 10006


def test_world_scope_transit_only(world: World, as_router: Router) -> None:
    chc = site(world, "CHC")
    ann = Announcement.everywhere(3).with_scope(chc, Scope.TRANSIT)
    c = as_router.catchment(ann)
    assert np.sum(c.seeds.origin == chc) == 1
    got = as_sites(c)
    assert got[2001] == "CHC"
    assert got[10001] == "CHC"  # still CHC, but through 2001
    assert got[10003] == "AKL"  # its AKL peering is all that is left
    assert got[10006] is None
    rows = {row["asn"]: row for row in c.as_rows()}
    assert rows[10001]["path"] == [10001, 2001, ANYEDGE]
    assert rows[10001]["relation"] == "provider"
    assert where(c)[(10003, CHRISTCHURCH)] == "AKL"


def test_world_more_specific_prefix_wins(world: World, metro_router: Router) -> None:
    net = world.network
    wide, narrow = net.prefixes.cidr.index("198.51.100.0/24"), 1
    assert net.prefixes.cidr[narrow] == "198.51.100.128/25"
    assert prefix_for(world, "198.51.100.200") == [narrow, wide]
    assert prefix_for(world, "198.51.100.5") == [wide]
    assert prefix_for(world, "203.0.113.1") == []
    cs = [metro_router.catchment(Announcement.of_prefix(net, p)) for p in (narrow, wide)]
    np.testing.assert_array_equal(cs[0].announcement.announced, [False, True, False])
    got = longest_match(cs)
    sites = net.sites.code
    result = {k: sites[s] if s >= 0 else None for k, s in zip(where(cs[1]), got, strict=True)}
    # every AS with a route for the /25 goes to AKL; 10006 has none and keeps the /24
    assert result == {
        (10001, CHRISTCHURCH): "AKL",
        (10002, AUCKLAND): "AKL",
        (10003, CHRISTCHURCH): "AKL",
        (10003, AUCKLAND): "AKL",
        (10004, LOS_ANGELES): "AKL",
        (10005, AUCKLAND): "AKL",
        (10006, CHRISTCHURCH): "CHC",
    }
    # only the covering prefix: its own catchment
    np.testing.assert_array_equal(longest_match([cs[1]]), cs[1].eyeball_site)


def test_world_hot_potato(world: World, metro_router: Router, as_router: Router) -> None:
    chch, akl = eyeball(world, 10003, CHRISTCHURCH), eyeball(world, 10003, AUCKLAND)
    m = metro_router.catchment()
    assert m.eyeball_site[chch] == site(world, "CHC")
    assert m.eyeball_site[akl] == site(world, "AKL")
    a = as_router.catchment()
    assert a.eyeball_site[chch] == a.eyeball_site[akl] == site(world, "CHC")
    # the AS-level choice makes Auckland users cross to Christchurch
    lat = world.latency
    xy = metro_xy(world, AUCKLAND)
    assert float(m.eyeball_rtt_ms[akl]) == pytest.approx(
        float(lat.rtt_ms(*xy, *site_xy(world, "AKL")))
    )
    assert float(a.eyeball_rtt_ms[akl]) == pytest.approx(
        float(lat.rtt_ms(*xy, *site_xy(world, "CHC")))
    )
    assert float(a.eyeball_rtt_ms[akl]) > float(m.eyeball_rtt_ms[akl]) + 5.0
    # both modes agree on each AS's own chosen route
    np.testing.assert_array_equal(m.as_site, a.as_site)
    assert m.to_dict()["mode"] == "metro"
    assert a.to_dict()["mode"] == "as"


def test_world_to_dict_full(world: World, metro_router: Router) -> None:
    c = metro_router.catchment()
    d = c.to_dict(full=True)
    assert d["announced"] == ["CHC", "AKL", "LAX"]
    assert [s["site"] for s in d["sites"]] == ["CHC", "AKL", "LAX"]
    assert sum(s["share"] for s in d["sites"]) == pytest.approx(1.0)
    assert [s["rps"] for s in d["sites"]] == [31000.0, 70000.0, 55000.0]
    assert d["unreached_rps"] == 0.0
    ases = d["ases"]
    assert [row["asn"] for row in ases] == world.internet.asn.tolist()
    for row in ases:
        assert row["path"][0] == row["asn"]
        assert row["path"][-1] == ANYEDGE
    by_asn = {row["asn"]: row for row in ases}
    assert by_asn[10004] == {
        "asn": 10004,
        "site": "LAX",
        "relation": "provider",
        "path": [10004, 1001, ANYEDGE],
    }
    assert by_asn[2001]["relation"] == "customer"
    eyes = d["eyeballs"]
    assert len(eyes) == len(world.internet.eyeballs) == 7
    for row in eyes:
        assert row["path"][0] == row["asn"]
        assert row["path"][-1] == ANYEDGE
        assert row["site"] == BASE_METRO[(row["asn"], row["metro"])]
    row = next(r for r in eyes if (r["asn"], r["metro"]) == (10003, AUCKLAND))
    assert row["path"] == [10003, ANYEDGE]
    assert row["metro_name"] == "Auckland"
    assert row["relation"] == "peer"
    assert row["rps"] == 40000.0
    assert row["rtt_ms"] == pytest.approx(
        float(world.latency.rtt_ms(*metro_xy(world, AUCKLAND), *site_xy(world, "AKL"))), abs=1e-3
    )


@pytest.mark.parametrize(
    "mode",
    [Mode.METRO, Mode.AS],
)
def test_world_withdraw_everything(world: World, mode: Mode) -> None:
    r = Router(world, mode)
    c = r.catchment()
    for s in range(3):
        c = r.withdraw(c, s)
    assert not c.state.has_route.any()
    assert np.all(c.eyeball_site == -1)
    assert np.all(np.isnan(c.eyeball_rtt_ms))
    assert c.site_share().sum() == 0.0
    assert c.to_dict()["mean_rtt_ms"] is None
    # and back, one site at a time, through reannounce
    full = Announcement.everywhere(3)
    ann = c.announcement
    for s in range(3):
        ann = ann.announce(s)
        c = r.change(c, ann)
    fresh = r.catchment(full)
    same_routes(c.state, fresh.state)
    np.testing.assert_array_equal(c.eyeball_site, fresh.eyeball_site)


FULL = Announcement.everywhere(3)
CHANGES = {
    "withdraw-CHC": (0, FULL.withdraw(0)),
    "withdraw-AKL": (1, FULL.withdraw(1)),
    "withdraw-LAX": (2, FULL.withdraw(2)),
    "prepend-CHC": (0, FULL.with_prepend(0, 1)),
    "prepend-AKL": (1, FULL.with_prepend(1, 2)),
    "prepend-LAX": (2, FULL.with_prepend(2, 1)),
    "peers-CHC": (0, FULL.with_scope(0, Scope.PEERS)),
    "transit-CHC": (0, FULL.with_scope(0, Scope.TRANSIT)),
    "transit-AKL": (1, FULL.with_scope(1, Scope.TRANSIT)),
}


def incremental(r: Router, name: str) -> tuple[Catchment, Catchment]:
    """(incremental, fresh) catchments of one change from every site announcing."""
    s, ann = CHANGES[name]
    base = r.catchment()
    inc = r.withdraw(base, s) if name.startswith("withdraw") else r.change(base, ann)
    return inc, r.catchment(ann)


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_world_incremental_keys_and_sites(world: World, metro_router: Router, name: str) -> None:
    """Router.withdraw/change: the same route keys and user sites as a fresh run."""
    inc, fresh = incremental(metro_router, name)
    np.testing.assert_array_equal(inc.state.key, fresh.state.key)
    np.testing.assert_array_equal(inc.state.via, fresh.state.via)
    np.testing.assert_array_equal(inc.eyeball_site, fresh.eyeball_site)
    np.testing.assert_allclose(inc.walk.km, fresh.walk.km, equal_nan=True)
    np.testing.assert_array_equal(inc.announcement.announced, fresh.announcement.announced)
    np.testing.assert_array_equal(inc.announcement.prepend, fresh.announcement.prepend)


def _full_cases() -> list[object]:
    out: list[object] = []
    for mode in Mode:
        for name in sorted(CHANGES):
            out.append(pytest.param(mode, name, id=f"{mode}-{name}"))
    return out


@pytest.mark.parametrize(("mode", "name"), _full_cases())
def test_world_incremental_equals_fresh(world: World, mode: Mode, name: str) -> None:
    """Everything a catchment reports is the same, incremental or fresh, in both modes."""
    inc, fresh = incremental(Router(world, mode), name)
    np.testing.assert_array_equal(inc.eyeball_site, fresh.eyeball_site)
    np.testing.assert_allclose(inc.walk.km, fresh.walk.km, equal_nan=True)
    same_routes(inc.state, fresh.state)
    assert inc.to_dict(full=True) == fresh.to_dict(full=True)


def test_world_reannounce_transit_scope_updates_origins(world: World) -> None:
    # withdrawing CHC moves 2001 and its customer 10001 to AKL; announcing CHC to
    # transit only brings 2001 back to CHC with an equal key, and 10001 must follow
    inc, fresh = incremental(Router(world), "transit-CHC")
    assert as_sites(fresh)[10001] == "CHC"
    assert as_sites(inc)[10001] == "CHC"


# 10001 is only in Auckland; its providers share no metro with it: 2001 is in Los
# Angeles (and sells LAX transit), 3001 in Sydney (SYD transit).  Both routes are
# (provider, 3); a neighbour without a shared metro is met
# "wherever the neighbour is", so hot potato should pick Sydney, 2,200 km away, not
# Los Angeles at 10,500 km (the lowest neighbour ASN, 2001, would pick Los Angeles).
NO_SHARED_METRO = """
asn: 64500
sites:
  - {code: SYD, city: Sydney, country: AU, lat: -33.95, lon: 151.18,
     sections: [{name: SYD01, servers: 1, cpu_per_server: 1000}], transit: [3001]}
  - {code: LAX, city: Los Angeles, country: US, lat: 33.94, lon: -118.41,
     sections: [{name: LAX01, servers: 1, cpu_per_server: 1000}], transit: [2001]}
internet:
  relations: ["2001|10001|-1", "3001|10001|-1"]
  ases:
    - {asn: 2001, metros: [5368361]}
    - {asn: 3001, metros: [2147714]}
  metros:
    - {id: 2193733, name: Auckland, country: NZ, lat: -36.85, lon: 174.76, population: 1}
    - {id: 5368361, name: Los Angeles, country: US, lat: 34.05, lon: -118.24, population: 1}
    - {id: 2147714, name: Sydney, country: AU, lat: -33.87, lon: 151.21, population: 1}
  eyeballs:
    - {asn: 10001, metro: 2193733, rps: 1}
"""


def test_as_mode_ignores_distance_without_shared_metro() -> None:
    w = parse_world(NO_SHARED_METRO)
    c = Router(w, Mode.AS).catchment()
    assert w.network.sites.code[int(c.eyeball_site[0])] == "LAX"  # lowest neighbour ASN
    assert c.eyeball_path(0) == [10001, 2001, ANYEDGE]


def test_hand_over_without_shared_metro_is_where_the_neighbour_is() -> None:
    w = parse_world(NO_SHARED_METRO)
    c = Router(w).catchment()
    assert w.network.sites.code[int(c.eyeball_site[0])] == "SYD"
    akl, syd = metro_xy(w, 2193733), metro_xy(w, 2147714)
    assert float(c.walk.km[0]) == pytest.approx(km(akl, syd) + km(syd, site_xy(w, "SYD")))
