"""The default world: real places, a sane Internet, enough capacity, and determinism."""

from __future__ import annotations

import re
from itertools import combinations

import airportsdata
import numpy as np
import pytest

from anyedge.model import ASKind, LatencyModel, SessionKind, SiteKind, World, great_circle_km
from anyedge.model.countries import COUNTRIES
from anyedge.model.daycurve import diurnal
from anyedge.model.summary import RTT_BANDS_MS, continent_of, summarize
from anyedge.model.worldgen import STEPS, WorldOptions, build_world
from anyedge.model.worldgen.capacity import peak_of_day, plan_servers, site_peak_load
from anyedge.model.worldgen.geography import Cities, load_airports, load_cities
from anyedge.model.worldgen.sites import (
    AirportFinder,
    candidate_rows,
    choose_sites,
    choose_sites_naive,
)
from anyedge.routing import Announcement, Router

OPTIONS = WorldOptions()
INHABITED = {"AF", "AS", "EU", "NA", "SA", "OC"}
HUBS = ("LHR", "EWR", "NRT", "SIN", "FRA", "IAD", "CHC", "AKL")


@pytest.fixture(scope="module")
def summary(default_world: World) -> dict[str, object]:
    return summarize(default_world)


@pytest.fixture(scope="module")
def fifty_sites() -> World:
    return build_world(WorldOptions(sites=50, mcp=5))


def test_progress_names_every_step_once_in_order() -> None:
    """The progress bar's length is ``STEPS``; a step added to the builder without it
    showed "backbone (7/6)"."""
    said: list[str] = []
    build_world(WorldOptions(sites=20, mcp=2), said.append)
    assert said == list(STEPS)


# ---------------------------------------------------------------------------- sites


def test_defaults_are_what_the_fixture_builds() -> None:
    assert OPTIONS.seed == 1
    assert OPTIONS.sites == 300
    assert OPTIONS.mcp == 30
    assert OPTIONS.check() == []


def test_sites_are_real_iata_codes(default_world: World) -> None:
    sites = default_world.network.sites
    assert len(sites) == 300
    assert len(set(sites.code)) == 300
    assert all(re.fullmatch(r"[A-Z]{3}", c) for c in sites.code)
    iata = airportsdata.load("IATA")
    assert [c for c in sites.code if c not in iata] == []
    # Each site's airport is in the site's country.
    pairs = zip(sites.code, sites.country, strict=True)
    assert [c for c, cc in pairs if iata[c]["country"] != cc] == []


def test_mcp_and_single_sites_have_their_sections(default_world: World) -> None:
    net = default_world.network
    sites = net.sites
    assert int((sites.kind == SiteKind.MCP).sum()) == 30
    assert set(sites.kind.tolist()) == {SiteKind.SINGLE, SiteKind.MCP}
    for s, code in enumerate(sites.code):
        rows = net.site_sections(s)
        names = [net.sections.name[r] for r in rows]
        if sites.kind[s] == SiteKind.MCP:
            assert 3 <= len(rows) <= 9, code
            assert names == [f"{code}{k:02d}" for k in range(1, len(rows) + 1)]
        else:
            assert names == [f"{code}01"]
    assert len(net.sections) == sum(len(net.site_sections(s)) for s in range(len(sites)))
    assert np.all(net.sections.servers > 0)
    assert np.all(net.sections.cpu_per_server > 0)
    assert np.all(net.site_capacity() > 0)


def test_sites_cover_every_inhabited_continent(default_world: World) -> None:
    sites = default_world.network.sites
    assert set(continent_of(sites.country)) == INHABITED
    assert all(c in COUNTRIES for c in sites.country)


def test_hub_cities_are_sites(default_world: World) -> None:
    sites = default_world.network.sites
    missing = [h for h in HUBS if h not in sites.code]
    assert missing == []
    assert sites.city[sites.index("LHR")] == "London"
    assert sites.city[sites.index("CHC")] == "Christchurch"
    assert sites.country[sites.index("AKL")] == "NZ"
    # A city is named after its hub, not after another of its airports.
    assert "LGW" not in sites.code
    assert "JFK" not in sites.code


