"""The calibration report: the world's figures beside the published ones they aim at.

A world is only as useful as it is like the Internet it stands for.  :func:`calibrate`
measures, on a world, the figures that published measurements give for the real one,
and sets each beside its published value with the tolerance it must meet:

* **demand within 50 ms** of the site BGP sends it to (:func:`~anyedge.routing.reach.
  served_rtt`, last mile included) against Cloudflare's "about 95 % of the
  Internet-connected population within about 50 ms";
* **the median round trip** after routing, which must lie between the typical fixed-line
  and mobile round trips to a nearby server that Ookla's Speedtest Global Index reports
  (about 10 and 30 ms);
* **F-root's medians** before and after a CDN announced its prefix (8.24 and 4.24 ms
  from RIPE Atlas probes, each within 40 %), measured from 5,000 Atlas-like probes
  (:func:`atlas_like_probes`) on the pair of operators of :func:`~.probes.f_root_pair`;
* **London–New York and Sydney–Auckland**: the latency model's round trip between the
  cities against public ping statistics between them;
* **peer links**: their share of the AS graph's links, which CAIDA's AS-relationship
  snapshots put above half.

Atlas probes are not users: they sit on wired lines, about half of them in Europe
(:data:`ATLAS_SHARE`), many in well-connected networks.  The report places probes by
those shares in fixed-line networks, in proportion to demand, and prices each with the
path its network's traffic takes plus a wired first hop of :data:`PROBE_ACCESS_MS` —
an assumption, stated with the figures it produces.  ``anyedge probes`` measures with
the same probes (:func:`atlas_like_probes`, :func:`compare_wired`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model.geo import great_circle_km
from ..model.summary import continent_of
from ..model.world import World
from ..routing import Announcement
from ..routing.reach import served_rtt
from .probes import BeforeAfter, Measurement, Probes, f_root_pair, measure, summarize

# RIPE Atlas's probes by continent, rounded from its public probe statistics.
ATLAS_SHARE = {"EU": 0.55, "NA": 0.20, "AS": 0.12, "AF": 0.05, "SA": 0.04, "OC": 0.04}
PROBE_ACCESS_MS = 1.0  # a probe's wired first hop (an assumption, see the module)
CITY_PAIRS = (
    # (a, b, published text, low, high)
    (
        ("London", "GB"),
        ("New York City", "US"),
        "about 70-75 ms (public ping statistics)",
        65.0,
        80.0,
    ),
    (("Sydney", "AU"), ("Auckland", "NZ"), "about 25-30 ms (public ping statistics)", 22.0, 35.0),
)


@dataclass(frozen=True)
class Figure:
    """One figure of the world beside its published value and tolerance."""

    name: str
    world: float
    published: str
    low: float
    high: float
    unit: str
    source: str

    @property
    def ok(self) -> bool:
        return bool(self.low <= self.world <= self.high)

    def to_dict(self) -> dict[str, object]:
        return {
            "figure": self.name,
            "world": round(self.world, 4),
            "published": self.published,
            "low": self.low,
            "high": self.high,
            "unit": self.unit,
            "ok": self.ok,
            "source": self.source,
        }


def atlas_like_probes(world: World, n: int = 2000, seed: int = 1) -> Probes:
    """``n`` probes spread by continent like RIPE Atlas's (:data:`ATLAS_SHARE`), in
    fixed-line networks (not mobile carriers), in proportion to their demand."""
    if n < 1:
        raise ValueError("at least one probe")
    inet = world.internet
    e = inet.eyeballs
    cont = np.array(continent_of(inet.metros.country))[e.metro]
    fixed = np.array(["-Mobile-" not in inet.name[a] for a in e.as_.tolist()], dtype=np.bool_)
    weight = np.zeros(len(e))
    for c, share in ATLAS_SHARE.items():
        sel = (cont == c) & fixed
        total = float(e.rps[sel].sum())
        if total > 0:
            weight[sel] = share * e.rps[sel] / total
    if weight.sum() <= 0:
        raise ValueError("no fixed-line user network to place probes in")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(e), size=n, p=weight / weight.sum()))
    metro = np.asarray(e.metro[rows], dtype=np.int64)
    return Probes(
        rows.astype(np.int64), metro, tuple(inet.metros.country[m] for m in metro.tolist())
    )


def wired(world: World, probes: Probes, m: Measurement) -> Measurement:
    """``m`` with each probe's last mile replaced by a wired first hop of
    :data:`PROBE_ACCESS_MS` (a probe is not on its network's typical user line)."""
    access = world.eyeball_access_ms()[probes.eyeball]
    return Measurement(m.rtt_ms - access + PROBE_ACCESS_MS, m.site, m.origin_asn)


def compare_wired(
    world: World, probes: Probes, before: Announcement, after: Announcement
) -> BeforeAfter:
    """:func:`~.probes.compare` for probes on wired first hops (:func:`wired`)."""
    first, then = (
        summarize(probes, wired(world, probes, measure(world, probes, a))) for a in (before, after)
    )
    return BeforeAfter(first, then)


def f_root(world: World, probes: int = 5000, seed: int = 1) -> tuple[float, float]:
    """Median round trip of Atlas-like probes to the prefix before and after the second
    operator of :func:`~.probes.f_root_pair` announces it."""
    pair = f_root_pair(world)
    atlas = atlas_like_probes(pair.world, probes, seed)
    ba = compare_wired(pair.world, atlas, pair.before, pair.after)
    return ba.before.median_ms, ba.after.median_ms


def _city_rtt(world: World, a: tuple[str, str], b: tuple[str, str]) -> float | None:
    m = world.internet.metros
    where = {(n, c): i for i, (n, c) in enumerate(zip(m.name, m.country, strict=True))}
    if a not in where or b not in where:
        return None
    i, j = where[a], where[b]
    km = great_circle_km(m.lat[i], m.lon[i], m.lat[j], m.lon[j])
    return float(world.latency.rtt_from_km(km))


def calibrate(world: World, probes: int = 5000, seed: int = 1) -> list[Figure]:
    """The calibration report of ``world`` (see the module)."""
    served = served_rtt(world)
    figs = [
        Figure(
            "demand within 50 ms after routing",
            100 * served["demand_within_ms"]["50"],
            "about 95 %",
            90.0,
            98.0,
            "%",
            "Cloudflare: about 95 % of the Internet-connected population within about 50 ms",
        ),
        Figure(
            "median round trip after routing",
            served["median_ms"],
            "10-30 ms",
            10.0,
            30.0,
            "ms",
            "Ookla Speedtest Global Index: typical fixed-line and mobile round trips "
            "to a nearby server",
        ),
    ]
    before, after = f_root(world, probes, seed)
    atlas = "F-root post: RIPE Atlas probes' median before and after a CDN announced"
    figs += [
        Figure(
            "F-root median before, Atlas-like probes", before, "8.24 ms", 4.9, 11.5, "ms", atlas
        ),
        Figure("F-root median after, Atlas-like probes", after, "4.24 ms", 2.5, 5.9, "ms", atlas),
    ]
    for a, b, text, low, high in CITY_PAIRS:
        rtt = _city_rtt(world, a, b)
        if rtt is not None:
            figs.append(
                Figure(f"{a[0]}-{b[0]} round trip", rtt, text, low, high, "ms", "latency model")
            )
    inet = world.internet
    links = len(inet.p2c) + len(inet.p2p)
    figs.append(
        Figure(
            "peer links among AS links",
            100 * len(inet.p2p) / links if links else 0.0,
            "most",
            50.0,
            90.0,
            "%",
            "CAIDA AS-relationship snapshots: most links are peer links",
        )
    )
    return figs
