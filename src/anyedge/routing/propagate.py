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

A change to the seeds (a site withdrawing, prepending, announcing again) is applied by
:func:`update`, which recomputes a region that starts at the changed seeds and grows
only as far as routes actually change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .announce import Block, Rank, Seeds
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
    # where the AS may not send its route (Block bits of its seed's communities; 0 for a
    # route learned from a neighbour: communities act on the AS they are addressed to)
    block: IntArray

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
        return RouteState(
            self.key.copy(),
            self.via.copy(),
            self.seed.copy(),
            self.origin.copy(),
            self.block.copy(),
        )

    @classmethod
    def empty(cls, n: int) -> RouteState:
        return cls(
            np.full(n, NO_ROUTE, dtype=np.int64),
            np.full(n, -1, dtype=np.int64),
            np.full(n, -1, dtype=np.int64),
            np.full(n, -1, dtype=np.int64),
            np.zeros(n, dtype=np.int64),
        )


def _seed(state: RouteState, seeds: Seeds, only: BoolArray | None = None) -> None:
    """Install each AS's best seed where it beats what the AS has (only in ``only``).

    Among an AS's seeds equal by rank, length and neighbour ASN the lowest MED wins,
    then the site; the MED goes no further (it is not part of the key)."""
    if not len(seeds):
        return
    k = encode(seeds.rank, seeds.length, seeds.nbr_asn, seeds.tie)
    rows = np.arange(len(seeds)) if only is None else np.flatnonzero(only[seeds.at])
    if not rows.size:
        return
    k0 = k[rows] - seeds.tie[rows]
    order = rows[np.lexsort((seeds.tie[rows], seeds.med[rows], k0, seeds.at[rows]))]
    first = np.ones(order.size, dtype=np.bool_)
    first[1:] = seeds.at[order[1:]] != seeds.at[order[:-1]]
    win = order[first]
    d = seeds.at[win]
    better = k[win] < state.key[d]
    win, d = win[better], d[better]
    state.key[d] = k[win]
    state.via[d] = -1
    state.seed[d] = win
    state.origin[d] = seeds.origin[win]
    state.block[d] = seeds.block[win]


def _install(
    state: RouteState,
    dst: IntArray,
    cand: IntArray,
    via: IntArray,
    seed: IntArray,
    origin: IntArray,
    clear_block: bool = True,
) -> None:
    """Per destination, keep the smallest candidate if it beats the current key (a
    learned route carries no communities' block: ``clear_block`` where any AS has one)."""
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
    if clear_block:
        state.block[d] = 0


def _relax(
    state: RouteState,
    asn: IntArray,
    phase: Phase,
    sl: slice,
    exportable: Rank,
    learned_as: Rank,
    block: Block,
) -> None:
    """Offer every sender's route over the edges ``sl`` of ``phase`` (not where the
    sender's seed carries the community that ``block`` stands for; Block.NONE when no
    AS has a block, which spares the look-up)."""
    src, dst = phase.src[sl], phase.dst[sl]
    skey = state.key[src]
    ok = (skey >> RANK_SHIFT) <= exportable
    if block:
        ok &= (state.block[src] & block) == 0
    src, dst, skey = src[ok], dst[ok], skey[ok]
    cand = encode(learned_as, ((skey >> LEN_SHIFT) & 0xFF) + 1, asn[src], 0)
    _install(state, dst, cand, src, np.full(src.size, -1), state.origin[src], bool(block))


def _run(g: RoutingGraph, state: RouteState, only: BoolArray | None = None) -> None:
    """The three phases; with ``only``, just the edges into those ASes."""
    blocks = bool(state.block.any())  # only seeds set it, so it holds for the whole run
    for phase, exportable, learned, block in phases(g):
        part = phase if only is None else phase.into(only)
        for sl in part.groups():
            _relax(state, g.asn, part, sl, exportable, learned, block if blocks else Block.NONE)


def phases(g: RoutingGraph) -> list[tuple[Phase, Rank, Rank, Block]]:
    """Each phase with the worst rank it exports, the rank it gives, the Block bit."""
    return [
        (g.up, Rank.CUSTOMER, Rank.CUSTOMER, Block.PROVIDERS),
        (g.across, Rank.CUSTOMER, Rank.PEER, Block.PEERS),
        (g.down, Rank.PROVIDER, Rank.PROVIDER, Block.CUSTOMERS),
    ]


def propagate(g: RoutingGraph, seeds: Seeds) -> RouteState:
    """Every AS's best route when ``seeds`` are announced."""
    state = RouteState.empty(g.n)
    _seed(state, seeds)
    _run(g, state)
    return state


