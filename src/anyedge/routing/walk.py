"""Follow traffic from users to a site, hand-over by hand-over (hot-potato routing).

A packet from a user in metro *m* of AS *a* leaves *a* by one of its exits
(:mod:`.exits`).  Each exit hands the packet over at some place: a neighbour network is
met in the metros both are present in (or, failing that, wherever the neighbour is);
a BGP session with one of anyedge's sites hands over at the site.  Hot-potato routing
means *a* picks the exit whose hand-over point is nearest to where the packet is, and
gets rid of it there.  The packet then stands at that point inside the next AS, which
does the same, until it reaches a site.

Distance accumulates along the way, so the latency model prices the real detour: a
user in Auckland whose ISP only meets its transit provider in Los Angeles pays for the
Pacific twice.  Walkers in the same AS at the same point decide alike, so each step
decides once per distinct (AS, point) and broadcasts the decision; and the nearest
hand-over of an exit from a point is the same in every walk of a router, so each
geography remembers those it has computed (:class:`NearestHandOver`).

Points are the metros of the world followed by its sites; an AS with no known places
(a bare CAIDA graph) hands over "here", at no distance.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from ..model.geo import EARTH_RADIUS_KM
from ..model.world import World
from .announce import Seeds
from .exits import Edges, Exits

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
HERE = -1
MAX_HOPS = 64


@dataclass(frozen=True)
class Geography:
    """Places: metro points then site points, and each edge's hand-over points."""

    lat: FloatArray
    lon: FloatArray
    n_metros: int
    hand_ptr: IntArray  # edge e hands over at hand_pt[hand_ptr[e]:hand_ptr[e+1]]
    hand_pt: IntArray

    @classmethod
    def of(cls, world: World, edges: Edges) -> Geography:
        inet, sites = world.internet, world.network.sites
        m = len(inet.metros)
        at: dict[int, set[int]] = {}
        for a, mm in inet.presence.tolist():
            at.setdefault(a, set()).add(mm)
        ptr = [0]
        pts: list[int] = []
        common: dict[tuple[int, int], list[int]] = {}
        for u, a in zip(edges.src.tolist(), edges.dst.tolist(), strict=True):
            # traffic goes from a to u: they meet where both are, else wherever u is
            key = (min(u, a), max(u, a))
            if key not in common:
                common[key] = sorted(at.get(u, set()) & at.get(a, set()))
            pts.extend(common[key] or sorted(at.get(u, ())) or sorted(at.get(a, ())))
            ptr.append(len(pts))
        return cls(
            lat=np.concatenate([inet.metros.lat, sites.lat]),
            lon=np.concatenate([inet.metros.lon, sites.lon]),
            n_metros=m,
            hand_ptr=np.array(ptr, dtype=np.int64),
            hand_pt=np.array(pts, dtype=np.int64),
        )

    @cached_property
    def _lat_trig(self) -> tuple[FloatArray, FloatArray]:
        """Each point's latitude in radians and its cosine, once per geography."""
        rlat = np.radians(self.lat.astype(np.float64))
        return rlat, np.cos(rlat)

    def km(self, a: IntArray, b: IntArray) -> FloatArray:
        """Great-circle km between points ``a`` and ``b`` (pairwise): the haversine of
        :func:`anyedge.model.geo.great_circle_km`, step for step, with the latitudes'
        radians and cosines taken from the points rather than computed per pair (a
        walk asks for millions of pairs over a few thousand points)."""
        rlat, cos = self._lat_trig
        dp = rlat[b] - rlat[a]
        dl = np.radians(self.lon[b].astype(np.float64) - self.lon[a].astype(np.float64))
        h = np.sin(dp / 2) ** 2 + cos[a] * cos[b] * np.sin(dl / 2) ** 2
        return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))

    @cached_property
    def nearest(self) -> NearestHandOver:
        """This geography's memory of nearest hand-over points (one per geography)."""
        return NearestHandOver(self)

    def select(self, edges: IntArray) -> Geography:
        """The hand-over points of the edges ``edges`` only, in that order (a graph
        with links down keeps a subset of the edges, in the same order)."""
        cnt = self.hand_ptr[edges + 1] - self.hand_ptr[edges]
        ptr = np.zeros(edges.size + 1, dtype=np.int64)
        np.cumsum(cnt, out=ptr[1:])
        _, idx = _expand(self.hand_ptr, edges)
        return Geography(self.lat, self.lon, self.n_metros, ptr, self.hand_pt[idx])


