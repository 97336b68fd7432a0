"""Anycast catchments: which site every AS and every user reaches, by which path, how fast.

A :class:`Router` holds everything about a world that does not change between
scenarios — the AS graph in phase order, its edges, where networks meet — and computes
a :class:`Catchment` for an announcement of one prefix:

1. seeds from the sites' sessions (:mod:`.announce`);
2. Gao-Rexford propagation (:mod:`.propagate`): each AS's best route;
3. exits per AS (:mod:`.exits`) and the walk of every eyeball from its metro to a site
   (:mod:`.walk`), giving the site each user reaches, the AS path and the distance,
   priced by the world's latency model.

Two tie-break modes:

* ``Mode.AS`` — each AS uses the single route it chose, ties broken by the lowest
  neighbour ASN (then the lowest site row, for several sessions with anyedge): the rule
  of the BGPy simulator, so the two can be compared AS for AS;
* ``Mode.METRO`` — among routes equal by rank and AS-path length, each metro of an AS
  leaves by the exit nearest to it (hot potato).  Users of one AS in different cities
  can then reach different sites, as on the real Internet.

Changing an announcement re-runs only what it affects (:meth:`Router.change`,
:meth:`Router.withdraw`): the ASes whose route changes, and the users whose walk
crossed an AS whose exits changed.
"""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from ..model.world import World
from .announce import Announcement, Rank, Seeds
from .exits import Edges, Exits, best_exits, chosen_exits
from .faults import Faults
from .graph import RoutingGraph
from .propagate import RouteState, as_path, changed_seed_holders, propagate, update
from .walk import Geography, Walk, walk

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.floating[Any]]

RANK_NAMES = {
    Rank.ORIGIN: "origin",
    Rank.CUSTOMER: "customer",
    Rank.PEER: "peer",
    Rank.PROVIDER: "provider",
    Rank.NONE: "none",
}


class Mode(StrEnum):
    AS = "as"
    METRO = "metro"


