"""Gao-Rexford route propagation for one prefix, vectorised over the whole AS graph.

Every AS keeps one best route, packed into one int64 *key* so that "better" is "smaller":

    rank (3 bits) | AS-path length (8 bits) | neighbour ASN (32 bits) | tie (16 bits)

Rank orders routes by where they were learned — origin, then customer, then peer, then
provider (:class:`~.announce.Rank`) — so a customer route beats a peer route however
long it is; then the shorter AS path wins; then the lowest neighbour ASN (BGPy's final
tie-break); then, for parallel sessions with anyedge, the lower site row.

Routes move in three phases (:mod:`.graph`), each in an order that makes every sender's
route final before it is sent, so one pass suffices:

1. **up**: origin and customer routes climb to providers, lowest providers first;
2. **across**: origin and customer routes cross peer links;
3. **down**: any route descends to customers, highest customers first.

That is valley-free export: routes from customers go to everyone, routes from peers and
providers only to customers.  A route never comes back to an AS already on its path,
since each phase moves strictly up, across once, or strictly down the hierarchy.

Incremental changes (:func:`withdraw`, :func:`improve`) re-run the phases on the part of
the graph that changes.  Withdrawing an origin only touches the ASes whose best route
came from it; a better route from an origin only touches the ASes it now wins, spreading
outward from the seeds.  A prepend change is a withdrawal followed by an improvement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .announce import Rank, Seeds
from .graph import Phase, RoutingGraph

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

RANK_SHIFT, LEN_SHIFT, ASN_SHIFT = 56, 48, 16
NO_ROUTE = np.int64(Rank.NONE) << RANK_SHIFT
MAX_LEN = 255


def encode(
    rank: npt.ArrayLike, length: npt.ArrayLike, nbr_asn: npt.ArrayLike, tie: npt.ArrayLike
) -> IntArray:
    r = np.asarray(rank, dtype=np.int64)
    n = np.minimum(np.asarray(length, dtype=np.int64), MAX_LEN)
    return np.asarray(
        (r << RANK_SHIFT)
        | (n << LEN_SHIFT)
        | (np.asarray(nbr_asn, dtype=np.int64) << ASN_SHIFT)
        | np.asarray(tie, dtype=np.int64)
    )


@dataclass
class RouteState:
    """Each AS's best route for one prefix (arrays over AS rows)."""

    key: IntArray
    via: IntArray  # AS row the route was learned from; -1 for a seed or no route
    seed: IntArray  # seed row if the route is a seed; else -1
    origin: IntArray  # origin id (site row or origin index); -1 for no route

    @property
    def rank(self) -> IntArray:
        return np.asarray(self.key >> RANK_SHIFT)

    @property
    def length(self) -> IntArray:
        """AS-path length, the AS itself included; 0 where there is no route."""
        n = (self.key >> LEN_SHIFT) & 0xFF
        return np.asarray(np.where(self.rank == Rank.NONE, 0, n))

    @property
    def has_route(self) -> BoolArray:
        return np.asarray(self.key < NO_ROUTE)

    def copy(self) -> RouteState:
        return RouteState(self.key.copy(), self.via.copy(), self.seed.copy(), self.origin.copy())

    @classmethod
    def empty(cls, n: int) -> RouteState:
        return cls(
            np.full(n, NO_ROUTE, dtype=np.int64),
            np.full(n, -1, dtype=np.int64),
            np.full(n, -1, dtype=np.int64),
            np.full(n, -1, dtype=np.int64),
        )


def _seed(
    state: RouteState, seeds: Seeds, dirty: BoolArray | None = None, only: BoolArray | None = None
) -> None:
    """Install each AS's best seed where it beats what the AS has."""
    if not len(seeds):
        return
    k = encode(seeds.rank, seeds.length, seeds.nbr_asn, seeds.tie)
    at = seeds.at
    keep = np.ones(at.size, dtype=np.bool_) if only is None else only[at]
    rows = np.flatnonzero(keep)
    _install(
        state,
        at[rows],
        k[rows],
        via=np.full(rows.size, -1),
        seed=rows,
        origin=seeds.origin[rows],
        dirty=dirty,
    )


