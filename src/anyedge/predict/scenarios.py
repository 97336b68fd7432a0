"""Failure scenarios the Traffic Predictor looks at.

The reference's predictor tests every data centre on its own, then "a second layer of
indirection": the site failing together with the sites around it, up to the
catastrophic failure of a whole region.  For every site this module lists

* ``single`` — the site withdraws its prefixes;
* ``pair`` — the site and one of its *k* nearest sites (by great-circle distance);
* ``region`` — the site and all *k* nearest at once;
* ``section`` — one section of a multi-colo site fails: no route changes (Duomog keeps
  the traffic inside the site), but the site has less room.

Pairs and regions that name the same set of sites are kept once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..model.network import SiteKind
from ..model.world import World

IntArray = npt.NDArray[np.int64]

KINDS = ("none", "single", "pair", "region", "section")


@dataclass(frozen=True, order=True)
class Scenario:
    """What fails: site rows, or one section (then ``failed`` is empty)."""

    kind: str
    failed: tuple[int, ...] = ()
    section: int = -1

    def name(self, world: World) -> str:
        if self.kind == "section":
            return world.network.sections.name[self.section]
        if not self.failed:
            return "none"
        return "+".join(world.network.sites.code[i] for i in self.failed)


def nearest_sites(world: World, k: int) -> IntArray:
    """(sites, k) rows of each site's k nearest other sites, nearest first."""
    s = world.network.sites
    if len(s) < 2 or k < 1:
        return np.zeros((len(s), 0), dtype=np.int64)
    d = world.latency.rtt_matrix(s.lat, s.lon, s.lat, s.lon)
    np.fill_diagonal(d, np.inf)
    k = min(k, len(s) - 1)
    return np.argsort(d, axis=1, kind="stable")[:, :k].astype(np.int64)


def atlas_scenarios(world: World, k: int = 5, sections: bool = True) -> list[Scenario]:
    """Every scenario of the atlas, in a stable order: singles, pairs, regions, sections."""
    n = len(world.network.sites)
    near = nearest_sites(world, k)
    out = [Scenario("single", (i,)) for i in range(n)]
    seen: set[tuple[int, ...]] = {(i,) for i in range(n)}
    for kind, groups in (
        ("pair", [tuple(sorted((i, int(j)))) for i in range(n) for j in near[i]]),
        ("region", [tuple(sorted({i, *near[i].tolist()})) for i in range(n)]),
    ):
        for g in groups:
            if g not in seen:
                seen.add(g)
                out.append(Scenario(kind, g))
    if sections:
        sec = world.network.sections
        mcp = world.network.sites.kind[sec.site] == SiteKind.MCP
        out += [Scenario("section", (), int(j)) for j in np.flatnonzero(mcp)]
    return out
