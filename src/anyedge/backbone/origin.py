"""Origin paths: for every (landing site, origin), direct transit or the backbone first.

A cache miss at site ``s`` is fetched from origin ``o`` either over ``s``'s own transit
or over the backbone to an *egress* site ``e`` and out over ``e``'s transit.  With
``B`` the backbone's all-pairs round trips and ``T`` the transit round trips from every
site to every origin, the best round trip is the min-plus product::

    best[s, o] = min over e of (B[s, e] + T[e, o])      (e = s: direct transit)

computed a block of landing sites at a time in numpy (B and T dense; for 300 sites and
1,000 origins that is 90 million additions).  ``T`` is the world's latency model between
the site and the origin times the site's transit detour (:class:`~anyedge.model.Backbone`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model import Origins, World
from .graph import FloatArray, Graph, IntArray, Path, spell

BLOCK = 16  # landing sites per numpy step: (16, sites, origins) float64 stays in cache-ish


@dataclass(frozen=True, eq=False)
class OriginPaths:
    """Round trips (ms) from every site to every origin, and the egress of the best."""

    direct_rtt: FloatArray  # (sites, origins): over the landing site's transit
    best_rtt: FloatArray  # (sites, origins): the best candidate
    egress: IntArray  # (sites, origins): the site whose transit the best leaves by
    backbone_rtt: FloatArray  # (sites, sites)
    pred: IntArray  # (sites, sites) backbone predecessors

    def path(self, site: int, origin: int) -> Path:
        """The backbone sites of the best path from ``site`` to ``origin``, egress last."""
        p = spell(self.pred[site], site, int(self.egress[site, origin]))
        assert p is not None  # the egress was reachable, or it would not be chosen
        return p

    def candidates(self, site: int, origin: int, k: int = 3) -> list[tuple[int, float]]:
        """What Argo measures for (``site``, ``origin``): the ``k`` fastest egresses by the
        model, as (egress, round trip), fastest first, with direct transit always among
        them (egress = ``site``)."""
        total = self.backbone_rtt[site] + self.direct_rtt[:, origin]
        order = [int(e) for e in np.argsort(total, kind="stable") if np.isfinite(total[e])]
        picked = [*[e for e in order if e != site][: max(k - 1, 0)], site]
        return sorted(((e, float(total[e])) for e in picked), key=lambda c: (c[1], c[0] != site))

    @property
    def gain(self) -> FloatArray:
        """How much faster the best is than direct transit: 1 - best / direct."""
        return np.asarray(1.0 - self.best_rtt / self.direct_rtt)


def transit_rtt(world: World, origins: Origins | None = None) -> FloatArray:
    """(sites, origins) round trips over each site's own transit."""
    o = world.backbone.origins if origins is None else origins
    s = world.network.sites
    rtt = world.latency.rtt_matrix(s.lat, s.lon, o.lat, o.lon)
    return np.asarray(rtt * world.backbone.detour(len(s))[:, None])


def best_via(backbone_rtt: FloatArray, transit: FloatArray) -> tuple[FloatArray, IntArray]:
    """Min-plus product of (n, n) and (n, m): best round trip and its argmin egress."""
    _n, m = transit.shape
    best = np.empty((backbone_rtt.shape[0], m))
    egress = np.empty((backbone_rtt.shape[0], m), dtype=np.int32)
    for lo in range(0, backbone_rtt.shape[0], BLOCK):
        total = backbone_rtt[lo : lo + BLOCK, :, None] + transit[None, :, :]
        arg = total.argmin(axis=1)
        egress[lo : lo + BLOCK] = arg
        best[lo : lo + BLOCK] = np.take_along_axis(total, arg[:, None, :], axis=1)[:, 0, :]
    return best, egress


def origin_paths(
    world: World, origins: Origins | None = None, graph: Graph | None = None
) -> OriginPaths:
    """Best path from every site to every origin (``graph`` may be cut or degraded)."""
    n = len(world.network.sites)
    g = Graph.from_links(world.backbone.links, n) if graph is None else graph
    return paths_from(g, transit_rtt(world, origins))


def paths_from(graph: Graph, transit: FloatArray) -> OriginPaths:
    """Best paths given the backbone graph and a (sites, origins) transit round trip."""
    dist, pred = graph.shortest()
    backbone = 2.0 * dist
    best, egress = best_via(backbone, transit)
    # ties go to direct transit: the backbone is taken only when it is strictly faster
    direct = np.ascontiguousarray(transit)
    same = best >= direct
    idx = np.arange(graph.n, dtype=np.int32)[:, None]
    egress = np.where(same, idx, egress).astype(np.int32)
    best = np.where(same, direct, best)
    return OriginPaths(direct, best, egress, backbone, pred)
