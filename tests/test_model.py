"""Invariants of the network model: tables, the Internet, plans and the latency model."""

from __future__ import annotations

import math
from dataclasses import replace
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anyedge.model import (
    DEFAULT_PLANS,
    DEFAULT_THRESHOLDS,
    PLAN_NAMES,
    ASKind,
    Eyeballs,
    Internet,
    LatencyModel,
    Metros,
    Network,
    Plans,
    Prefixes,
    Sections,
    SessionKind,
    Sessions,
    SiteKind,
    Sites,
    World,
    great_circle_km,
)
from anyedge.model.geo import EARTH_RADIUS_KM
from anyedge.model.internet import ProviderLoopError

LONDON = (51.5074, -0.1278)
NEW_YORK = (40.7128, -74.0060)
SYDNEY = (-33.8688, 151.2093)
AUCKLAND = (-36.8485, 174.7633)
HALF_CIRCUMFERENCE_KM = math.pi * EARTH_RADIUS_KM  # about 20016 km


# ---------------------------------------------------------------------------- builders


def make_sites(codes: tuple[str, ...] = ("LHR", "EWR", "SYD")) -> Sites:
    n = len(codes)
    return Sites(
        code=codes,
        city=tuple(f"city-{c}" for c in codes),
        country=("GB", "US", "AU", "NZ", "FR")[:n],
        lat=np.linspace(-30.0, 50.0, n),
        lon=np.linspace(-70.0, 150.0, n),
        kind=np.array([SiteKind.MCP] + [SiteKind.SINGLE] * (n - 1)),
        thresholds=np.tile(DEFAULT_THRESHOLDS, (n, 1)),
    )


def make_sections() -> Sections:
    # Site 0 has three sections, site 1 one, site 2 two (one of them without servers).
    return Sections(
        name=("LHR01", "LHR02", "LHR03", "EWR01", "SYD01", "SYD02"),
        site=np.array([0, 0, 0, 1, 2, 2]),
        servers=np.array([10, 20, 5, 7, 3, 0]),
        cpu_per_server=np.array([48_000.0, 64_000.0, 96_000.0, 64_000.0, 48_000.0, 96_000.0]),
    )


def make_network() -> Network:
    sites = make_sites()
    return Network(
        asn=64500,
        sites=sites,
        sections=make_sections(),
        prefixes=Prefixes(
            cidr=("192.0.2.0/24", "2001:db8::/48"), announced=np.ones((2, 3), dtype=np.bool_)
        ),
        sessions=Sessions.from_rows(
            [
                (2, 30, SessionKind.PEER),
                (0, 20, SessionKind.TRANSIT),
                (0, 10, SessionKind.TRANSIT),
                (1, 10, SessionKind.TRANSIT),
                (2, 20, SessionKind.TRANSIT),
                (0, 50, SessionKind.PEER),
            ]
        ),
    )


def make_metros() -> Metros:
    return Metros(
        id=np.array([100, 200, 300]),
        name=("London", "New York City", "Sydney"),
        country=("GB", "US", "AU"),
        lat=np.array([LONDON[0], NEW_YORK[0], SYDNEY[0]]),
        lon=np.array([LONDON[1], NEW_YORK[1], SYDNEY[1]]),
        population=np.array([9_000_000, 8_000_000, 5_000_000]),
    )


