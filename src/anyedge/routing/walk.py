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
decides once per distinct (AS, point) and broadcasts the decision.

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

    def select(self, edges: IntArray) -> Geography:
        """The hand-over points of the edges ``edges`` only, in that order (a graph
        with links down keeps a subset of the edges, in the same order)."""
        cnt = self.hand_ptr[edges + 1] - self.hand_ptr[edges]
        ptr = np.zeros(edges.size + 1, dtype=np.int64)
        np.cumsum(cnt, out=ptr[1:])
        _, idx = _expand(self.hand_ptr, edges)
        return Geography(self.lat, self.lon, self.n_metros, ptr, self.hand_pt[idx])


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
    # an edge index is looked up even for seeds (clipped to 0): keep one row to look at
    # when no edge is left (a graph whose every link is down)
    hand_ptr = geo.hand_ptr if geo.hand_ptr.size > 1 else np.zeros(2, dtype=np.int64)
    live = n_exits[cur_as] > 0
    npts = geo.lat.size + 1
    for step in range(MAX_HOPS):
        idx = np.flatnonzero(live)
        if not idx.size:
            break
        path[idx, step] = cur_as[idx]
        hops[idx] += 1
        states, inv = np.unique(cur_as[idx] * npts + (cur_pt[idx] + 1), return_inverse=True)
        s_as, s_pt = states // npts, states % npts - 1
        # every exit of every state, then every hand-over point of every exit
        st, ex = _expand(exits.ptr, s_as)
        is_seed = exits.seed[ex] >= 0
        e = exits.edge[ex]
        cnt = np.where(is_seed, 1, hand_ptr[np.maximum(e, 0) + 1] - hand_ptr[np.maximum(e, 0)])
        cnt = np.where(is_seed, 1, np.maximum(cnt, 1))  # an edge with no places: "here"
        cand = np.repeat(np.arange(ex.size), cnt)
        k = np.arange(cand.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        ce = e[cand]
        has_pts = (ce >= 0) & (hand_ptr[np.maximum(ce, 0) + 1] > hand_ptr[np.maximum(ce, 0)])
        pt = np.full(cand.size, HERE, dtype=np.int64)
        pt[has_pts] = geo.hand_pt[hand_ptr[ce[has_pts]] + k[has_pts]]
        seed_c = is_seed[cand]
        if site_points:
            pt[seed_c] = geo.n_metros + seeds.origin[exits.seed[ex[cand[seed_c]]]]
        here = s_pt[st[cand]]
        known = (pt >= 0) & (here >= 0)
        dist = np.zeros(cand.size)
        if known.any():
            a, b = here[known], pt[known]
            dist[known] = geo.km(a, b)
        # the nearest hand-over of each state, then the usual tie-break
        owner = st[cand]
        o = np.lexsort((exits.order[ex[cand]], dist, owner))
        first = np.ones(o.size, dtype=np.bool_)
        first[1:] = owner[o][1:] != owner[o][:-1]
        pick = o[first]  # one candidate per state, in state order
        p_ex = ex[cand[pick]]
        p_pt = np.where(pt[pick] == HERE, s_pt, pt[pick])
        p_dist = dist[pick]
        # broadcast the decisions to the walkers
        d_ex, d_pt, d_dist = p_ex[inv], p_pt[inv], p_dist[inv]
        km[idx] += d_dist
        cur_pt[idx] = d_pt
        arrived = exits.seed[d_ex] >= 0
        done = idx[arrived]
        origin[done] = seeds.origin[exits.seed[d_ex[arrived]]]
        moving = idx[~arrived]
        cur_as[moving] = exits.next_as[d_ex[~arrived]]
        live[done] = False
    km[origin < 0] = np.nan
    return Walk(origin=origin, km=km, hops=hops, path=path[:, : max(1, int(hops.max(initial=0)))])