def test_site_positions_match_their_airports(default_world: World) -> None:
    sites = default_world.network.sites
    airports = load_airports()
    row = {c: i for i, c in enumerate(airports.iata)}
    lat = np.array([airports.lat[row[c]] for c in sites.code])
    lon = np.array([airports.lon[row[c]] for c in sites.code])
    km = great_circle_km(sites.lat, sites.lon, lat, lon)
    # Within 60 km (the finder's radius), or a little more for a hub (Narita: 63 km).
    assert km.max() < 80.0


# ---------------------------------------------------------------------------- internet


def test_internet_is_a_hierarchy(default_world: World) -> None:
    inet = default_world.internet
    levels = inet.provider_levels()
    assert levels.shape == (len(inet),)
    tier1 = np.flatnonzero(inet.kind == ASKind.TIER1)
    assert tier1.size == OPTIONS.tier1
    # Tier-1s buy transit from no one.
    assert not np.isin(inet.p2c[:, 1], tier1).any()


def test_tier1s_form_a_full_peer_clique(default_world: World) -> None:
    inet = default_world.internet
    tier1 = np.flatnonzero(inet.kind == ASKind.TIER1).tolist()
    peers = {tuple(p) for p in inet.p2p.tolist()}
    want = set(combinations(sorted(tier1), 2))
    assert len(want) == OPTIONS.tier1 * (OPTIONS.tier1 - 1) // 2
    assert want <= peers


def test_every_access_as_has_a_provider(default_world: World) -> None:
    inet = default_world.internet
    access = np.flatnonzero(inet.kind == ASKind.ACCESS)
    assert access.size > 100
    has_provider = np.isin(access, inet.p2c[:, 1])
    assert [int(inet.asn[a]) for a in access[~has_provider]] == []
    # Every transit too, and from a tier-1.
    transit = np.flatnonzero(inet.kind == ASKind.TRANSIT)
    t1 = inet.kind == ASKind.TIER1
    for t in transit:
        providers = inet.p2c[inet.p2c[:, 1] == t, 0]
        assert providers.size >= 2
        assert t1[providers].all()


def test_sessions_are_with_known_ases(default_world: World) -> None:
    net, inet = default_world.network, default_world.internet
    assert set(net.sessions.asn.tolist()) <= set(inet.asn.tolist())
    rows = default_world.session_as
    assert np.array_equal(inet.asn[rows], net.sessions.asn)
    assert net.asn not in set(inet.asn.tolist())


def test_every_site_buys_enough_transit(default_world: World) -> None:
    net, inet = default_world.network, default_world.internet
    ses = net.sessions
    transit = ses.kind == SessionKind.TRANSIT
    count = np.bincount(ses.site[transit], minlength=len(net.sites))
    mcp = net.sites.kind == SiteKind.MCP
    assert count[mcp].min() >= 3
    assert count[~mcp].min() >= 2
    # Transit is bought from tier-1s or regional transits, never from an access ISP.
    kinds = inet.kind[default_world.session_as[transit]]
    assert set(kinds.tolist()) <= {ASKind.TIER1, ASKind.TRANSIT}


def test_total_demand_is_the_peak(default_world: World) -> None:
    inet = default_world.internet
    total = float(inet.eyeballs.rps.sum())
    assert total == pytest.approx(OPTIONS.peak_rps, rel=1e-6)
    assert default_world.peak_demand_rps() == pytest.approx(OPTIONS.peak_rps, rel=1e-6)
    assert float(inet.eyeball_demand().sum()) == pytest.approx(OPTIONS.peak_rps, rel=1e-6)


