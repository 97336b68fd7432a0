"""The default world: about 300 sites in real cities, and a synthetic Internet around them.

``build_world(WorldOptions(seed=1))`` runs these steps, each deterministic for the seed:

1. **Geography** (:mod:`.geography`): real cities over ``min_city_population`` become the
   metros; their online population is their demand.
2. **Internet** (:mod:`.internet`): tier-1 clique, regional transit, national access
   ISPs; eyeballs split each metro's demand among the ISPs there.
3. **Sites** (:mod:`.sites`): the Internet's hub cities first, then the cities that bring
   the most online people closest, by lazy greedy, each named by its airport's IATA code.
4. **Layout**: the great interconnection hubs and then the biggest markets (the metros
   nearest to each site) become multi-colo sites with three to nine sections; every
   site draws its server generation and a headroom in ``headroom``.
5. **Sessions**: each site buys transit from two or three providers present in its city
   and peers with the access ISPs there.
6. **Prefixes**: documentation prefixes (IPv4 and IPv6) announced from every site.
7. **Capacity** (:mod:`.capacity`): each site gets servers for the busiest moment of its
   BGP catchment over the day, at its maximum threshold, times its headroom — so that
   on a day without events no site goes over its maximum threshold.
8. **Backbone** (:mod:`.backbone`): regional meshes and long-haul routes between the
   sites, each region's transit detour, and the customers' origins.

By default (``WorldOptions.calibrated``; ``anyedge world --uncalibrated`` for the older
world) the world is calibrated against the measured Internet: people online by country
(:mod:`.countrydata`), fixed and mobile access networks with a last mile of their own
(:mod:`.lastmile`), exchange points with route-server peering and countries whose
traffic trombones abroad (:mod:`.peering`); sites in an exchange city peer with its
members, and sites in a country of thin local peering with few of its ISPs
(:data:`THIN_SITE_PEERING`).  :mod:`anyedge.sim.calibration` sets its figures beside
the published ones.  The uncalibrated world has people online by continent, a flat
last mile of the latency model's and sparse peering.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ...errors import InputError
from ..geo import LatencyModel, great_circle_km
from ..internet import ASKind, Internet
from ..network import (
    DEFAULT_THRESHOLDS,
    Network,
    Prefixes,
    Sections,
    SessionKind,
    Sessions,
    SiteKind,
    Sites,
)
from ..plans import DEFAULT_PLANS
from ..table import FloatArray, IntArray
from ..world import World
from .backbone import build_backbone
from .capacity import plan_servers, site_peak_load
from .countrydata import country_table
from .geography import HUB_AIRPORT, Cities, load_airports, load_cities
from .internet import Calibrated, build_calibrated_internet, build_internet
from .lastmile import access_delays
from .sites import candidate_rows, choose_sites

DEFAULT_PREFIXES = (
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "2001:db8::/48",
    "2001:db8:1::/48",
)
# Where the largest CDNs run multi-colo sites whatever the local demand: the hubs where
# networks meet (Ashburn's IAD is the reference's example, with sections IAD01-IAD09).
MCP_HUBS = ("IAD", "FRA", "AMS", "LHR", "CDG", "EWR", "ORD", "SJC", "LAX", "SIN", "NRT", "HKG")
SERVER_GENERATIONS = (48_000.0, 64_000.0, 96_000.0)  # ms/s: 48, 64 and 96 cores
GENERATION_ODDS = (0.2, 0.5, 0.3)
# Calibrated world: the chance that a site peers with each access ISP of its city where
# the country's local peering is thin (against 0.85 elsewhere).
THIN_SITE_PEERING = 0.3

Progress = Callable[[str], None]


@dataclass(frozen=True)
class WorldOptions:
    seed: int = 1
    sites: int = 300
    mcp: int = 30
    min_city_population: int = 100_000
    min_site_population: int = 300_000
    peak_rps: float = 40e6
    tier1: int = 12
    asn: int = 64500
    # capacity at the maximum threshold over each site's own peak, drawn per site
    headroom: tuple[float, float] = (1.3, 2.0)
    cap_ms: float = 50.0
    # calibrated against the measured Internet (False: the older, kinder world)
    calibrated: bool = True

    def check(self) -> list[tuple[str, str]]:
        """(option, problem) pairs for options out of range."""
        bad = []
        if self.sites < 1:
            bad.append(("--sites", "must be at least 1"))
        if not 0 <= self.mcp <= self.sites:
            bad.append(("--mcp", f"must be between 0 and the number of sites ({self.sites})"))
        if self.min_city_population < 15_000:
            bad.append(("--min-city-population", "must be at least 15000 (the data's floor)"))
        if not (math.isfinite(self.peak_rps) and self.peak_rps > 0):
            bad.append(("--peak-rps", f"must be a positive number, got {self.peak_rps}"))
        if not 1 <= self.tier1 <= 50:
            bad.append(("--tier1", "must be between 1 and 50"))
        lo, hi = self.headroom
        if not 1.0 <= lo <= hi <= 100.0:
            bad.append(("--headroom", "must be MIN MAX with 1 <= MIN <= MAX <= 100"))
        return bad


# The steps build_world reports to ``progress``, in order (a progress bar's length).
STEPS = ("cities", "internet", "sites", "layout", "sessions", "capacity", "backbone")


def build_world(opts: WorldOptions = WorldOptions(), progress: Progress | None = None) -> World:
    say = progress or (lambda _: None)
    rng = np.random.default_rng(opts.seed)
    latency = LatencyModel()

    say("cities")
    cities = load_cities(opts.min_city_population, by_country=opts.calibrated)
    airports = load_airports()
    say("internet")
    calib = None
    if opts.calibrated:
        table = country_table()
        calib = build_calibrated_internet(
            cities, rng, DEFAULT_PLANS, opts.peak_rps, opts.tier1, table.thin
        )
        internet = calib.internet
        access = access_delays(internet, calib.mobile, table.use, rng)
    else:
        internet = build_internet(cities, rng, DEFAULT_PLANS, opts.peak_rps, opts.tier1)
        access = np.zeros(0)

    say("sites")
    cand, codes = candidate_rows(cities, airports, opts.min_site_population)
    hubs = np.array(
        [
            k
            for k, i in enumerate(cand.tolist())
            if (cities.name[i], cities.country[i]) in HUB_AIRPORT
        ],
        dtype=np.int64,
    )
    hubs = hubs[np.argsort(-cities.traffic()[cand[hubs]], kind="stable")]
    if opts.sites > len(cand):  # refuse rather than build fewer sites than asked for
        raise InputError.one(
            "command line",
            "--sites",
            f"at most {len(cand):,} sites with these options (cities of at least "
            f"{opts.min_site_population:,} people with an airport), got {opts.sites:,}",
        )
    chosen = choose_sites(cities, cand, opts.sites, latency, opts.cap_ms, hubs)
    site_city = cand[chosen]
    site_code = [codes[k] for k in chosen]

    say("layout")
    metro_cpu = np.bincount(
        internet.eyeballs.metro,
        weights=internet.eyeballs.rps * DEFAULT_PLANS.cost_per_request(internet.eyeballs.mix),
        minlength=len(cities),
    )
    rtt = latency.rtt_matrix(cities.lat, cities.lon, cities.lat[site_city], cities.lon[site_city])
    nearest = rtt.argmin(axis=1)
    local_cpu = np.bincount(nearest, weights=metro_cpu, minlength=site_city.size)
    # multi-colo sites: the great interconnection hubs first, then the busiest markets
    hubs_first = [site_code.index(c) for c in MCP_HUBS if c in site_code][: opts.mcp]
    rest = [int(i) for i in np.argsort(-local_cpu, kind="stable") if int(i) not in hubs_first]
    mcp = np.zeros(site_city.size, dtype=np.bool_)
    mcp[(hubs_first + rest)[: opts.mcp]] = True
    sites = Sites(
        code=tuple(site_code),
        city=tuple(cities.name[i] for i in site_city),
        country=tuple(cities.country[i] for i in site_city),
        lat=cities.lat[site_city],
        lon=cities.lon[site_city],
        kind=np.where(mcp, SiteKind.MCP, SiteKind.SINGLE),
        thresholds=np.tile(DEFAULT_THRESHOLDS, (site_city.size, 1)),
    )
    layout = _layout(rng, site_code, local_cpu, mcp, opts.headroom)

    say("sessions")
    sessions = _sessions(rng, internet, site_city, mcp, calib)
    prefixes = Prefixes(
        cidr=DEFAULT_PREFIXES,
        announced=np.ones((len(DEFAULT_PREFIXES), site_city.size), dtype=np.bool_),
    )
    network = Network(
        asn=opts.asn,
        sites=sites,
        sections=layout.sections(layout.min_servers),
        prefixes=prefixes,
        sessions=sessions,
        plans=DEFAULT_PLANS,
    )

    say("capacity")
    # routing does not depend on capacity: the catchment of the laid-out network sizes it
    world = World(network=network, internet=internet, latency=latency, access_ms=access)
    need = site_peak_load(world) * layout.headroom / sites.thresholds[:, 0]
    servers = plan_servers(need, layout.site, layout.share, layout.cpu, layout.min_servers)
    network = replace(network, sections=layout.sections(servers))
    say("backbone")
    backbone = build_backbone(sites)
    return World(
        network=network, internet=internet, latency=latency, backbone=backbone, access_ms=access
    )


@dataclass(frozen=True)
class _Layout:
    """Sections of every site before they have servers: names, shares of their site's
    capacity, server generation, and each site's headroom."""

    name: tuple[str, ...]
    site: IntArray
    share: FloatArray
    cpu: FloatArray
    min_servers: IntArray
    headroom: FloatArray  # per site

    def sections(self, servers: IntArray) -> Sections:
        return Sections(name=self.name, site=self.site, servers=servers, cpu_per_server=self.cpu)


