"""Measuring an anycast address from the world's probes, the way RIPE Atlas does.

The F-root post measured the round trip to F-root's address from RIPE Atlas probes
before and after a second operator (a CDN) began announcing the same prefix from its
own sites: the median fell from 8.24 ms to 4.24 ms, and the largest drop was at the
90th percentile.  This module does the same in the twin:

1. :func:`atlas_probes` places probes: metros drawn in proportion to their population,
   and in each metro a user network drawn in proportion to its demand (a probe sits in
   somebody's access network), with a seed so that two runs place the same probes;
2. :func:`measure` gives each probe its round trip to the anycast address for an
   announcement — the routing engine's catchment (``Mode.METRO``, hot potato) and the
   latency model: the path a probe's packets take to the site BGP picks for its network;
3. :func:`summarize` reduces round trips to the median, the 90th percentile and the
   median by country; :func:`compare` does before and after for two announcements.

:func:`share_with` makes the two-operator world of the post from a one-operator world:
the sites it names stay anyedge's, the others become a second operator's, originating
the same prefix from its own ASN.  :func:`verfploeter` is the catchment map that
Verfploeter measures (de Vries et al., IMC 2017): ping every network *from* the anycast
address and see at which site each reply arrives — a reply goes where the network's
route to the anycast address leads, which is what the routing engine computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from ..model.network import Operator
from ..model.world import World
from ..routing import Announcement, Mode, Router

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Probes:
    """Probes, one per row: the eyeball row (user network in a metro) each sits in."""

    eyeball: IntArray
    metro: IntArray
    country: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.eyeball.shape[0])


def atlas_probes(world: World, n: int = 2000, seed: int = 0) -> Probes:
    """``n`` probes: metros weighted by population, networks in a metro by demand."""
    if n < 1:
        raise ValueError("at least one probe")
    inet = world.internet
    e, m = inet.eyeballs, inet.metros
    has_users = np.bincount(e.metro, weights=e.rps, minlength=len(m)) > 0
    weight = np.where(has_users, m.population, 0).astype(np.float64)
    if weight.sum() <= 0:
        raise ValueError("no metro with both people and user networks")
    rng = np.random.default_rng(seed)
    metros = rng.choice(len(m), size=n, p=weight / weight.sum())
    order = np.argsort(e.metro, kind="stable")  # eyeball rows grouped by metro
    starts = np.searchsorted(e.metro[order], np.arange(len(m) + 1))
    rows = np.empty(n, dtype=np.int64)
    for i, mi in enumerate(metros.tolist()):
        group = order[starts[mi] : starts[mi + 1]]
        w = e.rps[group]
        rows[i] = group[rng.choice(group.size, p=w / w.sum())]
    metro = np.asarray(metros, dtype=np.int64)
    return Probes(rows, metro, tuple(m.country[i] for i in metro.tolist()))


@dataclass(frozen=True)
class Measurement:
    rtt_ms: FloatArray  # per probe; NaN where the address is unreachable
    site: IntArray  # per probe: the site that answered (-1: none)
    origin_asn: IntArray  # per probe: the ASN that originated the route it took


def measure(
    world: World, probes: Probes, ann: Announcement | None = None, mode: Mode = Mode.METRO
) -> Measurement:
    """Each probe's round trip to the anycast address for ``ann`` (default: everywhere)."""
    c = Router(world, mode).catchment(ann)
    rtt = np.asarray(c.eyeball_rtt_ms, dtype=np.float64)[probes.eyeball]
    return Measurement(rtt, c.eyeball_site[probes.eyeball], c.eyeball_origin_asn[probes.eyeball])


