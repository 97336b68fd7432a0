"""A synthetic Internet shaped like the real one, over real metros.

Three tiers, as the Internet has grown:

* a **tier-1 clique** of global carriers that peer with each other and buy transit from
  no one, present in the world's biggest metros;
* **regional transit** providers on each continent, customers of two or three tier-1s,
  present in that continent's big metros, peering with some of their regional rivals;
* **access ISPs** in every country with metros — more in countries with more people
  online — each a customer of one to three regional transits (the biggest also of a
  tier-1), present in some of the country's metros (the biggest ISP in all of them), with
  a market share; some peer at the national exchange.

A metro's users are split among the access ISPs present there by market share; those
(ISP, metro) pairs are the eyeballs, with peak requests/s and a plan mix that varies a
little by country.  ASNs are synthetic and grouped by tier: 1000s for tier-1s, 2000s
for regional transit, from 10000 for access ISPs.

The calibrated world (:func:`build_calibrated_internet`) changes three things:

* **fixed and mobile**: a country's access ISPs alternate between fixed-line ISPs and
  mobile carriers (``…-Mobile-k``, present in all the country's metros), and in every
  metro the carriers take the continent's mobile share of the demand (:mod:`.lastmile`),
  the fixed-line ISPs the rest; a country's only ISP is both;
* **exchange points** (:mod:`.peering`): every network but the tier-1s present in an
  exchange city joins its route server and peers with every other member; a country
  without an exchange city has its largest ISP present (and a member) at the nearest
  one abroad;
* **thin local peering**: in the countries that exchange their traffic abroad no
  carrier is present, and all their access ISPs meet their carriers at the nearest
  exchange city abroad.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..internet import ASKind, Eyeballs, Internet, Metros
from ..plans import Plans
from ..table import FloatArray
from .geography import Cities
from .lastmile import mobile_share
from .peering import exchange_abroad, ixp_metros, route_server_pairs

TIER1_ASN0 = 1001
TRANSIT_ASN0 = 2001
ACCESS_ASN0 = 10001
TRANSITS_PER_CONTINENT = {"NA": 8, "EU": 10, "AS": 10, "SA": 4, "AF": 4, "OC": 3}


@dataclass
class _AS:
    asn: int
    kind: ASKind
    name: str
    country: str
    metros: list[int]  # metro rows
    share: float = 0.0  # market share among its country's access ISPs
    mobile: float = 0.0  # share of its users on mobile access
    abroad: list[int] = field(default_factory=list)  # metros abroad (no users there)


@dataclass(frozen=True)
class Calibrated:
    """What the calibrated Internet adds, by AS row of the Internet."""

    internet: Internet
    mobile: FloatArray  # share of mobile access of each AS
    members: dict[int, list[int]]  # exchange metro row -> member AS rows


def build_internet(
    cities: Cities,
    rng: np.random.Generator,
    plans: Plans,
    peak_rps: float,
    tier1: int = 12,
) -> Internet:
    """The Internet over ``cities`` (all of them are metros); demand sums to ``peak_rps``."""
    return _build(cities, rng, plans, peak_rps, tier1, None).internet


def build_calibrated_internet(
    cities: Cities,
    rng: np.random.Generator,
    plans: Plans,
    peak_rps: float,
    tier1: int = 12,
    thin: frozenset[str] = frozenset(),
) -> Calibrated:
    """The calibrated Internet (see the module): ``thin`` names the countries that
    exchange their traffic abroad."""
    return _build(cities, rng, plans, peak_rps, tier1, thin)


def _build(
    cities: Cities,
    rng: np.random.Generator,
    plans: Plans,
    peak_rps: float,
    tier1: int,
    thin: frozenset[str] | None,
) -> Calibrated:
    n = len(cities)
    online = cities.traffic()
    pop_order = np.argsort(-online, kind="stable")
    continent = np.array(cities.continent)
    country = np.array(cities.country)
    ases: list[_AS] = []
    p2c: list[tuple[int, int]] = []
    p2p: list[tuple[int, int]] = []
    calibrated = thin is not None
    # carriers are present only where networks exchange traffic at home
    home = ~np.isin(country, sorted(thin)) if thin is not None else np.ones(n, dtype=np.bool_)

    # Tier-1 clique: each present in a random half of the 80 biggest metros.
    top = pop_order[home[pop_order]][: min(80, n)]
    t1 = []
    for k in range(tier1):
        pick = rng.choice(top, size=max(1, len(top) // 2), replace=False)
        t1.append(len(ases))
        ases.append(_AS(TIER1_ASN0 + k, ASKind.TIER1, f"Tier1-{k + 1}", "", sorted(pick.tolist())))
    p2p += [(a, b) for i, a in enumerate(t1) for b in t1[i + 1 :]]

    # Regional transit.
    transits: dict[str, list[int]] = {}
    asn = TRANSIT_ASN0
    for cont, count in sorted(TRANSITS_PER_CONTINENT.items()):
        rows = pop_order[(continent[pop_order] == cont) & home[pop_order]]
        if not rows.size:
            continue
        big = rows[: max(4, rows.size // 10)]
        transits[cont] = []
        for k in range(count):
            size = int(rng.integers(max(1, big.size // 3), big.size + 1))
            pick = rng.choice(big, size=size, replace=False)
            me = len(ases)
            transits[cont].append(me)
            ases.append(
                _AS(asn, ASKind.TRANSIT, f"{cont}-Transit-{k + 1}", "", sorted(pick.tolist()))
            )
            asn += 1
            for prov in rng.choice(t1, size=int(rng.integers(2, 4)), replace=False).tolist():
                p2c.append((prov, me))
        members = transits[cont]
        p2p += [
            (a, b) for i, a in enumerate(members) for b in members[i + 1 :] if rng.random() < 0.5
        ]

    # Access ISPs per country.
    asn = ACCESS_ASN0
    access_by_country: dict[str, list[int]] = {}
    for cc in sorted(set(country.tolist())):
        rows = pop_order[country[pop_order] == cc]
        cont = str(continent[rows[0]])
        total = float(online[rows].sum())
        count = int(np.clip(round(1 + 1.5 * np.log10(max(total, 1e5) / 1e5)), 1, 8))
        shares = np.sort(rng.dirichlet(np.full(count, 1.5)))[::-1]
        mobile = np.zeros(count)
        if calibrated:
            ms = mobile_share(cc)
            if count == 1:
                mobile[0] = ms
            else:
                mobile[1::2] = 1.0
                shares = np.where(
                    mobile > 0,
                    shares * ms / shares[1::2].sum(),
                    shares * (1 - ms) / shares[0::2].sum(),
                )
        mine = []
        for k in range(count):
            if k == 0 or mobile[k] == 1.0:  # a mobile carrier covers the country
                pres = rows
            else:
                keep = rng.random(rows.size) < 0.5
                keep[0] = True
                pres = rows[keep]
            me = len(ases)
            mine.append(me)
            ases.append(
                _AS(
                    asn,
                    ASKind.ACCESS,
                    f"{cc}-{'Mobile' if mobile[k] == 1.0 else 'Access'}-{k + 1}",
                    cc,
                    sorted(pres.tolist()),
                    float(shares[k]),
                    float(mobile[k]),
                )
            )
            asn += 1
            ups = transits.get(cont) or t1
            for prov in rng.choice(
                ups, size=min(len(ups), int(rng.integers(1, 4))), replace=False
            ).tolist():
                p2c.append((prov, me))
            if k == 0 and count > 2:
                p2c.append((int(rng.choice(t1)), me))
        access_by_country[cc] = mine
        p2p += [(a, b) for i, a in enumerate(mine) for b in mine[i + 1 :] if rng.random() < 0.3]

    exchanges: dict[int, list[int]] = {}
    if thin is not None:
        exchanges = _exchanges(cities, ases, access_by_country, thin)
        p2p += route_server_pairs(exchanges, p2c)

    # Eyeballs: each metro's demand split by the market shares of the ISPs present.
    demand = peak_rps * online / max(float(online.sum()), 1.0)
    mix_by_country = {cc: rng.dirichlet(plans.share * 200.0) for cc in sorted(access_by_country)}
    e_as, e_metro, e_rps, e_mix = [], [], [], []
    for cc, mine in sorted(access_by_country.items()):
        present: dict[int, list[int]] = {}
        for a in mine:
            for m in ases[a].metros:
                present.setdefault(m, []).append(a)
        for m, isp in sorted(present.items()):
            w = np.array([ases[a].share for a in isp])
            radio = np.array([ases[a].mobile == 1.0 for a in isp])
            if radio.any() and not radio.all():  # calibrated: the mobile share per metro
                ms = mobile_share(cc)
                w = np.where(radio, ms * w / w[radio].sum(), (1 - ms) * w / w[~radio].sum())
            else:
                w = w / w.sum()
            for a, frac in zip(isp, w, strict=True):
                e_as.append(a)
                e_metro.append(m)
                e_rps.append(float(demand[m] * frac))
                e_mix.append(mix_by_country[cc])

    inet, row = _assemble(cities, ases, p2c, p2p, e_as, e_metro, e_rps, e_mix, len(plans))
    mob = np.zeros(len(ases))
    mob[row] = [a.mobile for a in ases]
    return Calibrated(
        internet=inet,
        mobile=mob,
        members={m: sorted(int(row[a]) for a in mem) for m, mem in sorted(exchanges.items())},
    )


def _exchanges(
    cities: Cities, ases: list[_AS], access_by_country: dict[str, list[int]], thin: frozenset[str]
) -> dict[int, list[int]]:
    """Place access ISPs at exchanges abroad (all of a thin country's, the largest of a
    country without an exchange city) and list every exchange's members."""
    ixps = ixp_metros(cities)
    with_ixp = {cities.country[m] for m in ixps.tolist()}
    away = exchange_abroad(cities, ixps, set(access_by_country) - with_ixp)
    for cc, mine in access_by_country.items():
        if cc not in away:
            continue
        for a in mine if cc in thin else mine[:1]:
            ases[a].abroad.append(away[cc])
    at_ixp = set(ixps.tolist())
    members: dict[int, list[int]] = {m: [] for m in ixps.tolist()}
    for i, x in enumerate(ases):
        if x.kind == ASKind.TIER1:
            continue
        for m in set(x.metros + x.abroad) & at_ixp:
            members[m].append(i)
    return members