def make_internet(
    asns: tuple[int, ...] = (10, 20, 30, 40, 50),
    p2c: list[tuple[int, int]] | None = None,
) -> Internet:
    """Five ASes; ``p2c`` as (provider ASN, customer ASN) pairs, a hierarchy by default.

    Default hierarchy: 10 is provider of 20, 30 and 50; 20 and 30 are providers of 40;
    40 is provider of 50.  Heights: 50 → 0, 40 → 1, 20 and 30 → 2, 10 → 3.
    """
    if p2c is None:
        p2c = [(10, 20), (10, 30), (20, 40), (30, 40), (40, 50), (10, 50)]
    row = {a: i for i, a in enumerate(asns)}
    n = len(asns)
    return Internet(
        asn=np.array(asns),
        kind=np.array(
            [ASKind.TIER1, ASKind.TRANSIT, ASKind.TRANSIT, ASKind.ACCESS, ASKind.ACCESS][:n]
        ),
        name=tuple(f"AS{a}" for a in asns),
        country=("", "", "", "GB", "US")[:n],
        p2c=[(row[p], row[c]) for p, c in p2c],
        p2p=[(1, 2)],
        metros=make_metros(),
        presence=[(0, 0), (0, 1), (3, 0), (4, 1)],
        eyeballs=Eyeballs(
            as_=np.array([3, 3, 4]),
            metro=np.array([0, 2, 1]),
            rps=np.array([100.0, 50.0, 80.0]),
            mix=np.tile(DEFAULT_PLANS.share, (3, 1)),
        ),
    )


# ---------------------------------------------------------------------------- tables


