"""``anyedge.routing.reach``: demand by round trip to the serving site, after routing,
against a plain count over the catchments it stands on."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from anyedge.model import World
from anyedge.model.worldgen import WorldOptions, build_world
from anyedge.routing import Announcement, Router
from anyedge.routing.reach import served_rtt, weighted_quantile


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(WorldOptions(sites=30, mcp=3, min_city_population=500_000))


def test_weighted_quantile() -> None:
    v, w = np.array([5.0, 1.0, 3.0]), np.array([1.0, 1.0, 2.0])
    assert weighted_quantile(v, w, 0.5) == 3.0  # 1 (weight 1), 3 (weight 2): half at 3
    assert weighted_quantile(v, w, 0.25) == 1.0
    assert weighted_quantile(v, w, 0.9) == 5.0
    assert np.isnan(weighted_quantile(np.zeros(0), np.zeros(0), 0.5))


def test_served_rtt_is_the_demand_weighted_count_of_the_catchment(world: World) -> None:
    n = len(world.network.sites)
    every = Announcement(np.ones(n, bool), np.zeros(n, np.int64), np.zeros(n, np.int8))
    c = Router(world).catchment(every)
    rps, rtt, site = world.internet.eyeballs.rps, c.eyeball_rtt_ms, c.eyeball_site
    s = served_rtt(world)
    if (world.network.prefixes.announced.all(axis=1)).all():  # one catchment: the same
        for band, share in s["demand_within_ms"].items():
            want = rps[(site >= 0) & (rtt <= float(band))].sum() / rps.sum()
            assert share == pytest.approx(want)
        ok = site >= 0
        order = np.argsort(rtt[ok])
        cum = np.cumsum(rps[ok][order]) / rps[ok].sum()
        assert s["median_ms"] == pytest.approx(rtt[ok][order][np.searchsorted(cum, 0.5)])
    assert 0 <= s["unreached"] < 1


def test_routing_never_beats_geography_but_can_gain_from_a_withdrawal(world: World) -> None:
    """Every user's round trip after routing is at least the one to its nearest site
    (the geography-only bound), so each band holds at most that bound's demand.  And
    withdrawing a site is not like closing it on a map: withdrawing FCO here (on
    the calibrated world; the busiest site did it on the older, uncalibrated one)
    *raises* the demand within 10 ms — BGP had sent some of its users past nearer
    sites, which their routes now reach."""
    e, m, sites = world.internet.eyeballs, world.internet.metros, world.network.sites
    rps = e.rps
    # each user's own last mile plus the path to the metro's nearest site (the metro
    # bound of metro_site_rtt averages the last mile over the metro's networks)
    path = world.latency.rtt_matrix(m.lat, m.lon, sites.lat, sites.lon).min(axis=1)
    near = path[e.metro] - world.latency.access_ms + world.eyeball_access_ms()
    before = served_rtt(world)
    for band, share in before["demand_within_ms"].items():
        assert share <= rps[near <= float(band)].sum() / rps.sum() + 1e-12
    fco = sites.index("FCO")
    prefixes = world.network.prefixes
    announced = prefixes.announced.copy()
    announced[:, fco] = False
    network = replace(world.network, prefixes=replace(prefixes, announced=announced))
    after = served_rtt(replace(world, network=network))
    assert after["demand_within_ms"]["10"] > before["demand_within_ms"]["10"]