@dataclass
class Catchment:
    """The result for one announcement of one prefix."""

    router: Router
    announcement: Announcement
    seeds: Seeds
    state: RouteState
    exits: Exits
    walk: Walk  # one walker per eyeball row

    @property
    def world(self) -> World:
        return self.router.world

    @property
    def eyeball_site(self) -> IntArray:
        return self.walk.origin

    @property
    def eyeball_origin_asn(self) -> IntArray:
        """The origin ASN of each eyeball row's route (its site's operator's; 0: no
        route) — with a prefix shared between operators, several ASNs originate it."""
        site = self.eyeball_site
        asn = self.world.network.origin_asn()
        return np.asarray(np.where(site >= 0, asn[np.maximum(site, 0)], 0), dtype=np.int64)

    @property
    def eyeball_rtt_ms(self) -> FloatArray:
        return self.world.eyeball_rtt_ms(self.walk.km)

    @property
    def as_site(self) -> IntArray:
        """Site of each AS's own chosen route (-1: no route)."""
        return self.state.origin

    def site_demand(self) -> FloatArray:
        """Peak requests/s reaching each site."""
        e = self.world.internet.eyeballs
        ok = self.eyeball_site >= 0
        return np.bincount(
            self.eyeball_site[ok], weights=e.rps[ok], minlength=len(self.world.network.sites)
        ).astype(np.float64)

    def site_share(self) -> FloatArray:
        """Share of all demand that reaches each site (unreached demand counts in the total)."""
        total = float(self.world.internet.eyeballs.rps.sum())
        return self.site_demand() / total if total else self.site_demand()

    def unreached_demand(self) -> float:
        e = self.world.internet.eyeballs
        return float(e.rps[self.eyeball_site < 0].sum())

    def metro_site(self) -> IntArray:
        """Per metro, the site that takes the largest part of its demand (-1: none)."""
        w = self.world
        e = w.internet.eyeballs
        ok = self.eyeball_site >= 0
        m, s = len(w.internet.metros), len(w.network.sites)
        flat = np.bincount(
            e.metro[ok].astype(np.int64) * s + self.eyeball_site[ok],
            weights=e.rps[ok],
            minlength=m * s,
        ).reshape(m, s)
        out = flat.argmax(axis=1)
        out[flat.max(axis=1) <= 0] = -1
        return np.asarray(out, dtype=np.int64)

    def eyeball_path(self, i: int) -> list[int]:
        """AS path (ASNs) of eyeball row ``i``, ending with anyedge's ASN and prepends."""
        site = int(self.eyeball_site[i])
        if site < 0:
            return []
        rows = [int(r) for r in self.walk.path[i] if r >= 0]
        asn = self.router.graph.asn
        origin = int(self.world.network.origin_asn()[site])
        last = int(asn[rows[-1]]) if rows else 0  # the AS that holds the site's route
        extra = self.world.network.sessions.prepend_of(site, last)
        tail = [origin] * (1 + int(self.announcement.prepend[site]) + extra)
        return [int(asn[r]) for r in rows] + tail

    def to_dict(self, full: bool = False) -> dict[str, Any]:
        w = self.world
        sites = w.network.sites
        demand = self.site_demand()
        share = self.site_share()
        e = w.internet.eyeballs
        rtt = self.eyeball_rtt_ms
        out: dict[str, Any] = {
            "mode": str(self.router.mode),
            "announced": [sites.code[i] for i in np.flatnonzero(self.announcement.announced)],
            "sites": [
                {
                    "site": sites.code[i],
                    "share": float(share[i]),
                    "rps": float(demand[i]),
                    "mean_rtt_ms": _mean(rtt, e.rps, self.eyeball_site == i),
                }
                for i in range(len(sites))
                if demand[i] > 0 or self.announcement.announced[i]
            ],
            "unreached_rps": self.unreached_demand(),
            "mean_rtt_ms": _mean(rtt, e.rps, self.eyeball_site >= 0),
        }
        if full:
            out["ases"] = self.as_rows()
            out["metros"] = self.metro_rows()
            out["eyeballs"] = self.eyeball_rows()
        return out

    def metro_rows(self) -> list[dict[str, Any]]:
        """Per metro with demand: the site taking most of it, and the mean round trip."""
        w = self.world
        m, e = w.internet.metros, w.internet.eyeballs
        top = self.metro_site()
        rtt = self.eyeball_rtt_ms
        reached = self.eyeball_site >= 0
        rows = []
        for i in np.unique(e.metro).tolist():
            mine = (e.metro == i) & reached
            rows.append(
                {
                    "metro": int(m.id[i]),
                    "name": m.name[i],
                    "site": w.network.sites.code[int(top[i])] if top[i] >= 0 else None,
                    "mean_rtt_ms": _mean(rtt, e.rps, mine),
                }
            )
        return rows

    def as_rows(self) -> list[dict[str, Any]]:
        g, st = self.router.graph, self.state
        tail = self.router.seed_tail(self.seeds, self.announcement)
        rank = st.rank
        sites = self.world.network.sites
        return [
            {
                "asn": int(g.asn[a]),
                "site": sites.code[int(st.origin[a])] if st.origin[a] >= 0 else None,
                "relation": RANK_NAMES[Rank(int(rank[a]))],
                "path": as_path(st, g.asn, a, tail),
            }
            for a in range(g.n)
        ]

    def eyeball_rows(self) -> list[dict[str, Any]]:
        w = self.world
        e, m = w.internet.eyeballs, w.internet.metros
        rtt = self.eyeball_rtt_ms
        rank = self.state.rank
        origin = self.eyeball_origin_asn
        return [
            {
                "asn": int(w.internet.asn[e.as_[i]]),
                "metro": int(m.id[e.metro[i]]),
                "metro_name": m.name[e.metro[i]],
                "rps": float(e.rps[i]),
                "site": w.network.sites.code[int(s)] if (s := self.eyeball_site[i]) >= 0 else None,
                "origin_asn": int(origin[i]) or None,
                "relation": RANK_NAMES[Rank(int(rank[e.as_[i]]))],
                "rtt_ms": None if np.isnan(rtt[i]) else round(float(rtt[i]), 3),
                "path": self.eyeball_path(i),
            }
            for i in range(len(e))
        ]


def _mean(x: FloatArray, w: FloatArray, mask: npt.NDArray[np.bool_]) -> float | None:
    if not mask.any() or w[mask].sum() <= 0:
        return None
    return float(np.average(x[mask], weights=w[mask]))


