"""Which way traffic leaves each AS: one exit per AS, or every equally good exit.

After propagation each AS has one best route.  Traffic from a user in that AS follows
it hop by hop to a site; but where it *enters* each next network, and so which of several
equally good routes it takes, depends on where the user is.  This module lists, per AS,
the *exits* a packet may take:

* in **AS-level** mode, one exit: the route the AS chose (its lowest-ASN tie-break);
* in **metro-level** mode, every exit whose route is as good as the best by rank and
  path length — hot-potato routing then picks, for each metro of the AS, the exit nearest
  to that metro (:mod:`.walk`).

An exit is either a neighbour AS (an edge the best route could have come over) or a
seed (a BGP session with one of anyedge's sites, or an origin AS's own route).
Exits are returned as a CSR table over AS rows, ordered by the usual tie-break.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .announce import Seeds
from .graph import RoutingGraph
from .propagate import LEN_SHIFT, RANK_SHIFT, RouteState, encode, phases

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Edges:
    """All directed edges of the graph with the rank a route takes crossing them."""

    src: IntArray
    dst: IntArray
    exportable: IntArray  # the worst rank the sender may send over this edge
    learned: IntArray  # the rank the receiver gives the route
    block: IntArray  # the Block bit that keeps a seed's route off this edge

    @classmethod
    def of(cls, g: RoutingGraph) -> Edges:
        parts = phases(g)
        return cls(
            src=np.concatenate([p.src for p, _, _, _ in parts]),
            dst=np.concatenate([p.dst for p, _, _, _ in parts]),
            exportable=np.concatenate([np.full(p.src.size, e) for p, e, _, _ in parts]),
            learned=np.concatenate([np.full(p.src.size, r) for p, _, r, _ in parts]),
            block=np.concatenate([np.full(p.src.size, int(b)) for p, _, _, b in parts]),
        )


@dataclass(frozen=True)
class Exits:
    """Per AS row, its exits: rows ptr[a]:ptr[a+1] of the arrays below."""

    ptr: IntArray
    edge: IntArray  # index into Edges, or -1 for a seed
    seed: IntArray  # seed row, or -1 for an edge
    next_as: IntArray  # the neighbour AS row (for an edge), -1 for a seed
    order: IntArray  # tie-break key among equal exits (lower first)

    def count(self) -> IntArray:
        return np.asarray(np.diff(self.ptr))


def _csr(
    n: int, owner: IntArray, edge: IntArray, seed: IntArray, nxt: IntArray, order: IntArray
) -> Exits:
    o = np.lexsort((order, owner))
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=n), out=ptr[1:])
    return Exits(ptr=ptr, edge=edge[o], seed=seed[o], next_as=nxt[o], order=order[o])


def best_exits(g: RoutingGraph, edges: Edges, state: RouteState, seeds: Seeds) -> Exits:
    """Every exit as good as each AS's best route by rank and AS-path length."""
    want = state.key >> LEN_SHIFT  # rank and length of each AS's best
    skey = state.key[edges.src]
    ok = (skey >> RANK_SHIFT) <= edges.exportable
    ok &= (state.block[edges.src] & edges.block) == 0
    got = (edges.learned << (RANK_SHIFT - LEN_SHIFT)) | (((skey >> LEN_SHIFT) & 0xFF) + 1)
    ok &= got == want[edges.dst]
    ok &= state.has_route[edges.dst]
    e = np.flatnonzero(ok)
    skey_all = encode(seeds.rank, seeds.length, seeds.nbr_asn, seeds.tie)
    s = np.flatnonzero((skey_all >> LEN_SHIFT) == want[seeds.at])
    s = _lowest_med(seeds, s)
    owner = np.concatenate([edges.dst[e], seeds.at[s]])
    order = np.concatenate([g.asn[edges.src[e]] << 16, (seeds.nbr_asn[s] << 16) | seeds.tie[s]])
    return _csr(
        g.n,
        owner,
        np.concatenate([e, np.full(s.size, -1)]),
        np.concatenate([np.full(e.size, -1), s]),
        np.concatenate([edges.src[e], np.full(s.size, -1)]),
        order,
    )


def _lowest_med(seeds: Seeds, s: IntArray) -> IntArray:
    """Of the seeds ``s``, those with the lowest MED among the seeds at the same AS from
    the same neighbour ASN (BGP compares MEDs before hot potato, and only there)."""
    if not s.size:
        return s
    # one integer per (AS, neighbour ASN): a 1-D unique, far cheaper than by columns
    key = (seeds.at[s] << 32) | seeds.nbr_asn[s]
    _, group = np.unique(key, return_inverse=True)
    group = group.reshape(-1)
    low = np.full(int(group.max()) + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(low, group, seeds.med[s])
    return np.asarray(s[seeds.med[s] == low[group]], dtype=np.int64)


def chosen_exits(g: RoutingGraph, edges: Edges, state: RouteState) -> Exits:
    """The one exit each AS's best route took (AS-level mode)."""
    has = np.flatnonzero(state.has_route)
    via = state.via[has]
    seed = state.seed[has]
    # find the edge index of (via -> a) for routes learned from a neighbour
    key_e = edges.src * g.n + edges.dst
    order_e = np.argsort(key_e, kind="stable")
    from_nb = via >= 0
    pos = np.searchsorted(key_e[order_e], via[from_nb] * g.n + has[from_nb])
    edge = np.full(has.size, -1, dtype=np.int64)
    edge[from_nb] = order_e[pos]
    return _csr(
        g.n,
        has,
        edge,
        np.where(from_nb, -1, seed),
        np.where(from_nb, via, -1),
        np.zeros(has.size, dtype=np.int64),
    )