def test_eyeball_mix_rows_sum_to_one(default_world: World) -> None:
    mix = default_world.internet.eyeballs.mix
    assert mix.shape == (len(default_world.internet.eyeballs), 4)
    np.testing.assert_allclose(mix.sum(axis=1), 1.0, rtol=1e-9)
    assert mix.min() >= 0.0


def test_eyeballs_are_access_isps(default_world: World) -> None:
    inet = default_world.internet
    kinds = set(inet.kind[inet.eyeballs.as_].tolist())
    assert kinds == {ASKind.ACCESS}
    # An eyeball is where its AS is present.
    present = {tuple(p) for p in inet.presence.tolist()}
    pairs = zip(inet.eyeballs.as_.tolist(), inet.eyeballs.metro.tolist(), strict=True)
    assert all(p in present for p in pairs)


def test_every_metro_with_people_has_demand(default_world: World) -> None:
    inet = default_world.internet
    demand = inet.eyeball_demand()
    people = inet.metros.population > 0
    assert people.sum() > 1000
    assert np.all(demand[people] > 0)
    assert inet.metros.population.min() >= OPTIONS.min_city_population


# ---------------------------------------------------------------------------- capacity


def test_capacity_exceeds_peak_everywhere(default_world: World, summary: dict) -> None:
    assert summary["capacity_over_peak"] > 1.0
    assert summary["capacity_ms_per_s"] > summary["peak_demand_ms_per_s"] > 0
    by = {r["continent"]: r for r in summary["by_continent"]}
    assert set(by) >= INHABITED
    for code, r in by.items():
        if r["peak_demand_ms_per_s"] > 0:
            assert r["capacity_ms_per_s"] / r["peak_demand_ms_per_s"] > 1.0, code
    assert summary["capacity_ms_per_s"] == pytest.approx(
        float(default_world.network.site_capacity().sum())
    )


def test_summary_counts(default_world: World, summary: dict) -> None:
    assert summary["sites"] == 300
    assert summary["mcp_sites"] == 30
    assert summary["sections"] == len(default_world.network.sections)
    assert summary["peak_demand_rps"] == pytest.approx(OPTIONS.peak_rps, rel=1e-6)
    assert sum(r["sites"] for r in summary["by_continent"]) == 300
    assert sum(r["mcp_sites"] for r in summary["by_continent"]) == 30
    assert sum(r["servers"] for r in summary["by_continent"]) == summary["servers"]
    assert sum(r["peak_demand_rps"] for r in summary["by_continent"]) == pytest.approx(
        OPTIONS.peak_rps, rel=1e-9
    )


def test_population_within_ms_is_monotone(summary: dict) -> None:
    within = summary["population_within_ms"]
    assert list(within) == [str(b) for b in RTT_BANDS_MS]
    values = [within[str(b)] for b in RTT_BANDS_MS]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values == sorted(values)
    assert values[-1] > 0.99  # with 300 sites almost everyone is within 100 ms
    assert summary["mean_nearest_rtt_ms"] > 0


def _load_by_minute(world: World) -> np.ndarray:
    """(minutes of the UTC day, sites) CPU ms/s from the BGP catchment of each prefix and
    the day curve, computed plainly (no planner code)."""
    net, inet = world.network, world.internet
    router = Router(world)
    q = len(net.prefixes)
    sites = [router.catchment(Announcement.of_prefix(net, p)).eyeball_site for p in range(q)]
    cpu = world.eyeball_cpu()
    offset = inet.metros.lon[inet.eyeballs.metro] / 15.0
    out = np.zeros((24 * 60, len(net.sites)))
    for i in range(out.shape[0]):
        now = cpu * diurnal(i / 60 + offset)
        for site in sites:
            ok = site >= 0
            out[i] += np.bincount(site[ok], weights=now[ok], minlength=len(net.sites)) / q
    return out


