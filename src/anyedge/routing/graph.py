"""The AS graph as the propagation engine walks it: directed edges grouped by phase.

Gao-Rexford propagation runs in three phases (:mod:`.propagate`), and each visits edges
in an order that guarantees a sender's route is final before it is sent:

* **up** — customer → provider edges, grouped by the provider's *height* (0 for ASes
  without customers, else one more than its highest customer);
* **across** — peer edges, both directions, all at once;
* **down** — provider → customer edges, grouped by the customer's *depth* (0 for ASes
  without providers, else one more than its deepest provider).

A :class:`RoutingGraph` is built once per Internet and reused by every propagation: the
predictor runs thousands on the same graph.  Links that fail are a mask over the edge
arrays (:meth:`RoutingGraph.link_mask`, :meth:`RoutingGraph.masked`): the edges of a
down link drop out of their phase and every other edge keeps its group, which is still
a valid order (a provider stays above its customers when a link goes), so a faulted
graph costs one array selection, not a rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..model.internet import Internet, layers

IntArray = npt.NDArray[np.int64]


def _peel(n: int, src: IntArray, dst: IntArray) -> IntArray:
    """Layers of the DAG of ``src → dst`` edges, sources first (see model.internet.layers)."""
    rank = np.asarray(layers(n, src, dst), dtype=np.int64)
    if np.any(rank < 0):
        raise ValueError("the provider hierarchy has a loop")
    return rank


@dataclass(frozen=True)
class Phase:
    """Directed edges of one phase, sorted into groups processed one after another."""

    src: IntArray
    dst: IntArray
    group: IntArray  # sorted
    bounds: IntArray  # group g is edges bounds[g]:bounds[g+1]

    @classmethod
    def grouped(cls, src: IntArray, dst: IntArray, group: IntArray) -> Phase:
        order = np.argsort(group, kind="stable")
        g = group[order]
        ng = int(g.max()) + 1 if g.size else 0
        bounds = np.searchsorted(g, np.arange(ng + 1)).astype(np.int64)
        return cls(src=src[order], dst=dst[order], group=g, bounds=bounds)

    def into(self, mask: npt.NDArray[np.bool_]) -> Phase:
        """The same phase with only the edges into ASes where ``mask`` is set."""
        return self.keep(mask[self.dst])

    def keep(self, mask: npt.NDArray[np.bool_]) -> Phase:
        """The same phase with only the edges where ``mask`` (one flag per edge) is set.

        The groups keep their numbers: removing edges never breaks the order that makes
        a sender's route final before it is sent, so nothing is re-sorted or re-peeled.
        """
        keep = np.flatnonzero(mask)
        g = self.group[keep]
        bounds = np.searchsorted(g, np.arange(self.bounds.size)).astype(np.int64)
        return Phase(src=self.src[keep], dst=self.dst[keep], group=g, bounds=bounds)

    def groups(self) -> list[slice]:
        return [
            slice(int(a), int(b))
            for a, b in zip(self.bounds[:-1], self.bounds[1:], strict=True)
            if b > a
        ]


@dataclass(frozen=True)
class RoutingGraph:
    """Arrays of the AS graph for propagation; AS rows are the Internet's rows."""

    asn: IntArray
    up: Phase
    across: Phase
    down: Phase
    height: IntArray = field(repr=False)
    depth: IntArray = field(repr=False)

    @property
    def n(self) -> int:
        return int(self.asn.shape[0])

    def link_mask(self, pairs: npt.ArrayLike) -> tuple[npt.NDArray[np.bool_], ...]:
        """Per phase (up, across, down), which edges stay when the links between the
        AS-row ``pairs`` are down (both directions of each link go)."""
        p = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        gone = np.minimum(p[:, 0], p[:, 1]) * self.n + np.maximum(p[:, 0], p[:, 1])
        return tuple(
            ~np.isin(np.minimum(ph.src, ph.dst) * self.n + np.maximum(ph.src, ph.dst), gone)
            for ph in (self.up, self.across, self.down)
        )

    def masked(self, keep: tuple[npt.NDArray[np.bool_], ...]) -> RoutingGraph:
        """The graph with only the edges ``keep`` (from :meth:`link_mask`) flags."""
        up, across, down = (
            ph.keep(k) for ph, k in zip((self.up, self.across, self.down), keep, strict=True)
        )
        return RoutingGraph(
            asn=self.asn, up=up, across=across, down=down, height=self.height, depth=self.depth
        )

    @classmethod
    def from_internet(cls, internet: Internet) -> RoutingGraph:
        return cls.from_links(internet.asn, internet.p2c, internet.p2p)

    @classmethod
    def from_links(cls, asn: npt.ArrayLike, p2c: npt.ArrayLike, p2p: npt.ArrayLike) -> RoutingGraph:
        """From sorted ASNs and (provider row, customer row), (peer row, peer row) pairs."""
        asn = np.asarray(asn, dtype=np.int64)
        n = asn.shape[0]
        pc = np.asarray(p2c, dtype=np.int64).reshape(-1, 2)
        pp = np.asarray(p2p, dtype=np.int64).reshape(-1, 2)
        prov, cust = pc[:, 0], pc[:, 1]
        height = _peel(n, cust, prov)  # customers before providers
        depth = _peel(n, prov, cust)  # providers before customers
        up = Phase.grouped(cust, prov, height[prov])
        a, b = pp[:, 0], pp[:, 1]
        across = Phase.grouped(
            np.concatenate([a, b]), np.concatenate([b, a]), np.zeros(2 * a.size, dtype=np.int64)
        )
        down = Phase.grouped(prov, cust, depth[cust])
        return cls(asn=asn, up=up, across=across, down=down, height=height, depth=depth)