def _layout(
    rng: np.random.Generator,
    codes: list[str],
    local_cpu: np.ndarray,
    mcp: np.ndarray,
    headroom: tuple[float, float],
) -> _Layout:
    """A multi-colo site has three to nine sections (more for a bigger market nearby),
    sharing its capacity by a Dirichlet split, each of a server generation of its own; a
    single site has one section."""
    names: list[str] = []
    site: list[int] = []
    share: list[float] = []
    cpu: list[float] = []
    least: list[int] = []
    room = np.zeros(len(codes))
    for s, code in enumerate(codes):
        gen = float(rng.choice(SERVER_GENERATIONS, p=GENERATION_ODDS))
        room[s] = rng.uniform(*headroom)
        if mcp[s]:
            market = local_cpu[s] * room[s] / gen  # servers the nearest metros would need
            count = int(np.clip(round(market / 24), 3, 9))
            split = rng.dirichlet(np.full(count, 20.0))
            for k in range(count):
                names.append(f"{code}{k + 1:02d}")
                site.append(s)
                share.append(float(split[k]))
                cpu.append(float(rng.choice(SERVER_GENERATIONS, p=GENERATION_ODDS)))
                least.append(4)
        else:
            names.append(f"{code}01")
            site.append(s)
            share.append(1.0)
            cpu.append(gen)
            least.append(2)
    return _Layout(
        name=tuple(names),
        site=np.array(site, dtype=np.int64),
        share=np.array(share),
        cpu=np.array(cpu),
        min_servers=np.array(least, dtype=np.int64),
        headroom=room,
    )


