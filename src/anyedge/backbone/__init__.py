"""Paths from the sites to customers' origins: the backbone, SR-TE, Argo, Orpheus, tiers.

A cache miss at the site where a request landed must reach the customer's origin.  Data
flows through this package in one direction:

1. :mod:`.graph` turns the model's backbone links (:class:`~anyedge.model.Backbone`)
   into a sparse latency graph and runs scipy's Dijkstra over it.
2. :mod:`.origin` puts every candidate side by side — direct transit from the landing
   site, or the backbone to an egress site and transit from there — and keeps the best
   for every (site, origin) at once (a min-plus product in numpy).
3. :mod:`.srte` lays demands on latency-optimal backbone paths without overloading a
   link, and keeps ``k`` alternatives per pair.
4. :mod:`.argo` chooses, from measured round trips, the path each (site, origin) uses,
   with hysteresis; :mod:`.orpheus` takes a failing path away from every customer at once
   and gives it back when it heals.  Both are sans-IO: the caller passes in samples and
   the time.
5. :mod:`.tiers` puts an upper-tier cache per origin and prices a miss through it.

Pure computation: no sockets, no clocks.  The lab and the twin drive it.
"""

from .argo import Argo
from .graph import Graph, Path, spell
from .origin import OriginPaths, best_via, origin_paths, paths_from, transit_rtt
from .orpheus import Orpheus
from .srte import Demand, Placement, k_shortest, place
from .tiers import Tiers, tiers

__all__ = [
    "Argo",
    "Demand",
    "Graph",
    "OriginPaths",
    "Orpheus",
    "Path",
    "Placement",
    "Tiers",
    "best_via",
    "k_shortest",
    "origin_paths",
    "paths_from",
    "place",
    "spell",
    "tiers",
    "transit_rtt",
]