def update(g: RoutingGraph, state: RouteState, old: Seeds, new: Seeds) -> RouteState:
    """The state after the seeds change from ``old`` to ``new``, recomputing what changes.

    Preference is not monotone along a path — an AS may trade a long customer route for
    a short provider route, which is worse for it but better for its customers — so a
    change can spread both ways.  The region R to recompute starts at the ASes whose
    seeds changed; each round resets R and recomputes it in phase order against the rest,
    then adds every AS outside R that routed through an AS whose route changed, or that
    is now offered something better by one.  When a round adds nothing, every AS outside
    R still holds the best route on offer, and R was decided in phase order: the state is
    the same one a fresh :func:`propagate` finds.
    """
    cur = state.copy()
    region = np.zeros(g.n, dtype=np.bool_)
    add = np.zeros(g.n, dtype=np.bool_)
    add[changed_seed_holders(old, new)] = True
    while add.any():
        region |= add
        cur.key[region] = NO_ROUTE
        cur.via[region] = -1
        cur.seed[region] = -1
        cur.origin[region] = -1
        cur.block[region] = 0
        _seed(cur, new, only=region)
        _run(g, cur, only=region)
        changed = region & (
            (cur.key != state.key)
            | (cur.origin != state.origin)
            | (cur.via != state.via)
            | (cur.block != state.block)
        )
        add = _dependents(cur, changed, region) | _offered_better(g, cur, changed, region)
    _reindex_seeds(cur, new)
    return cur


def withdraw(g: RoutingGraph, state: RouteState, seeds: Seeds, origin: int) -> RouteState:
    """The state after ``origin`` withdraws; ``seeds`` are the seeds before it did."""
    return update(g, state, seeds, seeds.without(origin))


def changed_seed_holders(old: Seeds, new: Seeds) -> IntArray:
    """ASes holding a seed that is in one list and not the other (sorted, unique).

    Each list holds a seed once, so a seed in both appears twice in the two together
    and a changed one once: the rows (AS, key, origin, MED, communities) of both lists,
    sorted, find them as the rows equal to neither neighbour.  (A lexicographic sort of
    the columns: ``np.unique(axis=0)`` sorts the rows as opaque records, several times
    slower, and this runs twice per change of a catchment, 1,500 times in an atlas.)
    """

    def rows(s: Seeds) -> IntArray:
        key = encode(s.rank, s.length, s.nbr_asn, s.tie)
        return np.stack([s.at, key, s.origin, s.med, s.block], axis=1).astype(np.int64)

    both = np.concatenate([rows(old), rows(new)])
    if not both.size:
        return np.zeros(0, dtype=np.int64)
    both = both[np.lexsort(both.T[::-1])]  # by AS, then key, origin, MED, communities
    same = (both[1:] == both[:-1]).all(axis=1)  # a row equal to the one before it
    twice = np.zeros(len(both), dtype=np.bool_)
    twice[1:] = same
    twice[:-1] |= same
    return np.unique(both[~twice, 0]).astype(np.int64)


def _dependents(state: RouteState, changed: BoolArray, region: BoolArray) -> BoolArray:
    """ASes outside ``region`` whose route runs through a changed AS."""
    through = changed.copy()
    has_via = state.via >= 0
    via = np.maximum(state.via, 0)
    while True:
        more = has_via & ~through & ~region & through[via]
        if not more.any():
            return np.asarray(through & ~region)
        through |= more


def _offered_better(
    g: RoutingGraph, state: RouteState, changed: BoolArray, region: BoolArray
) -> BoolArray:
    """ASes outside ``region`` to which a changed AS now offers a better route."""
    out = np.zeros(g.n, dtype=np.bool_)
    for phase, exportable, learned, block in phases(g):
        src, dst = phase.src, phase.dst
        pick = changed[src] & ~region[dst]
        src, dst = src[pick], dst[pick]
        skey = state.key[src]
        ok = ((skey >> RANK_SHIFT) <= exportable) & ((state.block[src] & block) == 0)
        src, dst, skey = src[ok], dst[ok], skey[ok]
        cand = encode(learned, ((skey >> LEN_SHIFT) & 0xFF) + 1, g.asn[src], 0)
        out[dst[cand < state.key[dst]]] = True
    return out


def _reindex_seeds(state: RouteState, seeds: Seeds) -> None:
    """Point every seeded route at its row in ``seeds`` (rows shift when seeds change)."""
    has = np.flatnonzero(state.seed >= 0)
    if not has.size:
        return
    key = encode(seeds.rank, seeds.length, seeds.nbr_asn, seeds.tie)
    n = len(seeds)
    # the seeds by (AS, key), the last row of equal ones kept, then each route's (AS,
    # key) found among them by one sort of both lists together: a route sorts right
    # after its seed (in arrays; a dictionary of rows cost 4 % of an atlas)
    order = np.lexsort((np.arange(n), key, seeds.at))
    at_s, key_s = seeds.at[order], key[order]
    last = np.ones(n, dtype=np.bool_)
    last[:-1] = (at_s[1:] != at_s[:-1]) | (key_s[1:] != key_s[:-1])
    at_s, key_s, row = at_s[last], key_s[last], order[last]
    m = at_s.size
    both_at = np.concatenate([at_s, has])
    both_key = np.concatenate([key_s, state.key[has]])
    is_route = np.arange(m + has.size) >= m
    o = np.lexsort((is_route, both_key, both_at))
    seed_before = np.maximum.accumulate(np.where(is_route[o], -1, o))
    routes = is_route[o]
    which, found = o[routes] - m, seed_before[routes]
    ok = found >= 0
    ok[ok] = (both_at[found[ok]] == has[which[ok]]) & (
        both_key[found[ok]] == both_key[m + which[ok]]
    )
    if not ok.all():
        raise KeyError("a seeded route without its seed")
    state.seed[has[which]] = row[found]


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