def test_table_arrays_are_read_only() -> None:
    net = make_network()
    inet = make_internet()
    with pytest.raises(ValueError, match="read-only"):
        net.sites.lat[0] = 0.0
    with pytest.raises(ValueError, match="read-only"):
        net.sections.servers[1] = 99
    with pytest.raises(ValueError, match="read-only"):
        net.sessions.asn[0] = 1
    with pytest.raises(ValueError, match="read-only"):
        net.prefixes.announced[0, 0] = False
    with pytest.raises(ValueError, match="read-only"):
        inet.p2c[0, 0] = 3
    with pytest.raises(ValueError, match="read-only"):
        inet.eyeballs.rps[0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        inet.metros.population[0] = 1
    with pytest.raises(ValueError, match="read-only"):
        DEFAULT_PLANS.share[0] = 1.0


def test_table_does_not_alias_the_callers_array() -> None:
    lat = np.array([1.0, 2.0, 3.0])
    sites = replace(make_sites(), lat=lat)
    lat[0] = 42.0
    assert sites.lat[0] == 1.0
    assert lat.flags.writeable


def test_table_equality_is_field_wise() -> None:
    a, b = make_network(), make_network()
    assert a is not b
    assert a == b
    assert make_internet() == make_internet()

    lat = make_sites().lat.copy()
    lat[1] += 1e-9
    assert replace(a, sites=replace(a.sites, lat=lat)) != a
    assert replace(a, asn=64501) != a
    assert replace(a.sites, city=("x", "city-EWR", "city-SYD")) != a.sites
    servers = a.sections.servers.copy()
    servers[-1] = 1
    assert replace(a.sections, servers=servers) != a.sections

    inet = make_internet()
    assert replace(inet, p2p=np.zeros((0, 2), dtype=np.int32)) != inet
    rps = inet.eyeballs.rps.copy()
    rps[2] = 81.0
    assert replace(inet, eyeballs=replace(inet.eyeballs, rps=rps)) != inet


def test_tables_are_not_hashable_and_not_equal_to_other_types() -> None:
    sites = make_sites()
    with pytest.raises(TypeError):
        hash(sites)
    assert sites != make_sections()
    assert sites != "LHR"


def test_sites_index() -> None:
    sites = make_sites()
    assert len(sites) == 3
    assert [sites.index(c) for c in ("LHR", "EWR", "SYD")] == [0, 1, 2]
    with pytest.raises(KeyError):
        sites.index("CDG")


def test_internet_index_and_indices() -> None:
    inet = make_internet()
    assert len(inet) == 5
    assert inet.index(10) == 0
    assert inet.index(50) == 4
    assert inet.indices(np.array([50, 10, 30, 30])).tolist() == [4, 0, 2, 2]
    for bad in (5, 25, 51):
        with pytest.raises(KeyError) as info:
            inet.index(bad)
        assert info.value.args[0] == bad
    with pytest.raises(KeyError) as info:
        inet.indices(np.array([10, 60, 15]))
    assert info.value.args[0] == 60  # the first unknown one
    with pytest.raises(KeyError):
        Internet.empty().indices(np.array([10]))
    with pytest.raises(KeyError):
        Internet.empty().index(10)


def test_network_site_capacity_is_servers_times_cpu_per_site() -> None:
    net = make_network()
    expected = np.zeros(len(net.sites))
    for site, servers, cpu in zip(
        net.sections.site, net.sections.servers, net.sections.cpu_per_server, strict=True
    ):
        expected[site] += servers * cpu
    cap = net.site_capacity()
    assert cap.dtype == np.float64
    np.testing.assert_array_equal(cap, expected)
    np.testing.assert_array_equal(
        cap, [10 * 48_000 + 20 * 64_000 + 5 * 96_000, 7 * 64_000, 3 * 48_000]
    )


def test_network_site_capacity_counts_sites_without_sections() -> None:
    net = make_network()
    sites = make_sites(("LHR", "EWR", "SYD", "AKL"))
    bigger = Network(
        asn=net.asn,
        sites=sites,
        sections=net.sections,
        prefixes=Prefixes(cidr=("192.0.2.0/24",), announced=np.ones((1, 4), dtype=np.bool_)),
        sessions=net.sessions,
    )
    cap = bigger.site_capacity()
    assert cap.shape == (4,)
    assert cap[3] == 0.0
    assert bigger.site_sections(3) == range(6, 6)


def test_network_site_sections_are_contiguous_ranges() -> None:
    net = make_network()
    assert net.site_sections(0) == range(0, 3)
    assert net.site_sections(1) == range(3, 4)
    assert net.site_sections(2) == range(4, 6)
    for s in range(len(net.sites)):
        rows = net.site_sections(s)
        assert all(net.sections.site[r] == s for r in rows)
        assert all(net.sections.name[r].startswith(net.sites.code[s]) for r in rows)


def test_default_world_site_sections_cover_all_sections(default_world: World) -> None:
    net = default_world.network
    ranges = [net.site_sections(s) for s in range(len(net.sites))]
    assert ranges[0].start == 0
    assert ranges[-1].stop == len(net.sections)
    for prev, nxt in pairwise(ranges):
        assert prev.stop == nxt.start
    cap = net.site_capacity()
    for s, rows in enumerate(ranges):
        want = sum(
            int(net.sections.servers[r]) * float(net.sections.cpu_per_server[r]) for r in rows
        )
        assert cap[s] == pytest.approx(want, rel=1e-12)


def test_default_world_tables_are_read_only(default_world: World) -> None:
    with pytest.raises(ValueError, match="read-only"):
        default_world.network.sites.lat[0] = 0.0
    with pytest.raises(ValueError, match="read-only"):
        default_world.internet.eyeballs.mix[0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        default_world.internet.asn[0] = 1


# ---------------------------------------------------------------------------- validation


def test_sites_reject_misaligned_arrays() -> None:
    sites = make_sites()
    with pytest.raises(ValueError, match="one entry per site"):
        replace(sites, lat=np.zeros(2))
    with pytest.raises(ValueError, match="one entry per site"):
        replace(sites, kind=np.zeros(4))
    with pytest.raises(ValueError, match="must align"):
        replace(sites, city=("a", "b"))
    with pytest.raises(ValueError, match="thresholds"):
        replace(sites, thresholds=np.zeros((3, 2)))


def test_sites_reject_duplicate_codes() -> None:
    with pytest.raises(ValueError, match="unique"):
        make_sites(("LHR", "EWR", "LHR"))


def test_sections_reject_misaligned_and_ungrouped() -> None:
    sec = make_sections()
    with pytest.raises(ValueError, match="one entry per section"):
        replace(sec, servers=np.ones(5))
    with pytest.raises(ValueError, match="grouped by site"):
        replace(sec, site=np.array([0, 1, 0, 1, 2, 2]))
    with pytest.raises(ValueError, match="non-negative"):
        replace(sec, servers=np.array([1, 1, 1, 1, 1, -1]))


def test_network_rejects_rows_that_do_not_exist() -> None:
    net = make_network()
    with pytest.raises(ValueError, match="section refers"):
        replace(net, sections=replace(net.sections, site=np.array([0, 0, 0, 1, 2, 3])))
    with pytest.raises(ValueError, match="one column per site"):
        replace(
            net,
            prefixes=Prefixes(cidr=("192.0.2.0/24",), announced=np.ones((1, 2), dtype=np.bool_)),
        )
    with pytest.raises(ValueError, match="session refers"):
        replace(net, sessions=Sessions.from_rows([(3, 10, SessionKind.TRANSIT)]))


def test_prefixes_must_be_canonical() -> None:
    with pytest.raises(ValueError, match="canonical"):
        Prefixes(cidr=("2001:0db8::/48",), announced=np.ones((1, 1), dtype=np.bool_))
    with pytest.raises(ValueError, match="host bits"):
        Prefixes(cidr=("192.0.2.1/24",), announced=np.ones((1, 1), dtype=np.bool_))
    p = Prefixes(cidr=("192.0.2.0/24", "2001:db8::/48"), announced=np.ones((2, 1), dtype=bool))
    assert p.version.tolist() == [4, 6]


def test_sessions_reject_unsorted_and_misaligned() -> None:
    with pytest.raises(ValueError, match="sorted"):
        Sessions(site=np.array([1, 0]), asn=np.array([10, 10]), kind=np.array([0, 0]))
    with pytest.raises(ValueError, match="sorted"):  # transit before peer within a site
        Sessions(site=np.array([0, 0]), asn=np.array([10, 20]), kind=np.array([1, 0]))
    with pytest.raises(ValueError, match="sorted"):  # ASNs ascending within a kind
        Sessions(site=np.array([0, 0]), asn=np.array([20, 10]), kind=np.array([0, 0]))
    with pytest.raises(ValueError, match="align"):
        Sessions(site=np.array([0, 0]), asn=np.array([10]), kind=np.array([0, 0]))


def test_sessions_reject_two_sessions_with_one_neighbour() -> None:
    with pytest.raises(ValueError, match="same neighbour"):
        Sessions(site=np.array([0, 0]), asn=np.array([10, 10]), kind=np.array([0, 0]))
    # The same neighbour as transit and as peer, not adjacent once sorted.
    with pytest.raises(ValueError, match="same neighbour"):
        Sessions.from_rows(
            [(0, 10, SessionKind.TRANSIT), (0, 20, SessionKind.TRANSIT), (0, 10, SessionKind.PEER)]
        )
    # One neighbour at two different sites is fine.
    ok = Sessions.from_rows([(0, 10, SessionKind.TRANSIT), (1, 10, SessionKind.PEER)])
    assert len(ok) == 2


def test_sessions_from_rows_sorts() -> None:
    s = make_network().sessions
    assert s.site.tolist() == [0, 0, 0, 1, 2, 2]
    assert s.kind.tolist() == [0, 0, 1, 0, 0, 1]
    assert s.asn.tolist() == [10, 20, 50, 10, 20, 30]


def test_internet_rejects_unsorted_or_repeated_asns() -> None:
    with pytest.raises(ValueError, match="sorted and unique"):
        make_internet(asns=(10, 30, 20, 40, 50))
    with pytest.raises(ValueError, match="sorted and unique"):
        make_internet(asns=(10, 20, 20, 40, 50), p2c=[])


def test_internet_rejects_misaligned_and_bad_rows() -> None:
    inet = make_internet()
    with pytest.raises(ValueError, match="align"):
        replace(inet, kind=np.zeros(4))
    with pytest.raises(ValueError, match="align"):
        replace(inet, name=("a",))
    with pytest.raises(ValueError, match="does not exist"):
        replace(inet, p2c=[(0, 5)])
    with pytest.raises(ValueError, match="itself"):
        replace(inet, p2c=[(2, 2)])
    with pytest.raises(ValueError, match="lower row first"):
        replace(inet, p2p=[(2, 1)])
    with pytest.raises(ValueError, match="presence"):
        replace(inet, presence=[(0, 3)])


def test_eyeballs_must_be_sorted_without_repeats() -> None:
    mix = np.tile(DEFAULT_PLANS.share, (2, 1))
    with pytest.raises(ValueError, match="sorted"):
        Eyeballs(as_=np.array([1, 0]), metro=np.array([0, 0]), rps=np.ones(2), mix=mix)
    with pytest.raises(ValueError, match="sorted"):
        Eyeballs(as_=np.array([0, 0]), metro=np.array([2, 1]), rps=np.ones(2), mix=mix)
    with pytest.raises(ValueError, match="sorted"):
        Eyeballs(as_=np.array([0, 0]), metro=np.array([1, 1]), rps=np.ones(2), mix=mix)
    with pytest.raises(ValueError, match="non-negative"):
        Eyeballs(as_=np.array([0, 0]), metro=np.array([0, 1]), rps=np.array([1, -1]), mix=mix)
    with pytest.raises(ValueError, match="one row per eyeball"):
        Eyeballs(as_=np.array([0, 0]), metro=np.array([0, 1]), rps=np.ones(2), mix=mix[:1])
    e = Eyeballs.from_rows(np.array([1, 0, 0]), np.array([0, 2, 1]), np.ones(3), np.eye(3))
    assert e.as_.tolist() == [0, 0, 1]
    assert e.metro.tolist() == [1, 2, 0]
    assert e.mix.tolist() == [[0, 0, 1], [0, 1, 0], [1, 0, 0]]


def test_internet_rejects_eyeballs_outside_it() -> None:
    inet = make_internet()
    e = Eyeballs(as_=np.array([5]), metro=np.array([0]), rps=np.ones(1), mix=np.ones((1, 4)) / 4)
    with pytest.raises(ValueError, match="eyeballs refer"):
        replace(inet, eyeballs=e)


def test_internet_rejects_negative_rows() -> None:
    inet = make_internet()
    e = Eyeballs(as_=np.array([-1]), metro=np.array([0]), rps=np.ones(1), mix=np.ones((1, 4)) / 4)
    with pytest.raises(ValueError, match="eyeballs refer"):
        replace(inet, eyeballs=e)
    with pytest.raises(ValueError, match="presence refers"):
        replace(inet, presence=[(0, -1)])


def test_network_rejects_negative_site_rows() -> None:
    net = make_network()
    bad = Sessions(site=np.array([-1]), asn=np.array([10]), kind=np.array([0]))
    with pytest.raises(ValueError, match="session refers"):
        replace(net, sessions=bad)


def test_metros_reject_repeated_ids() -> None:
    with pytest.raises(ValueError, match="unique"):
        replace(make_metros(), id=np.array([100, 200, 100]))
    assert make_metros().index(300) == 2


def test_world_checks_its_parts() -> None:
    net, inet = make_network(), make_internet()
    w = World(network=net, internet=inet)
    assert w.session_as.tolist() == [0, 1, 4, 0, 1, 2]
    with pytest.raises(KeyError):
        World(network=replace(net, sessions=Sessions.from_rows([(0, 99, 0)])), internet=inet)
    with pytest.raises(ValueError, match="also an Internet AS"):
        World(network=replace(net, asn=30), internet=inet)
    np.testing.assert_allclose(inet.eyeball_demand(), [100.0, 80.0, 50.0])
    assert w.peak_demand_rps() == pytest.approx(230.0)
    assert w.peak_demand_cpu() == pytest.approx(230.0 * 1.075)


# ---------------------------------------------------------------------------- hierarchy


def test_provider_levels_of_a_small_hierarchy() -> None:
    inet = make_internet()
    levels = inet.provider_levels()
    assert dict(zip(inet.asn.tolist(), levels.tolist(), strict=True)) == {
        10: 3,
        20: 2,
        30: 2,
        40: 1,
        50: 0,
    }


def test_provider_levels_without_relations_are_zero() -> None:
    inet = make_internet(p2c=[])
    assert inet.provider_levels().tolist() == [0, 0, 0, 0, 0]
    assert Internet.empty().provider_levels().tolist() == []


def _check_cycle(inet: Internet, cycle: list[int], members: set[int]) -> None:
    assert cycle[0] == cycle[-1]
    assert set(cycle) == members
    assert len(cycle) == len(members) + 1
    edges = {(int(inet.asn[c]), int(inet.asn[p])) for p, c in inet.p2c}  # customer, provider
    for customer, provider in pairwise(cycle):
        assert (customer, provider) in edges


def test_provider_loop_is_named() -> None:
    # 20 → 30 → 40 → 20 is a loop (customer → provider); 10 and 50 hang off it.
    inet = make_internet(p2c=[(30, 20), (40, 30), (20, 40), (20, 10), (40, 50)])
    with pytest.raises(ProviderLoopError) as info:
        inet.provider_levels()
    cycle = info.value.cycle
    _check_cycle(inet, cycle, {20, 30, 40})
    assert cycle == [20, 30, 40, 20]
    assert "20 -> 30 -> 40 -> 20" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_provider_loop_above_a_levelled_part() -> None:
    # 50 is the customer of 40; 40 and 30 buy transit from each other; 10 buys from 30.
    inet = make_internet(p2c=[(40, 50), (30, 40), (40, 30), (30, 10), (10, 20)])
    with pytest.raises(ProviderLoopError) as info:
        inet.provider_levels()
    _check_cycle(inet, info.value.cycle, {30, 40})


def test_default_world_has_no_provider_loop(default_world: World) -> None:
    levels = default_world.internet.provider_levels()
    inet = default_world.internet
    assert levels.shape == (len(inet),)
    assert levels.min() == 0
    # A provider is always strictly higher than each of its customers.
    assert np.all(levels[inet.p2c[:, 0]] > levels[inet.p2c[:, 1]])


# ---------------------------------------------------------------------------- plans


def test_default_plans_order() -> None:
    assert DEFAULT_PLANS.names == ("free", "pro", "business", "enterprise")
    assert DEFAULT_PLANS.names == PLAN_NAMES
    assert [DEFAULT_PLANS.index(n) for n in PLAN_NAMES] == [0, 1, 2, 3]
    assert len(DEFAULT_PLANS) == 4
    assert DEFAULT_PLANS.share.sum() == pytest.approx(1.0)


def test_cost_per_request_with_a_mix() -> None:
    mix = np.array(
        [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
            [0.5, 0.5, 0.0, 0.0],
            [0.25, 0.25, 0.25, 0.25],
        ]
    )
    cost = DEFAULT_PLANS.cost_per_request(mix)
    assert cost.shape == (4,)
    np.testing.assert_allclose(cost, [0.8, 1.6, 0.9, (0.8 + 1.0 + 1.3 + 1.6) / 4])
    default = DEFAULT_PLANS.cost_per_request()
    assert float(default) == pytest.approx(0.45 * 0.8 + 0.20 * 1.0 + 0.15 * 1.3 + 0.20 * 1.6)


def test_plans_validation() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        Plans(names=("a", "b"), share=np.array([0.5, 0.6]), cpu_ms=np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="repeat"):
        Plans(names=("a", "a"), share=np.array([0.5, 0.5]), cpu_ms=np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="positive"):
        Plans(names=("a", "b"), share=np.array([0.5, 0.5]), cpu_ms=np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="one value per plan"):
        Plans(names=("a", "b"), share=np.array([1.0]), cpu_ms=np.array([1.0, 1.0]))


# ---------------------------------------------------------------------------- latency


def test_great_circle_london_new_york() -> None:
    km = float(great_circle_km(*LONDON, *NEW_YORK))
    assert km == pytest.approx(5570, abs=30)


def test_rtt_between_real_cities() -> None:
    lat = LatencyModel()
    assert 60 < float(lat.rtt_ms(*LONDON, *NEW_YORK)) < 90
    assert 20 < float(lat.rtt_ms(*SYDNEY, *AUCKLAND)) < 40


def test_zero_distance_is_the_access_delay() -> None:
    assert float(great_circle_km(*LONDON, *LONDON)) == 0.0
    assert float(LatencyModel().rtt_ms(*LONDON, *LONDON)) == LatencyModel().access_ms
    m = LatencyModel(inflation=1.7, access_ms=3.5)
    assert float(m.rtt_ms(*SYDNEY, *SYDNEY)) == 3.5
    assert float(m.rtt_from_km(0.0)) == 3.5
    assert float(m.rtt_from_km(1000.0)) == pytest.approx(3.5 + 1.7 * 10.0)


def test_rtt_matrix_broadcasts_like_elementwise_calls() -> None:
    rng = np.random.default_rng(7)
    a_lat, a_lon = rng.uniform(-80, 80, 5), rng.uniform(-180, 180, 5)
    b_lat, b_lon = rng.uniform(-80, 80, 3), rng.uniform(-180, 180, 3)
    lat = LatencyModel()
    m = lat.rtt_matrix(a_lat, a_lon, b_lat, b_lon)
    assert m.shape == (5, 3)
    for i in range(5):
        for j in range(3):
            one = float(lat.rtt_ms(a_lat[i], a_lon[i], b_lat[j], b_lon[j]))
            assert m[i, j] == pytest.approx(one, rel=1e-12)
    # Vectors broadcast elementwise too.
    pairs = lat.rtt_ms(a_lat[:3], a_lon[:3], b_lat, b_lon)
    np.testing.assert_allclose(pairs, np.diag(m[:3]), rtol=1e-12)


def test_default_world_metro_site_rtt_shape(default_world: World) -> None:
    rtt = default_world.metro_site_rtt()
    assert rtt.shape == (len(default_world.internet.metros), len(default_world.network.sites))
    assert rtt.min() >= default_world.latency.access_ms


@pytest.mark.parametrize("inflation", [0.99, 0.0, -1.0, float("nan")])
def test_latency_model_rejects_inflation_below_one(inflation: float) -> None:
    with pytest.raises(ValueError, match="inflation"):
        LatencyModel(inflation=inflation)


def test_latency_model_rejects_bad_access_and_speed() -> None:
    with pytest.raises(ValueError, match="access"):
        LatencyModel(access_ms=-0.1)
    with pytest.raises(ValueError, match="km per ms"):
        LatencyModel(km_per_ms_rtt=0.0)
    assert LatencyModel(inflation=1.0).inflation == 1.0


LATS = st.floats(min_value=-90.0, max_value=90.0, allow_nan=False)
LONS = st.floats(min_value=-180.0, max_value=180.0, allow_nan=False)
POINTS = st.tuples(LATS, LONS)


@settings(max_examples=300, deadline=None)
@given(POINTS, POINTS, POINTS)
def test_great_circle_is_a_metric(
    a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]
) -> None:
    ab = float(great_circle_km(*a, *b))
    ba = float(great_circle_km(*b, *a))
    bc = float(great_circle_km(*b, *c))
    ac = float(great_circle_km(*a, *c))
    assert ab == pytest.approx(ba, rel=1e-12, abs=1e-9)
    for d in (ab, bc, ac):
        assert 0.0 <= d <= HALF_CIRCUMFERENCE_KM * (1 + 1e-12)
    assert ac <= (ab + bc) * (1 + 1e-6) + 1e-9
