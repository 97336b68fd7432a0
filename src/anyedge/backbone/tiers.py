"""Tiered caching: a lower-tier site fetches a miss from its upper tier over the backbone.

For each origin one upper tier is chosen among the upper-tier sites (by default the
multi-colo sites): the one with the fastest best path (:mod:`.origin`) to that origin,
so that the misses of every site for one origin meet in one cache.  A miss at a
lower-tier site ``s`` costs the backbone round trip to the upper tier; a miss there
costs the upper tier's best path to the origin.  An upper-tier site is its own upper tier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .graph import FloatArray, IntArray
from .origin import OriginPaths


@dataclass(frozen=True, eq=False)
class Tiers:
    upper: IntArray  # (origins,): the upper-tier site of each origin
    to_upper_rtt: FloatArray  # (sites, origins): lower tier -> upper tier over the backbone
    upper_origin_rtt: FloatArray  # (origins,): upper tier -> origin, best path

    @property
    def full_miss_rtt(self) -> FloatArray:
        """(sites, origins): a miss at both tiers, lower -> upper -> origin."""
        return np.asarray(self.to_upper_rtt + self.upper_origin_rtt[None, :])


def tiers(paths: OriginPaths, upper_sites: npt.ArrayLike) -> Tiers:
    """The upper tier of each origin among ``upper_sites`` and the fetch round trips."""
    ups = np.asarray(upper_sites, dtype=np.int64)
    if ups.size == 0:
        raise ValueError("tiered caching needs at least one upper-tier site")
    at_upper = paths.best_rtt[ups]  # (uppers, origins)
    pick = at_upper.argmin(axis=0)
    upper = ups[pick].astype(np.int32)
    to_upper = paths.backbone_rtt[:, upper]  # (sites, origins)
    return Tiers(upper, np.asarray(to_upper), at_upper[pick, np.arange(pick.size)])
