"""The capacity planner: servers for the busiest moment of each site's BGP catchment.

A site's load over the day is the CPU time of the users BGP brings it — the catchment
of each prefix as the world announces it, every site up, demand spread evenly over the
prefixes as in the twin — each user at its peak times the day curve at its local hour
(:mod:`..daycurve`).  The curve is piecewise linear in local time with corners at whole
hours, so a site's load is piecewise linear in UTC time with a corner wherever one of
its metros crosses a whole local hour; the day's maximum is at one of those corners,
and :func:`site_peak_load` evaluates the load there, exactly (24 corners per metro).

:func:`plan_servers` then gives each site the capacity for that peak at its maximum
threshold, times its headroom (``capacity ≥ peak × headroom / maximum``), split over
its sections by their shares and rounded up to whole servers, at least
``min_servers`` per section.  With a headroom of at least 1 no site goes over its
maximum threshold on a day without events.

One catchment computation per distinct announcement (one for a world that announces
every prefix everywhere): tens of milliseconds for the default world.
"""

from __future__ import annotations

import numpy as np

from ...routing import Announcement, Router
from ..daycurve import PROFILE, diurnal
from ..table import FloatArray, IntArray
from ..world import World


def catchment_cpu(world: World) -> tuple[IntArray, FloatArray, FloatArray]:
    """(site, metro longitude, peak CPU ms/s): the load BGP brings each site from each
    metro, one row per (site, metro), at every user's own peak."""
    net, inet = world.network, world.internet
    n_sites, n_metros = len(net.sites), len(inet.metros)
    announced = (
        net.prefixes.announced if len(net.prefixes) else np.ones((1, n_sites), dtype=np.bool_)
    )
    rows, counts = np.unique(announced, axis=0, return_counts=True)
    cpu = world.eyeball_cpu()
    metro = inet.eyeballs.metro.astype(np.int64)
    router = Router(world)
    key = np.zeros(0, dtype=np.int64)
    weight = np.zeros(0)
    for row, n in zip(rows, counts, strict=True):
        ann = Announcement(
            row.copy(), np.zeros(n_sites, dtype=np.int64), np.zeros(n_sites, dtype=np.int8)
        )
        site = router.catchment(ann).eyeball_site
        ok = site >= 0
        key = np.concatenate([key, site[ok] * n_metros + metro[ok]])
        weight = np.concatenate([weight, cpu[ok] * (n / len(announced))])
    pairs, where = np.unique(key, return_inverse=True)
    load = np.bincount(where, weights=weight, minlength=pairs.size).astype(np.float64)
    return pairs // n_metros, inet.metros.lon[pairs % n_metros], load


def site_peak_load(world: World) -> FloatArray:
    """Each site's CPU ms/s at the busiest moment of its day (0 for a site no one reaches)."""
    site, lon, load = catchment_cpu(world)
    return peak_of_day(site, lon, load, len(world.network.sites))


def peak_of_day(site: IntArray, lon: FloatArray, load: FloatArray, n_sites: int) -> FloatArray:
    """Per site, the maximum over the UTC day of the sum of ``load × day curve`` of its
    rows, each row at the local hour of its longitude ``lon``.

    A sweep over the corners instead of evaluating every row at every corner: the load
    at UTC midnight and its slope, then, corner by corner in time order, each row's
    change of slope as it crosses a whole local hour.
    """
    hour = (np.asarray(lon, dtype=np.float64) / 15.0) % 24.0  # local hour at UTC 0:00
    n = len(PROFILE)
    slope = np.roll(PROFILE, -1) - PROFILE  # on [k, k + 1) local time
    bend = slope - np.roll(slope, 1)  # change of slope at local hour k
    seg = np.floor(hour).astype(np.int64) % n
    level0 = np.bincount(site, weights=load * diurnal(hour), minlength=n_sites)
    slope0 = np.bincount(site, weights=load * slope[seg], minlength=n_sites)
    # every row bends at each whole local hour; UTC 0:00 itself is already in slope0
    k = np.arange(n)
    when = ((k[None, :] - hour[:, None]) % 24.0).ravel()
    delta = (load[:, None] * bend[None, :]).ravel()
    who = np.repeat(site, n)
    keep = when > 0
    who = np.concatenate([np.arange(n_sites), who[keep]])
    when = np.concatenate([np.zeros(n_sites), when[keep]])
    delta = np.concatenate([np.zeros(n_sites), delta[keep]])
    order = np.lexsort((when, who))  # by site, then time; each site's UTC 0:00 first
    who, when, delta = who[order], when[order], delta[order]
    first = np.searchsorted(who, np.arange(n_sites))  # every site has its 0:00 row
    # slope after each corner, then the load at each corner, both summed site by site
    sl = _segment_cumsum(delta, first) + slope0[who]
    step = np.zeros(when.size)
    step[1:] = sl[:-1] * np.diff(when)
    step[first] = 0.0
    level = _segment_cumsum(step, first) + level0[who]
    peak = np.full(n_sites, -np.inf)
    np.maximum.at(peak, who, level)
    return np.asarray(np.maximum(peak, 0.0), dtype=np.float64)


def _segment_cumsum(x: FloatArray, first: IntArray) -> FloatArray:
    """Running sums of ``x`` restarting at each index in ``first`` (sorted, first[0] = 0)."""
    c = np.cumsum(x)
    before = np.concatenate([[0.0], c])[first]  # sum of everything before each segment
    return np.asarray(c - np.repeat(before, np.diff(np.append(first, x.size))))


def plan_servers(
    need: FloatArray,
    section_site: IntArray,
    section_share: FloatArray,
    cpu_per_server: FloatArray,
    min_servers: IntArray,
) -> IntArray:
    """Servers per section: the section's share of its site's ``need`` (ms/s), rounded up
    to whole servers of its kind, and at least ``min_servers``."""
    want = need[section_site] * section_share / np.maximum(cpu_per_server, 1e-12)
    servers = np.ceil(want).astype(np.int64)
    return np.asarray(np.maximum(servers, min_servers), dtype=np.int64)


__all__ = ["catchment_cpu", "peak_of_day", "plan_servers", "site_peak_load"]