def _install(
    state: RouteState,
    dst: IntArray,
    cand: IntArray,
    via: IntArray,
    seed: IntArray,
    origin: IntArray,
    dirty: BoolArray | None,
) -> None:
    """Per destination, keep the smallest candidate if it beats the current key."""
    if not dst.size:
        return
    order = np.lexsort((cand, dst))
    d = dst[order]
    first = np.ones(d.size, dtype=np.bool_)
    first[1:] = d[1:] != d[:-1]
    win = order[first]
    d = dst[win]
    better = cand[win] < state.key[d]
    win, d = win[better], d[better]
    state.key[d] = cand[win]
    state.via[d] = via[win]
    state.seed[d] = seed[win]
    state.origin[d] = origin[win]
    if dirty is not None:
        dirty[d] = True


def _relax(
    state: RouteState,
    asn: IntArray,
    phase: Phase,
    sl: slice,
    exportable: Rank,
    learned_as: Rank,
    only: BoolArray | None,
    dirty: BoolArray | None,
    from_dirty: bool,
) -> None:
    src, dst = phase.src[sl], phase.dst[sl]
    skey = state.key[src]
    ok = (skey >> RANK_SHIFT) <= exportable
    if only is not None:
        ok &= only[dst]
    if from_dirty and dirty is not None:
        ok &= dirty[src]
    src, dst, skey = src[ok], dst[ok], skey[ok]
    length = ((skey >> LEN_SHIFT) & 0xFF) + 1
    cand = encode(learned_as, length, asn[src], 0)
    _install(
        state, dst, cand, via=src, seed=np.full(src.size, -1), origin=state.origin[src], dirty=dirty
    )


def _run(
    g: RoutingGraph,
    state: RouteState,
    only: BoolArray | None = None,
    dirty: BoolArray | None = None,
    from_dirty: bool = False,
) -> None:
    for sl in g.up.groups():
        _relax(state, g.asn, g.up, sl, Rank.CUSTOMER, Rank.CUSTOMER, only, dirty, from_dirty)
    for sl in g.across.groups():
        _relax(state, g.asn, g.across, sl, Rank.CUSTOMER, Rank.PEER, only, dirty, from_dirty)
    for sl in g.down.groups():
        _relax(state, g.asn, g.down, sl, Rank.PROVIDER, Rank.PROVIDER, only, dirty, from_dirty)


def propagate(g: RoutingGraph, seeds: Seeds) -> RouteState:
    """Every AS's best route when ``seeds`` are announced."""
    state = RouteState.empty(g.n)
    _seed(state, seeds)
    _run(g, state)
    return state


def withdraw(g: RoutingGraph, state: RouteState, seeds: Seeds, origin: int) -> RouteState:
    """The state after ``origin`` withdraws; ``seeds`` are the seeds before withdrawing.

    Only ASes whose best route came from ``origin`` are recomputed, from all their
    neighbours, in phase order.
    """
    hit = state.origin == origin
    new = state.copy()
    new.key[hit] = NO_ROUTE
    new.via[hit] = -1
    new.seed[hit] = -1
    new.origin[hit] = -1
    if not hit.any():
        return new
    _seed(new, seeds.without(origin), only=hit)
    _run(g, new, only=hit)
    return new


def improve(g: RoutingGraph, state: RouteState, extra: Seeds) -> RouteState:
    """The state after ``extra`` seeds are added (a new or a better announcement).

    A route only spreads where it wins, so propagation starts at the seeds that beat
    the current routes and follows only ASes whose route changed.
    """
    new = state.copy()
    dirty = np.zeros(g.n, dtype=np.bool_)
    _seed(new, extra, dirty=dirty)
    if dirty.any():
        _run(g, new, dirty=dirty, from_dirty=True)
    return new


def as_path(state: RouteState, asn: IntArray, row: int, tail: dict[int, list[int]]) -> list[int]:
    """AS path of ``row``'s best route as ASNs; empty if it has none.

    ``tail`` maps a seed row to the ASNs the seed adds after the AS that holds it (for a
    site: anyedge's ASN, once plus once per prepend); an origin AS adds nothing.
    """
    if state.key[row] >= NO_ROUTE:
        return []
    path: list[int] = []
    r = row
    while state.seed[r] < 0:
        path.append(int(asn[r]))
        r = int(state.via[r])
    path.append(int(asn[r]))
    return path + tail.get(int(state.seed[r]), [])