@pytest.mark.parametrize("which", ["fifty_sites", "default_world"])
def test_no_site_goes_over_its_maximum_on_a_quiet_day(
    which: str, request: pytest.FixtureRequest
) -> None:
    world: World = request.getfixturevalue(which)
    net = world.network
    assert np.all(net.prefixes.announced)  # every prefix everywhere, as the planner assumes
    load = _load_by_minute(world)
    cap = net.site_capacity()
    top = load.max(axis=0) / cap
    assert np.all(top <= net.sites.thresholds[:, 0])
    # sized on its own peak: the busiest site is at its maximum / highest headroom
    assert top.max() > net.sites.thresholds[0, 0] / OPTIONS.headroom[1]
    # the planner's exact peak is the true one (the minute grid can only miss a little)
    peak = site_peak_load(world)
    assert np.all(peak >= load.max(axis=0) - 1e-6)
    assert np.all(peak <= 1.001 * load.max(axis=0))


def test_headroom_one_puts_every_site_near_its_maximum_at_its_peak() -> None:
    world = build_world(
        WorldOptions(sites=40, mcp=4, min_city_population=500_000, headroom=(1.0, 1.0))
    )
    net = world.network
    u = site_peak_load(world) / net.site_capacity()
    maximum = net.sites.thresholds[:, 0]
    assert np.all(u <= maximum + 1e-12)
    # whole servers round up; the smallest sites get the minimum of servers
    assert np.median(u) > 0.8 * maximum[0]


def test_peak_of_day_is_the_maximum_over_every_corner() -> None:
    rng = np.random.default_rng(7)
    for trial in range(100):
        n, sites = int(rng.integers(1, 40)), int(rng.integers(1, 6))
        site = rng.integers(0, sites, n)
        lon = rng.uniform(-180, 180, n) if trial % 2 else 15.0 * rng.integers(-12, 13, n)
        load = rng.uniform(0, 10, n)
        want = np.zeros(sites)
        for s in range(sites):
            mine = site == s
            if mine.any():
                off = lon[mine] / 15.0
                corners = (np.arange(24.0)[:, None] - off[None, :]).ravel()
                want[s] = (diurnal(corners[:, None] + off[None, :]) @ load[mine]).max()
        np.testing.assert_allclose(peak_of_day(site, lon, load, sites), want, rtol=1e-9, atol=1e-9)


def test_plan_servers_rounds_up_to_whole_servers() -> None:
    servers = plan_servers(
        need=np.array([100.0, 0.0]),
        section_site=np.array([0, 0, 1]),
        section_share=np.array([0.25, 0.75, 1.0]),
        cpu_per_server=np.array([10.0, 10.0, 10.0]),
        min_servers=np.array([4, 4, 2]),
    )
    assert servers.tolist() == [4, 8, 2]


# ---------------------------------------------------------------------------- determinism


def test_same_seed_same_world(default_world: World) -> None:
    again = build_world(WorldOptions(seed=1))
    assert again is not default_world
    assert again == default_world


def test_other_seed_other_world(fifty_sites: World) -> None:
    other = build_world(WorldOptions(sites=50, mcp=5, seed=2))
    assert other != fifty_sites
    assert other.internet != fifty_sites.internet
    assert len(other.network.sites) == 50


def test_options_change_the_size(fifty_sites: World) -> None:
    net = fifty_sites.network
    assert len(net.sites) == 50
    assert int((net.sites.kind == SiteKind.MCP).sum()) == 5
    assert summarize(fifty_sites)["sites"] == 50


def test_options_check_names_the_option() -> None:
    assert [o for o, _ in WorldOptions(sites=0, mcp=0).check()] == ["--sites"]
    assert [o for o, _ in WorldOptions(sites=3, mcp=5).check()] == ["--mcp"]
    assert [o for o, _ in WorldOptions(peak_rps=0).check()] == ["--peak-rps"]
    assert [o for o, _ in WorldOptions(tier1=0).check()] == ["--tier1"]
    assert [o for o, _ in WorldOptions(min_city_population=10).check()] == ["--min-city-population"]
    assert [o for o, _ in WorldOptions(headroom=(0.9, 1.5)).check()] == ["--headroom"]
    assert [o for o, _ in WorldOptions(headroom=(1.5, 1.2)).check()] == ["--headroom"]
    assert WorldOptions(headroom=(1.0, 1.0)).check() == []