class NearestHandOver:
    """The nearest hand-over point of a *target* from a point, remembered.

    A target is an edge with places (its hand-over points) or a site (its point): the
    edges' rows, then ``n_edges + site row``.  From point *p* the nearest hand-over of
    target *t* is its lowest km, and the first of its points at that km: what a walk's
    tie-break picks within one exit.  Computed by :meth:`Geography.km` on the first ask
    and kept in sorted arrays, so the many walks of one router (every scenario of an
    atlas re-walks mostly the same eyeballs over mostly the same edges) compute each
    (point, target) distance once.
    """

    MAX_KEPT = 4_000_000  # pairs remembered at most (about 100 MB)

    def __init__(self, geo: Geography) -> None:
        self.geo = geo
        self.n_edges = geo.hand_ptr.size - 1
        n_sites = geo.lat.size - geo.n_metros
        self.n_targets = self.n_edges + n_sites
        # target t hands over at pts[ptr[t]:ptr[t+1]]
        end = geo.hand_ptr[-1] if geo.hand_ptr.size else 0
        self.ptr = np.concatenate([geo.hand_ptr[:-1], end + np.arange(n_sites + 1)])
        # (and a last "here", never in a target, so a lookup never falls off the end)
        self.pts = np.concatenate([geo.hand_pt, geo.n_metros + np.arange(n_sites), [HERE]])
        self.keys = np.zeros(0, dtype=np.int64)  # point * n_targets + target, sorted
        self.km = np.zeros(0)
        self.k = np.zeros(0, dtype=np.int64)  # which of the target's points

    def get(self, point: IntArray, target: IntArray) -> tuple[FloatArray, IntArray]:
        """(km, index among the target's points) of the nearest hand-over, pairwise."""
        keys = point * self.n_targets + target
        pos = np.searchsorted(self.keys, keys)
        hit = pos < self.keys.size
        hit[hit] = self.keys[pos[hit]] == keys[hit]
        if not hit.all():
            new = np.unique(keys[~hit])
            km, k = self._compute(new // self.n_targets, new % self.n_targets)
            if self.keys.size + new.size > self.MAX_KEPT:  # full: remember no more
                at = np.searchsorted(new, keys[~hit])
                out_km, out_k = np.empty(keys.size), np.empty(keys.size, dtype=np.int64)
                out_km[hit], out_k[hit] = self.km[pos[hit]], self.k[pos[hit]]
                out_km[~hit], out_k[~hit] = km[at], k[at]
                return out_km, out_k
            at = np.searchsorted(self.keys, new)
            self.keys = np.insert(self.keys, at, new)
            self.km = np.insert(self.km, at, km)
            self.k = np.insert(self.k, at, k)
            pos = np.searchsorted(self.keys, keys)
        return self.km[pos], self.k[pos]

    def _compute(self, point: IntArray, target: IntArray) -> tuple[FloatArray, IntArray]:
        owner, idx = _expand(self.ptr, target)
        dist = self.geo.km(point[owner], self.pts[idx])
        cnt = self.ptr[target + 1] - self.ptr[target]
        seg = np.cumsum(cnt) - cnt
        low = np.minimum.reduceat(dist, seg)
        k = idx - self.ptr[target][owner]
        first = np.minimum.reduceat(np.where(dist == low[owner], k, np.iinfo(np.int64).max), seg)
        return low, first


@dataclass(frozen=True)
class Walk:
    """Where each walker ended up."""

    origin: IntArray  # origin reached (site row), -1 if none
    km: FloatArray  # distance covered, NaN if no origin reached
    hops: IntArray  # ASes crossed, the first included
    path: IntArray  # (walkers, hops) AS rows, -1 padded


def _expand(ptr: IntArray, rows: IntArray) -> tuple[IntArray, IntArray]:
    """For each i, the indices ptr[rows[i]]:ptr[rows[i]+1]; returns (owner i, index)."""
    start, cnt = ptr[rows], ptr[rows + 1] - ptr[rows]
    owner = np.repeat(np.arange(rows.size), cnt)
    first = np.repeat(np.cumsum(cnt) - cnt, cnt)
    return owner, np.repeat(start, cnt) + np.arange(owner.size) - first


def walk(
    start_as: IntArray,
    start_pt: IntArray,
    exits: Exits,
    seeds: Seeds,
    geo: Geography,
    site_points: bool,
) -> Walk:
    """Walk every (AS, point) start to an origin; see the module doc.

    With ``site_points`` a seed hands over at its site's point (seed origin = site row);
    otherwise at no distance (an origin AS).
    """
    w = start_as.size
    cur_as = start_as.astype(np.int64).copy()
    cur_pt = start_pt.astype(np.int64).copy()
    origin = np.full(w, -1, dtype=np.int64)
    km = np.zeros(w)
    hops = np.zeros(w, dtype=np.int64)
    path = np.full((w, MAX_HOPS), -1, dtype=np.int64)
    n_exits = exits.count()
    pick = _Picker(exits, seeds, geo, site_points)
    live = n_exits[cur_as] > 0
    for step in range(MAX_HOPS):
        idx = np.flatnonzero(live)
        if not idx.size:
            break
        path[idx, step] = cur_as[idx]
        hops[idx] += 1
        s_as, s_pt, inv = pick.states(cur_as[idx], cur_pt[idx])
        p_ex, p_pt, p_dist = pick.nearest(s_as, s_pt)
        # broadcast the decisions to the walkers
        d_ex = p_ex[inv]
        km[idx] += p_dist[inv]
        cur_pt[idx] = p_pt[inv]
        arrived = exits.seed[d_ex] >= 0
        done = idx[arrived]
        origin[done] = seeds.origin[exits.seed[d_ex[arrived]]]
        moving = idx[~arrived]
        cur_as[moving] = exits.next_as[d_ex[~arrived]]
        live[done] = False
    km[origin < 0] = np.nan
    return Walk(origin=origin, km=km, hops=hops, path=path[:, : max(1, int(hops.max(initial=0)))])


class _Picker:
    """The hot-potato decision of one walk: for each (AS, point) state, the exit and
    hand-over point nearest to the point, ties broken by the exits' order, then by the
    first listed.

    Set up once per walk: each exit's target (:class:`NearestHandOver`: its edge when
    it has places, its site for a seed when seeds hand over at sites, else none: "here",
    at no distance).  A step lists every (state, exit), asks the geography's memory for
    the nearest hand-over of each, and takes per state the first exit of lowest
    (km, order): the exits of a state come out together, so that is a per-group
    minimum, not a sort.
    """

    def __init__(self, exits: Exits, seeds: Seeds, geo: Geography, site_points: bool) -> None:
        self.exits, self.near = exits, geo.nearest
        self.npts = geo.lat.size + 1
        # an edge index is looked up even for seeds (clipped to 0): keep one row to look
        # at when no edge is left (a graph whose every link is down)
        hand_ptr = geo.hand_ptr if geo.hand_ptr.size > 1 else np.zeros(2, dtype=np.int64)
        e, sd = exits.edge, exits.seed
        e0 = np.maximum(e, 0)
        has_pts = (e >= 0) & (hand_ptr[e0 + 1] > hand_ptr[e0]) & (sd < 0)
        self.target = np.where(has_pts, e, -1)
        if site_points:
            site = seeds.origin[np.maximum(sd, 0)] if seeds.origin.size else np.zeros_like(sd)
            self.target = np.where(sd >= 0, self.near.n_edges + site, self.target)
        # exits come in their order within each AS (as tables are built): the first
        # nearest is then also the lowest order among the nearest
        owner = np.repeat(np.arange(exits.ptr.size - 1), np.diff(exits.ptr))
        o = exits.order
        self.ordered = bool(np.all((o[1:] >= o[:-1]) | (owner[1:] != owner[:-1])))

    def states(self, as_: IntArray, pt: IntArray) -> tuple[IntArray, IntArray, IntArray]:
        """The distinct (AS, point) states in (AS, point) order, and each walker's."""
        states, inv = np.unique(as_ * self.npts + (pt + 1), return_inverse=True)
        return states // self.npts, states % self.npts - 1, inv.reshape(-1)

    def nearest(self, s_as: IntArray, s_pt: IntArray) -> tuple[IntArray, IntArray, FloatArray]:
        """Per state: the exit taken, the point it stands at next, the km to there."""
        x = self.exits
        st, ex = _expand(x.ptr, s_as)  # every exit of every state, in state order
        here, tgt = s_pt[st], self.target[ex]
        dist, k = np.zeros(ex.size), np.zeros(ex.size, dtype=np.int64)
        known = (tgt >= 0) & (here >= 0)
        if known.any():
            dist[known], k[known] = self.near.get(here[known], tgt[known])
        n = x.ptr[s_as + 1] - x.ptr[s_as]
        seg = np.cumsum(n) - n
        best = dist == np.minimum.reduceat(dist, seg)[st]
        if not self.ordered:
            order = x.order[ex]
            low = np.minimum.reduceat(np.where(best, order, np.iinfo(np.int64).max), seg)
            best &= order == low[st]
        pick = np.minimum.reduceat(np.where(best, np.arange(ex.size), ex.size), seg)
        t = tgt[pick]
        at = self.near.ptr[np.maximum(t, 0)] + k[pick]
        p_pt = np.where(t >= 0, self.near.pts[np.minimum(at, self.near.pts.size - 1)], s_pt)
        return ex[pick], p_pt, dist[pick]
