"""The bucket table: which server takes a flow, and which one had it before.

A data center's load balancer (Unimog, in the traffic manager and BPF edge posts) sends
each packet to a server by its flow hash (:mod:`.flowhash`): the hash's low bits pick a
*bucket*, and the table names each bucket's *first hop*, the server that takes new
flows, and its *second hop*, the server that had the bucket before the last change that
moved it (``-1`` when none).  The data plane gives a packet to the first hop; when the
first hop has no connection for it and the packet is not a new connection, the first
hop passes it on to the second hop.  So a connection survives a change as long as its
server is still the first or the second hop of its bucket: this is daisy chaining, as
Unimog, Beamer and GLB do it.

The control plane here turns server weights and states into tables:

* **Targets.**  A server takes buckets in proportion to its weight if it is *active*;
  a *draining* or *removed* server takes none.  Counts come from the weights by
  largest-remainder apportionment (:func:`apportion`): each server gets the whole part
  of its quota ``buckets × weight / total``, and the buckets left over go to the largest
  fractional parts (ties: the server that holds more buckets now, then the lower
  index).  So every count is within one bucket of its quota.
* **Fewest moves.**  A change (:meth:`Table.change`, or :meth:`~Table.add`,
  :meth:`~Table.drain`, :meth:`~Table.remove`, :meth:`~Table.reweight`) moves only
  what the new targets require: each server above its target gives up the difference,
  each below it takes the difference, nothing else moves.  The number of buckets whose
  first hop changes is the sum of the positive differences between old counts and new
  targets, which no table can beat.
* **Which buckets.**  Every table has a fixed order of its buckets: their rank is
  ``fmix32(bucket XOR fmix32(seed))`` (MurmurHash3's 32-bit finaliser, a bijection, so
  no two buckets tie), and the order is the ranks ascending.  A server that gives up
  ``k`` buckets gives up the ``k`` it holds that come first in this order; the freed
  buckets, in this order, are dealt to the servers that need buckets, by server index,
  each taking as many consecutive ones as it needs.  The order is pseudo-random over
  the hash space, so what moves is spread over it, never a contiguous block, and the
  same inputs always give the same table.
* **Second hops.**  A bucket that moves keeps its old first hop as its second hop
  (its connections are there).  If the old first hop was removed (it is gone; its
  connections are lost anyway), the bucket keeps its old second hop instead.  A bucket
  that does not move keeps its second hop.  No bucket ever names a removed server, as
  first or second hop, and no bucket names the same server twice.

Tables are values: every change returns a new :class:`Table` and leaves the old one as
it was (its arrays are read-only).  Server indices are stable: a removed server keeps
its index (with state ``REMOVED``), and :meth:`Table.add` appends.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float64]
StateArray = npt.NDArray[np.uint8]

DEFAULT_BUCKETS = 1 << 16
NONE = -1  # no second hop


class ServerState(IntEnum):
    """What a server does with new flows: takes its share, takes none (but still
    serves the connections it has, as second hop), or is gone."""

    ACTIVE = 0
    DRAINING = 1
    REMOVED = 2


def fmix32(x: npt.ArrayLike) -> npt.NDArray[np.uint32]:
    """MurmurHash3's 32-bit finaliser: a bijection on 32-bit words that mixes every bit."""
    h = np.atleast_1d(np.asarray(x, dtype=np.uint32)).copy()
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def bucket_order(buckets: int, seed: int = 0) -> npt.NDArray[np.intp]:
    """The table's fixed order of buckets: by rank ``fmix32(bucket ^ fmix32(seed))``."""
    key = fmix32(np.uint32(seed & 0xFFFF_FFFF))
    rank = fmix32(np.arange(buckets, dtype=np.uint32) ^ key)
    return np.argsort(rank, kind="stable")


def apportion(
    weight: npt.ArrayLike, total: int, prefer: npt.ArrayLike | None = None
) -> npt.NDArray[np.int64]:
    """``total`` split in proportion to ``weight`` by largest remainder (Hamilton's
    method).  Ties between equal remainders go to the larger ``prefer`` (the buckets a
    server holds now, so that equal weights do not shuffle), then to the lower index.
    A zero weight gets nothing; every count is within one of ``total × weight / sum``."""
    w = np.asarray(weight, dtype=np.float64)
    s = float(w.sum())
    if not s > 0:
        raise ValueError("apportion needs a positive total weight")
    quota = total * (w / s)
    whole = np.floor(quota).astype(np.int64)
    left = total - int(whole.sum())
    if left:
        rem = quota - whole
        pref = np.zeros(w.size) if prefer is None else np.asarray(prefer, dtype=np.float64)
        idx = np.arange(w.size)
        # lexsort: the last key is the primary one
        order = np.lexsort((idx, -pref, -rem, w <= 0))
        whole[order[:left]] += 1
    return whole