@dataclass(frozen=True)
class Summary:
    probes: int
    answered: int
    median_ms: float
    p90_ms: float
    quantiles_ms: dict[int, float]  # percentile -> ms
    by_country: dict[str, tuple[int, float]]  # country -> (probes, median ms)

    def to_dict(self) -> dict[str, object]:
        return {
            "probes": self.probes,
            "answered": self.answered,
            "median_ms": round(self.median_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "quantiles_ms": {str(k): round(v, 3) for k, v in self.quantiles_ms.items()},
            "by_country": {
                c: {"probes": k, "median_ms": round(v, 3)} for c, (k, v) in self.by_country.items()
            },
        }


PERCENTILES = (10, 25, 50, 75, 90, 95)  # reported; the post names the median and p90


def summarize(probes: Probes, m: Measurement) -> Summary:
    ok = ~np.isnan(m.rtt_ms)
    rtt = m.rtt_ms[ok]
    if not rtt.size:
        raise ValueError("no probe reached the anycast address")
    q = {p: float(np.percentile(rtt, p)) for p in PERCENTILES}
    country = np.array(probes.country, dtype=object)[ok]
    by: dict[str, tuple[int, float]] = {}
    for c in sorted(set(country.tolist())):
        mine = rtt[country == c]
        by[c] = (int(mine.size), float(np.median(mine)))
    return Summary(len(probes), int(ok.sum()), q[50], q[90], q, by)


@dataclass(frozen=True)
class BeforeAfter:
    before: Summary
    after: Summary

    def drop_ms(self) -> dict[int, float]:
        """How much each percentile fell, in ms."""
        return {p: self.before.quantiles_ms[p] - self.after.quantiles_ms[p] for p in PERCENTILES}

    def largest_drop_at(self) -> int:
        d = self.drop_ms()
        return max(d, key=lambda p: d[p])

    def to_dict(self) -> dict[str, object]:
        return {
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "median_ratio": round(self.after.median_ms / self.before.median_ms, 3),
            "drop_ms": {str(p): round(v, 3) for p, v in self.drop_ms().items()},
            "largest_drop_at": self.largest_drop_at(),
        }


def compare(world: World, probes: Probes, before: Announcement, after: Announcement) -> BeforeAfter:
    """The probes' round trips with ``before`` announced, and with ``after``."""
    return BeforeAfter(
        summarize(probes, measure(world, probes, before)),
        summarize(probes, measure(world, probes, after)),
    )


@dataclass(frozen=True)
class Pair:
    """Two operators on one prefix: the world, and what is announced before the second
    operator joins (anyedge's sites ``ours``) and after (``ours`` and ``theirs``); the
    world's other sites announce in neither."""

    world: World
    before: Announcement
    after: Announcement


def share_with(
    world: World, ours: Sequence[str], theirs: Sequence[str], name: str, asn: int
) -> Pair:
    """The world with sites ``theirs`` run by operator ``name`` from ``asn``."""
    codes = world.network.sites.code
    a = sorted(codes.index(c) for c in ours)
    b = sorted(codes.index(c) for c in theirs)
    if set(a) & set(b):
        raise ValueError("a site cannot belong to both operators")
    net = replace(world.network, operators=(Operator(name, asn, tuple(b)),))
    w = replace(world, network=net)
    none = Announcement.everywhere(len(codes)).withdraw(*range(len(codes)))
    return Pair(w, none.announce(*a), none.announce(*a, *b))


def verfploeter(world: World, ann: Announcement | None = None, mode: Mode = Mode.METRO) -> IntArray:
    """For every user network (eyeball row), the site at which its reply to a ping from
    the anycast address arrives (-1: none arrives)."""
    return np.asarray(Router(world, mode).catchment(ann).eyeball_site, dtype=np.int64)


def f_root_pair(world: World, every: int = 5, theirs: int = 50, asn: int = 64600) -> Pair:
    """The pair of operators this project measures the post's shape on: anyedge runs
    every ``every``-th site of the world (sites are in order of city size, so these are
    spread over the world like a root operator's), and a CDN (``asn``) adds ``theirs``
    sites — the largest cities anyedge is not in."""
    codes = world.network.sites.code
    ours = list(codes[::every])
    others = [c for c in codes if c not in set(ours)]
    return share_with(world, ours, others[:theirs], "cdn", asn)