def _assemble(
    cities: Cities,
    ases: list[_AS],
    p2c: list[tuple[int, int]],
    p2p: list[tuple[int, int]],
    e_as: list[int],
    e_metro: list[int],
    e_rps: list[float],
    e_mix: list[np.ndarray],
    n_plans: int,
) -> tuple[Internet, np.ndarray]:
    asn = np.array([a.asn for a in ases], dtype=np.int64)
    order = np.argsort(asn, kind="stable")
    row = np.empty_like(order)
    row[order] = np.arange(order.size)  # old list position → sorted row
    metros = Metros(
        id=cities.id,
        name=cities.name,
        country=cities.country,
        lat=cities.lat,
        lon=cities.lon,
        population=cities.population,
    )
    pc = row[np.array(p2c, dtype=np.int64).reshape(-1, 2)]
    pc = np.unique(pc, axis=0)
    pp = np.sort(row[np.array(p2p, dtype=np.int64).reshape(-1, 2)], axis=1)
    pp = np.unique(pp, axis=0)
    presence = np.unique(
        np.array(
            [(row[i], m) for i, a in enumerate(ases) for m in a.metros + a.abroad],
            dtype=np.int64,
        ).reshape(-1, 2),
        axis=0,
    )
    eyeballs = Eyeballs.from_rows(
        row[np.array(e_as, dtype=np.int64)],
        np.array(e_metro, dtype=np.int64),
        np.array(e_rps),
        np.array(e_mix).reshape(-1, n_plans),
    )
    inet = Internet(
        asn=asn[order],
        kind=np.array([ases[i].kind for i in order], dtype=np.int8),
        name=tuple(ases[i].name for i in order),
        country=tuple(ases[i].country for i in order),
        p2c=pc,
        p2p=pp,
        metros=metros,
        presence=presence,
        eyeballs=eyeballs,
    )
    return inet, row
