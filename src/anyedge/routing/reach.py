"""How far users are from the site BGP actually sends them to (demand-weighted).

Geography gives a bound: the round trip from each metro to its nearest site
(:func:`anyedge.model.summary.summarize`).  Routing decides where users really go: a
user's network may prefer a provider's route to a farther site, and its traffic may
leave by an exit far from the user.  :func:`served_rtt` takes the catchment of every
distinct announcement the world makes (one for a world whose prefixes are all announced
everywhere), weights each user's round trip to its serving site by the user's demand
and by the share of prefixes announced that way, and summarises it: the share of
demand within each round-trip band, the median, the 90th percentile and the demand no
site is reachable for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model.summary import RTT_BANDS_MS
from ..model.world import World
from .announce import Announcement
from .catchment import Router


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The smallest value below which at least ``q`` of the weight lies."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    if cum.size == 0 or cum[-1] <= 0:
        return float("nan")
    return float(values[order][np.searchsorted(cum, q * cum[-1])])


def served_rtt(world: World, router: Router | None = None) -> dict[str, Any]:
    """Demand by round trip to the serving site, after routing (see the module)."""
    net, inet = world.network, world.internet
    n_sites = len(net.sites)
    announced = (
        net.prefixes.announced if len(net.prefixes) else np.ones((1, n_sites), dtype=np.bool_)
    )
    rows, counts = np.unique(announced, axis=0, return_counts=True)
    rps = inet.eyeballs.rps.astype(np.float64)
    router = router or Router(world)
    rtts, weights, lost = [], [], 0.0
    for row, n in zip(rows, counts, strict=True):
        share = n / len(announced)
        ann = Announcement(
            row.copy(), np.zeros(n_sites, dtype=np.int64), np.zeros(n_sites, dtype=np.int8)
        )
        c = router.catchment(ann)
        ok = c.eyeball_site >= 0
        rtts.append(c.eyeball_rtt_ms[ok])
        weights.append(rps[ok] * share)
        lost += float(rps[~ok].sum() * share)
    rtt = np.concatenate(rtts) if rtts else np.zeros(0)
    w = np.concatenate(weights) if weights else np.zeros(0)
    total = float(w.sum()) + lost
    return {
        "demand_within_ms": {
            str(b): float(w[rtt <= b].sum() / total) if total else 0.0 for b in RTT_BANDS_MS
        },
        "median_ms": weighted_quantile(rtt, w, 0.5),
        "p90_ms": weighted_quantile(rtt, w, 0.9),
        "unreached": lost / total if total else 0.0,
    }