def _sessions(
    rng: np.random.Generator,
    internet: Internet,
    site_city: np.ndarray,
    mcp: np.ndarray,
    calib: Calibrated | None = None,
) -> Sessions:
    """Transit from providers present in the site's city, peering with its access ISPs.

    Where fewer providers are present than the site needs, it buys from those whose
    nearest point of presence is closest (transit is sold over a distance).  In the
    calibrated world a site in an exchange city also peers with every member of its
    route server, and a site in a country of thin local peering peers with each local
    access ISP only at :data:`THIN_SITE_PEERING` odds.
    """
    thin = country_table().thin if calib is not None else frozenset()
    members = calib.members if calib is not None else {}
    kind = internet.kind
    metros = internet.metros
    by_metro: dict[int, list[int]] = {}
    for a, m in internet.presence.tolist():
        by_metro.setdefault(m, []).append(a)
    upstream = np.flatnonzero((kind == ASKind.TIER1) | (kind == ASKind.TRANSIT))
    up_rows = np.isin(internet.presence[:, 0], upstream)
    up_as = internet.presence[up_rows, 0]
    up_metro = internet.presence[up_rows, 1]
    rows: list[tuple[int, int, int]] = []
    for s, m in enumerate(site_city.tolist()):
        here = by_metro.get(m, [])
        ups = [a for a in here if kind[a] in (ASKind.TIER1, ASKind.TRANSIT)]
        want = 3 if mcp[s] else 2
        picked = rng.permutation(ups)[:want].tolist() if ups else []
        if len(picked) < want:
            km = great_circle_km(
                metros.lat[m], metros.lon[m], metros.lat[up_metro], metros.lon[up_metro]
            )
            nearest = np.full(len(internet), np.inf)
            np.minimum.at(nearest, up_as, km)
            nearest[picked] = np.inf
            order = np.argsort(nearest, kind="stable")
            picked += [int(a) for a in order[: want - len(picked)] if np.isfinite(nearest[a])]
        rows += [(s, int(internet.asn[a]), SessionKind.TRANSIT) for a in picked]
        local = metros.country[m] in thin
        rs = set(members.get(m, [])) - set(picked)
        rows += [(s, int(internet.asn[a]), SessionKind.PEER) for a in sorted(rs)]
        for a in here:
            if a in picked or a in rs:
                continue
            if local and kind[a] == ASKind.ACCESS:
                if rng.random() < THIN_SITE_PEERING:
                    rows.append((s, int(internet.asn[a]), SessionKind.PEER))
                continue
            if (kind[a] == ASKind.ACCESS and (mcp[s] or rng.random() < 0.85)) or (
                kind[a] == ASKind.TRANSIT and mcp[s] and rng.random() < 0.4
            ):
                rows.append((s, int(internet.asn[a]), SessionKind.PEER))
    return Sessions.from_rows(rows)


__all__ = ["DEFAULT_PREFIXES", "Cities", "WorldOptions", "build_world"]