# ---------------------------------------------------------------------------- site choice


@pytest.fixture(scope="module")
def big_cities() -> tuple[Cities, np.ndarray]:
    cities = load_cities(1_000_000)
    cand, codes = candidate_rows(cities, load_airports(), 1_000_000)
    assert len(codes) == cand.size
    assert len(set(codes)) == len(codes)
    assert cand.size > 100
    return cities, cand


def test_lazy_greedy_equals_naive_greedy(big_cities: tuple[Cities, np.ndarray]) -> None:
    cities, cand = big_cities
    lat = LatencyModel()
    lazy = choose_sites(cities, cand, 20, lat)
    naive = choose_sites_naive(cities, cand, 20, lat)
    assert lazy.size == 20
    assert len(set(lazy.tolist())) == 20
    assert lazy.tolist() == naive.tolist()


def test_lazy_greedy_equals_naive_greedy_with_initial(
    big_cities: tuple[Cities, np.ndarray],
) -> None:
    cities, cand = big_cities
    lat = LatencyModel()
    initial = np.array([7, 3, 41, 100])
    lazy = choose_sites(cities, cand, 20, lat, initial=initial)
    naive = choose_sites_naive(cities, cand, 20, lat, initial=initial)
    assert lazy[:4].tolist() == initial.tolist()
    assert len(set(lazy.tolist())) == 20
    assert lazy.tolist() == naive.tolist()


def test_greedy_with_another_cap(big_cities: tuple[Cities, np.ndarray]) -> None:
    cities, cand = big_cities
    lat = LatencyModel(inflation=1.5, access_ms=1.0)
    lazy = choose_sites(cities, cand, 12, lat, cap_ms=30.0)
    naive = choose_sites_naive(cities, cand, 12, lat, cap_ms=30.0)
    assert lazy.tolist() == naive.tolist()


def test_greedy_progress_counts_each_site(big_cities: tuple[Cities, np.ndarray]) -> None:
    cities, cand = big_cities
    ticks: list[int] = []
    chosen = choose_sites(
        cities, cand, 10, LatencyModel(), initial=np.array([0, 1]), progress=ticks.append
    )
    assert chosen.size == 10
    assert sum(ticks) == 8  # the initial ones are not chosen by the greedy


# ---------------------------------------------------------------------------- airports


@pytest.fixture(scope="module")
def finder() -> AirportFinder:
    return AirportFinder(load_airports())


def _code(finder: AirportFinder, *city: object) -> str | None:
    row = finder.find(*city)  # type: ignore[arg-type]
    return None if row is None else finder.airports.iata[row]


def test_airport_finder_uses_the_hub_table(finder: AirportFinder) -> None:
    assert _code(finder, "London", "GB", 51.5074, -0.1278) == "LHR"
    assert _code(finder, "New York City", "US", 40.7128, -74.0060) == "EWR"


def test_airport_finder_christchurch(finder: AirportFinder) -> None:
    assert _code(finder, "Christchurch", "NZ", -43.5321, 172.6362) == "CHC"
    # Not through the hub table: the nearest international airport of the same country.
    assert _code(finder, "Christchurch Central", "NZ", -43.5321, 172.6362) == "CHC"
    assert _code(finder, "Wellington", "NZ", -41.2866, 174.7756) == "WLG"


def test_airport_finder_nothing_nearby(finder: AirportFinder) -> None:
    # The middle of the South Pacific, far from any airport.
    assert _code(finder, "Point Nemo", "NZ", -48.8767, -123.3933) is None
    assert _code(finder, "Nowhere", "US", 30.0, -40.0) is None
    # Airports nearby but of another country do not count.
    assert _code(finder, "Not London", "FR", 51.5074, -0.1278) is None