A = TypeVar("A", bound=npt.NDArray[Any])


def _frozen(a: A) -> A:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False, repr=False)
class Table:
    """A bucket table and the server weights and states it was built for.

    ``first[b]`` and ``second[b]`` are bucket ``b``'s first and second hop (server
    indices; ``second`` is ``-1`` when none).  ``weight`` and ``state`` are per server;
    only an ``ACTIVE`` server's weight counts.  ``order`` is the fixed bucket order
    derived from ``seed`` (shared by every table changed from this one)."""

    first: IntArray
    second: IntArray
    weight: FloatArray
    state: StateArray
    seed: int
    order: npt.NDArray[np.intp]

    # ---- building and changing -------------------------------------------------------

    @classmethod
    def build(
        cls, weight: npt.ArrayLike, *, buckets: int = DEFAULT_BUCKETS, seed: int = 0
    ) -> Table:
        """A fresh table for active servers of these weights (no second hops)."""
        if buckets < 1 or buckets & (buckets - 1) or buckets > 1 << 32:
            raise ValueError(f"buckets must be a power of two up to 2**32, not {buckets}")
        w = _weights(weight)
        state = np.zeros(w.size, dtype=np.uint8)
        target = _targets(w, state, buckets, None)
        order = bucket_order(buckets, seed)
        first = np.empty(buckets, dtype=np.int32)
        first[order] = np.repeat(np.arange(w.size, dtype=np.int32), target)
        second = np.full(buckets, NONE, dtype=np.int32)
        return cls(_frozen(first), _frozen(second), _frozen(w), _frozen(state), seed, order)

    def change(
        self, weight: npt.ArrayLike | None = None, state: npt.ArrayLike | None = None
    ) -> Table:
        """The table for new weights and/or states, moving the fewest buckets.

        Both arrays are per server; they may be longer than this table's (new servers
        at the end), never shorter.  Unchanged when ``None``.  See the module's
        docstring for which buckets move and what their second hops become."""
        w = self.weight if weight is None else _weights(weight)
        s = self.state if state is None else _states(state)
        if weight is None and s.size > w.size:
            raise ValueError("new servers need weights")
        if state is None and w.size > s.size:
            s = np.concatenate([s, np.zeros(w.size - s.size, dtype=np.uint8)])
        if min(w.size, s.size) < self.weight.size:
            raise ValueError("servers keep their index: a change may add servers, not drop them")
        if w.size != s.size:
            raise ValueError(f"{w.size} weights for {s.size} server states")
        n = w.size
        first, second = self.first, self.second
        count = np.bincount(first, minlength=n)
        target = _targets(w, s, first.size, count)
        excess = np.maximum(count - target, 0)
        deficit = np.maximum(target - count, 0)

        freed = self._give_up(excess)
        new_first = first.copy()
        new_first[freed] = np.repeat(np.arange(n, dtype=np.int32), deficit)

        removed = s == ServerState.REMOVED
        old = first[freed]
        new_second = second.copy()
        new_second[freed] = np.where(removed[old], second[freed], old)
        named = new_second >= 0
        gone = np.zeros_like(named)
        gone[named] = removed[new_second[named]]
        new_second[gone | (new_second == new_first)] = NONE
        return Table(
            _frozen(new_first), _frozen(new_second), _frozen(w), _frozen(s), self.seed, self.order
        )

    def _give_up(self, excess: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
        """Buckets freed by servers above their target: from each, the ``excess`` it
        holds that come first in the table's order; all of them, in that order."""
        f = self.first[self.order]  # server of each bucket, in bucket order
        pos = np.flatnonzero(excess[f] > 0)  # positions (in order) of over-full servers
        if pos.size == 0:
            return np.empty(0, dtype=np.intp)
        g = f[pos]
        by_server = np.argsort(g, kind="stable")  # grouped by server, order kept inside
        gs = g[by_server]
        start = np.searchsorted(gs, gs, side="left")
        nth = np.arange(gs.size) - start  # 0 for a server's first bucket in order, ...
        take = np.sort(pos[by_server[nth < excess[gs]]])
        return self.order[take]

    def add(self, weight: float) -> Table:
        """A new active server of this weight, at index ``servers``."""
        return self.change(weight=np.append(self.weight, weight))

    def reweight(self, server: int, weight: float) -> Table:
        """One server's new weight (it counts while the server is active)."""
        self._check(server)
        w = self.weight.copy()
        w[server] = weight
        return self.change(weight=w)

    def drain(self, server: int) -> Table:
        """Take no new flows on ``server``: all its buckets move, and it stays their
        second hop, so its connections go on until their buckets move again."""
        return self._set_state(server, ServerState.DRAINING)

    def activate(self, server: int) -> Table:
        """A draining server takes its share again."""
        return self._set_state(server, ServerState.ACTIVE)

    def remove(self, server: int) -> Table:
        """``server`` is gone: no bucket names it, not even as second hop."""
        return self._set_state(server, ServerState.REMOVED)

    def settled(self) -> Table:
        """The same table with no second hops: for when every connection older than
        the last change has ended."""
        second = np.full(self.first.size, NONE, dtype=np.int32)
        return Table(self.first, _frozen(second), self.weight, self.state, self.seed, self.order)

    def _set_state(self, server: int, state: ServerState) -> Table:
        self._check(server)
        s = self.state.copy()
        s[server] = state
        return self.change(state=s)

    def _check(self, server: int) -> None:
        if not 0 <= server < self.servers:
            raise IndexError(f"no server {server} (servers 0-{self.servers - 1})")

    # ---- reading ---------------------------------------------------------------------

    def __repr__(self) -> str:
        states = np.bincount(self.state, minlength=3)
        return (
            f"Table(buckets={self.buckets}, servers={self.servers}: {states[0]} active, "
            f"{states[1]} draining, {states[2]} removed; "
            f"{int((self.second >= 0).sum())} second hops)"
        )

    @property
    def buckets(self) -> int:
        return int(self.first.size)

    @property
    def servers(self) -> int:
        """Servers known to the table, removed ones included."""
        return int(self.weight.size)

    @property
    def effective(self) -> FloatArray:
        """Each server's weight where it is active, 0 otherwise."""
        return np.where(self.state == ServerState.ACTIVE, self.weight, 0.0)

    def counts(self) -> npt.NDArray[np.int64]:
        """Buckets whose first hop is each server."""
        return np.bincount(self.first, minlength=self.servers)

    def bucket(self, hashes: npt.ArrayLike) -> npt.NDArray[np.intp]:
        """The bucket of each flow hash: its low bits."""
        h = np.asarray(hashes)
        if h.dtype.kind not in "ui":
            raise TypeError(f"flow hashes are unsigned 32-bit integers, not {h.dtype}")
        return (h.astype(np.uint64) & np.uint64(self.buckets - 1)).astype(np.intp)

    def lookup(self, hashes: npt.ArrayLike) -> tuple[IntArray, IntArray]:
        """First and second hop of each flow hash (second ``-1`` when none)."""
        b = self.bucket(hashes)
        return self.first[b], self.second[b]


def _weights(weight: npt.ArrayLike) -> FloatArray:
    w = np.array(weight, dtype=np.float64, ndmin=1)
    if w.ndim != 1:
        raise ValueError("weights are one number per server")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    with np.errstate(over="ignore"):
        total = w.sum()
    if not np.isfinite(total):
        raise ValueError("weights too large: their sum overflows")
    if w.size >= 1 << 31:
        raise ValueError("too many servers")
    return w


def _states(state: npt.ArrayLike) -> StateArray:
    s = np.array(state, ndmin=1)
    if s.ndim != 1 or s.dtype.kind not in "ui" or np.any(s < 0) or np.any(s > 2):
        raise ValueError("states are ServerState values, one per server")
    return s.astype(np.uint8)


def _targets(
    weight: FloatArray, state: StateArray, buckets: int, count: npt.NDArray[np.int64] | None
) -> npt.NDArray[np.int64]:
    eff = np.where(state == ServerState.ACTIVE, weight, 0.0)
    if not eff.sum() > 0:
        raise ValueError("no active server with a positive weight: buckets need a first hop")
    return apportion(eff, buckets, count)
