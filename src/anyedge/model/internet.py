"""The Internet around anyedge: autonomous systems, their relations, metros and eyeballs.

ASes are rows of arrays sorted by ASN, so an ASN maps to its row by binary search and
every relation is a pair of row indices:

* ``p2c`` (E, 2): provider row, customer row — CAIDA's ``a|b|-1``;
* ``p2p`` (P, 2): the two peers, lower row first — CAIDA's ``a|b|0``.

*Metros* are real cities (a geonames id, name, country, position and population).  An
AS is *present* in metros (``presence``, pairs of AS row and metro row): that is where
it can hand traffic over, which hot-potato routing needs.  *Eyeballs* are the demand:
peak requests/s that users of one access AS in one metro send, with the share of each
plan in that demand.  Demand follows the users' local time elsewhere (the twin); here it
is the evening peak.

Relations must form a hierarchy: following customer → provider edges never comes back
to where it started.  :meth:`Internet.provider_levels` checks that and gives each AS its
height in the hierarchy (0 for ASes without customers), the order in which routes climb.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from .table import FloatArray, Int8Array, Int32Array, IntArray, Table, frozen_array


class ASKind(IntEnum):
    OTHER = 0
    TIER1 = 1
    TRANSIT = 2
    ACCESS = 3
    CONTENT = 4


AS_KIND_NAMES = {k: k.name.lower() for k in ASKind}


class ProviderLoopError(ValueError):
    """Customer → provider edges come back to where they started."""

    def __init__(self, cycle: list[int]) -> None:
        self.cycle = cycle  # ASNs, first repeated at the end
        super().__init__("provider loop: " + " -> ".join(str(a) for a in cycle))


@dataclass(frozen=True, eq=False)
class Metros(Table):
    id: IntArray = field(repr=False)
    name: tuple[str, ...]
    country: tuple[str, ...]
    lat: FloatArray = field(repr=False)
    lon: FloatArray = field(repr=False)
    population: IntArray = field(repr=False)

    def __post_init__(self) -> None:
        frozen_array(self, "id", np.int64)
        frozen_array(self, "lat", np.float64)
        frozen_array(self, "lon", np.float64)
        frozen_array(self, "population", np.int64)
        n = self.id.shape[0]
        if len(self.name) != n or len(self.country) != n:
            raise ValueError("metro names must align")
        if any(a.shape != (n,) for a in (self.lat, self.lon, self.population)):
            raise ValueError("metro arrays must align")
        if np.unique(self.id).shape[0] != n:
            raise ValueError("metro ids must be unique")
        object.__setattr__(self, "_index", {int(m): i for i, m in enumerate(self.id)})

    def __len__(self) -> int:
        return int(self.id.shape[0])

    def index(self, metro_id: int) -> int:
        return self._index[metro_id]  # type: ignore[attr-defined, no-any-return]

    @classmethod
    def empty(cls) -> Metros:
        none = np.zeros(0, dtype=np.int64)
        return cls(id=none, name=(), country=(), lat=np.zeros(0), lon=np.zeros(0), population=none)


@dataclass(frozen=True, eq=False)
class Eyeballs(Table):
    """Peak demand per (AS row, metro row), sorted by AS then metro."""

    as_: Int32Array = field(repr=False)
    metro: Int32Array = field(repr=False)
    rps: FloatArray = field(repr=False)
    mix: FloatArray = field(repr=False)  # (rows, plans), each row sums to 1

    def __post_init__(self) -> None:
        frozen_array(self, "as_", np.int32)
        frozen_array(self, "metro", np.int32)
        frozen_array(self, "rps", np.float64)
        frozen_array(self, "mix", np.float64)
        n = self.as_.shape[0]
        if self.metro.shape != (n,) or self.rps.shape != (n,) or self.mix.ndim != 2:
            raise ValueError("eyeball arrays must align")
        if self.mix.shape[0] != n:
            raise ValueError("eyeball mix must have one row per eyeball")
        if np.any(self.rps < 0):
            raise ValueError("demand must be non-negative")
        if n:
            key = self.as_.astype(np.int64) << 32 | self.metro.astype(np.int64)
            if np.any(np.diff(key) <= 0):
                raise ValueError("eyeballs must be sorted by (AS, metro) without repeats")

    def __len__(self) -> int:
        return int(self.as_.shape[0])

    @classmethod
    def empty(cls, plans: int) -> Eyeballs:
        none = np.zeros(0, dtype=np.int32)
        return cls(as_=none, metro=none, rps=np.zeros(0), mix=np.zeros((0, plans)))

    @classmethod
    def from_rows(
        cls, as_: IntArray, metro: IntArray, rps: FloatArray, mix: FloatArray
    ) -> Eyeballs:
        order = np.lexsort((metro, as_))
        return cls(as_=as_[order], metro=metro[order], rps=rps[order], mix=mix[order])


def layers(n: int, src: npt.ArrayLike, dst: npt.ArrayLike) -> IntArray:
    """Longest-path layer of each node in the graph of ``src → dst`` edges.

    layer(v) = 0 if no edge enters v, else 1 + the highest layer of its predecessors;
    -1 for nodes on or after a cycle.  Vectorised: one pass per layer.
    """
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    layer = np.full(n, -1, dtype=np.int64)
    waiting = np.bincount(dst, minlength=n)
    frontier = np.flatnonzero(waiting == 0)
    h = 0
    while frontier.size:
        layer[frontier] = h
        done = np.zeros(n, dtype=np.bool_)
        done[frontier] = True
        waiting = waiting - np.bincount(dst[done[src]], minlength=n)
        frontier = np.flatnonzero((waiting == 0) & (layer < 0))
        h += 1
    return layer


def _pairs(a: object) -> Int32Array:
    arr = np.array(a, dtype=np.int32).reshape(-1, 2)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Internet(Table):
    asn: IntArray = field(repr=False)  # sorted, unique
    kind: Int8Array = field(repr=False)
    name: tuple[str, ...]
    country: tuple[str, ...]
    p2c: Int32Array = field(repr=False)  # (E, 2) provider row, customer row; sorted
    p2p: Int32Array = field(repr=False)  # (P, 2) lower row first; sorted
    metros: Metros
    presence: Int32Array = field(repr=False)  # (K, 2) AS row, metro row; sorted
    eyeballs: Eyeballs

    def __post_init__(self) -> None:
        frozen_array(self, "asn", np.int64)
        frozen_array(self, "kind", np.int8)
        for name in ("p2c", "p2p", "presence"):
            object.__setattr__(self, name, _pairs(getattr(self, name)))
        n = self.asn.shape[0]
        if self.kind.shape != (n,) or len(self.name) != n or len(self.country) != n:
            raise ValueError("AS arrays must align")
        if n and np.any(np.diff(self.asn) <= 0):
            raise ValueError("ASNs must be sorted and unique")
        for name in ("p2c", "p2p"):
            pairs = getattr(self, name)
            if pairs.size and (pairs.min() < 0 or pairs.max() >= n):
                raise ValueError(f"{name} refers to an AS row that does not exist")
            if np.any(pairs[:, 0] == pairs[:, 1]):
                raise ValueError(f"{name} links an AS to itself")
        if self.p2p.size and np.any(self.p2p[:, 0] > self.p2p[:, 1]):
            raise ValueError("peer pairs must have the lower row first")
        m = len(self.metros)
        if self.presence.size and (
            self.presence.min() < 0
            or self.presence[:, 0].max() >= n
            or self.presence[:, 1].max() >= m
        ):
            raise ValueError("presence refers to an AS or metro that does not exist")
        e = self.eyeballs
        if len(e) and (
            min(e.as_.min(), e.metro.min()) < 0 or e.as_.max() >= n or e.metro.max() >= m
        ):
            raise ValueError("eyeballs refer to an AS or metro that does not exist")

    def __len__(self) -> int:
        return int(self.asn.shape[0])

    def index(self, asn: int) -> int:
        """Row of ``asn``; KeyError if the Internet has no such AS."""
        i = int(np.searchsorted(self.asn, asn))
        if i >= len(self) or int(self.asn[i]) != asn:
            raise KeyError(asn)
        return i

    def indices(self, asns: IntArray) -> Int32Array:
        """Rows of many ASNs at once; KeyError naming the first unknown one."""
        asns = np.asarray(asns, dtype=np.int64)
        rows = np.searchsorted(self.asn, asns)
        rows_c = np.minimum(rows, max(len(self) - 1, 0))
        bad = (rows >= len(self)) | (self.asn[rows_c] != asns) if len(self) else asns == asns
        if np.any(bad):
            raise KeyError(int(asns[np.argmax(bad)]))
        return rows.astype(np.int32)

    def provider_levels(self) -> Int32Array:
        """Height of each AS in the customer→provider hierarchy (0: no customers).

        Raises :class:`ProviderLoopError` naming one loop if the relations have one.
        """
        level = layers(len(self), self.p2c[:, 1], self.p2c[:, 0])
        if np.any(level < 0):
            raise ProviderLoopError(self._find_loop(level < 0))
        return level.astype(np.int32)

    def _find_loop(self, stuck: np.ndarray) -> list[int]:
        """One customer→provider loop among the ASes that could not be levelled.

        Every stuck AS has a stuck customer (else it would have a level), so walking
        from provider to stuck customer never dead-ends and must come round.
        """
        both = stuck[self.p2c[:, 0]] & stuck[self.p2c[:, 1]]
        down: dict[int, int] = {}
        for p, c in self.p2c[both]:
            down.setdefault(int(p), int(c))
        seen: dict[int, int] = {}
        path: list[int] = []
        v = int(np.flatnonzero(stuck)[0])
        while v not in seen:
            seen[v] = len(path)
            path.append(v)
            v = down[v]
        loop = [*path[seen[v] :], v]
        loop.reverse()  # customer → provider direction
        return [int(self.asn[i]) for i in loop]

    def eyeball_demand(self) -> FloatArray:
        """Peak requests/s per metro (summed over the ASes serving it)."""
        return np.bincount(
            self.eyeballs.metro, weights=self.eyeballs.rps, minlength=len(self.metros)
        ).astype(np.float64)

    @classmethod
    def empty(cls, plans: int = 4) -> Internet:
        pairs = np.zeros((0, 2), dtype=np.int32)
        return cls(
            asn=np.zeros(0, dtype=np.int64),
            kind=np.zeros(0, dtype=np.int8),
            name=(),
            country=(),
            p2c=pairs,
            p2p=pairs,
            metros=Metros.empty(),
            presence=pairs,
            eyeballs=Eyeballs.empty(plans),
        )