@dataclass
class Router:
    """The routing engine for one world: build once, compute many catchments.

    With ``faults`` (:mod:`.faults`) the graph lacks the links that are down and the
    sites lack the sessions that are lost; :meth:`with_faults` gives the same world
    under other faults from the arrays already built (a mask, not a rebuild).
    """

    world: World
    mode: Mode = Mode.METRO
    faults: Faults = field(default_factory=Faults)
    graph: RoutingGraph = field(init=False)
    edges: Edges = field(init=False)
    geo: Geography = field(init=False)
    _whole: tuple[RoutingGraph, Geography] = field(init=False, repr=False)
    _up: npt.NDArray[np.bool_] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        graph = RoutingGraph.from_internet(self.world.internet)
        self._whole = (graph, Geography.of(self.world, Edges.of(graph)))
        self._apply(self.faults)

    def _apply(self, faults: Faults) -> None:
        graph, geo = self._whole
        self.faults = faults
        if faults.links:
            keep = graph.link_mask(faults.links)
            graph = graph.masked(keep)
            geo = geo.select(np.flatnonzero(np.concatenate(keep)))
        self.graph, self.edges, self.geo = graph, Edges.of(graph), geo
        self._up = faults.session_up(len(self.world.network.sessions)) if faults else None

    def with_faults(self, faults: Faults) -> Router:
        """This router's world and mode under ``faults`` (instead of its own)."""
        other = copy.copy(self)
        other._apply(faults)
        return other

    def seeds(self, ann: Announcement) -> Seeds:
        return Seeds.of_world(self.world, ann, self._up)

    def seed_tail(self, seeds: Seeds, ann: Announcement) -> dict[int, list[int]]:
        asn = self.world.network.origin_asn()
        return {
            i: [int(asn[int(seeds.origin[i])])] * (int(seeds.length[i]) - 1)
            for i in range(len(seeds))
        }

    def catchment(self, ann: Announcement | None = None) -> Catchment:
        """Catchment of an announcement (default: every site announces)."""
        if ann is None:
            ann = Announcement.everywhere(len(self.world.network.sites))
        seeds = self.seeds(ann)
        state = propagate(self.graph, seeds)
        return self._finish(ann, seeds, state, None, None)

    def _exits(self, state: RouteState, seeds: Seeds) -> Exits:
        if self.mode is Mode.AS:
            return chosen_exits(self.graph, self.edges, state)
        return best_exits(self.graph, self.edges, state, seeds)

    def _finish(
        self,
        ann: Announcement,
        seeds: Seeds,
        state: RouteState,
        before: Catchment | None,
        changed_as: npt.NDArray[np.bool_] | None,
    ) -> Catchment:
        exits = self._exits(state, seeds)
        e = self.world.internet.eyeballs
        if before is None or changed_as is None:
            result = walk(
                e.as_.astype(np.int64),
                e.metro.astype(np.int64),
                exits,
                seeds,
                self.geo,
                site_points=True,
            )
        else:
            result = self._rewalk(before.walk, exits, seeds, changed_as)
        return Catchment(self, ann, seeds, state, exits, result)

    def _rewalk(
        self, old: Walk, exits: Exits, seeds: Seeds, changed_as: npt.NDArray[np.bool_]
    ) -> Walk:
        """Walk again only the eyeballs whose path crossed an AS whose exits changed."""
        e = self.world.internet.eyeballs
        path = old.path
        # padding (-1) looks at the last entry: an AS that never changed
        touched = np.append(changed_as, False)[path].any(axis=1)
        touched |= changed_as[e.as_]
        idx = np.flatnonzero(touched)
        if not idx.size:
            return old
        part = walk(
            e.as_[idx].astype(np.int64),
            e.metro[idx].astype(np.int64),
            exits,
            seeds,
            self.geo,
            site_points=True,
        )
        width = max(old.path.shape[1], part.path.shape[1])
        if width == path.shape[1]:
            path2 = path.astype(np.int64, copy=True)
        else:
            path2 = np.full((path.shape[0], width), -1, dtype=np.int64)
            path2[:, : path.shape[1]] = path
        path2[idx] = -1
        path2[idx, : part.path.shape[1]] = part.path
        origin, km, hops = old.origin.copy(), old.km.copy(), old.hops.copy()
        origin[idx], km[idx], hops[idx] = part.origin, part.km, part.hops
        return Walk(origin=origin, km=km, hops=hops, path=path2)

    def _changed(
        self, a: RouteState, b: RouteState, old: Seeds, new: Seeds
    ) -> npt.NDArray[np.bool_]:
        """ASes whose exits may differ: their route changed, a neighbour's route changed,
        or their sessions' seeds changed."""
        diff = (a.key != b.key) | (a.origin != b.origin) | (a.via != b.via)
        near = diff.copy()
        near[self.edges.dst[diff[self.edges.src]]] = True
        near[changed_seed_holders(old, new)] = True
        return np.asarray(near)

    def change(self, c: Catchment, ann: Announcement) -> Catchment:
        """``c`` under another announcement, recomputing only what the change touches."""
        seeds = self.seeds(ann)
        state = update(self.graph, c.state, c.seeds, seeds)
        return self._finish(ann, seeds, state, c, self._changed(c.state, state, c.seeds, seeds))

    def withdraw(self, c: Catchment, site: int) -> Catchment:
        """``c`` after ``site`` stops announcing."""
        return self.change(c, c.announcement.withdraw(site))


def prefix_for(world: World, address: str) -> list[int]:
    """Prefix rows containing ``address``, most specific first (longest-prefix match)."""
    ip = ipaddress.ip_address(address)
    nets = world.network.prefixes.networks
    hits = [i for i, n in enumerate(nets) if n.version == ip.version and ip in n]
    return sorted(hits, key=lambda i: -nets[i].prefixlen)


def longest_match(catchments: list[Catchment]) -> IntArray:
    """Site each eyeball reaches for an address covered by several prefixes.

    ``catchments`` are ordered most specific first; an eyeball whose AS has a route for
    a more specific prefix goes where that route leads, whatever the covering one says.
    """
    site = np.full(catchments[0].eyeball_site.shape, -1, dtype=np.int64)
    decided = np.zeros(site.shape, dtype=np.bool_)
    for c in catchments:
        has = c.state.has_route[c.world.internet.eyeballs.as_]
        take = has & ~decided
        site[take] = c.eyeball_site[take]
        decided |= has
    return site
