"""The backbone as a graph: one-way link latencies in a sparse matrix, shortest paths.

Sites are the nodes (rows of :class:`~anyedge.model.Sites`); each backbone link is an
edge both ways weighted by its one-way latency.  All-pairs shortest paths come from
:func:`scipy.sparse.csgraph.dijkstra` in C, with the predecessor matrix to spell out the
sites a path crosses.  A path is a tuple of site rows, first the site it starts from.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from ..model import BackboneLinks

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]
Path = tuple[int, ...]


@dataclass(frozen=True, eq=False)
class Graph:
    """``n`` sites and directed edges (both ways of every link) with latency and capacity."""

    n: int
    src: IntArray
    dst: IntArray
    latency_ms: FloatArray  # one way
    capacity: FloatArray  # Gbps, each way

    @classmethod
    def from_links(cls, links: BackboneLinks, n: int) -> Graph:
        return cls.from_edges(
            n,
            zip(
                links.a.tolist(),
                links.b.tolist(),
                links.latency_ms,
                links.capacity_gbps,
                strict=True,
            ),
        )

    @classmethod
    def from_edges(cls, n: int, edges: Iterable[tuple[int, int, float, float]]) -> Graph:
        """Undirected edges (a, b, one-way ms, Gbps); each becomes two directed ones."""
        one = [(a, b, w, c) for a, b, w, c in edges]
        rows = one + [(b, a, w, c) for a, b, w, c in one]
        arr = np.array(rows, dtype=np.float64).reshape(-1, 4)
        return cls(
            n=n,
            src=arr[:, 0].astype(np.int32),
            dst=arr[:, 1].astype(np.int32),
            latency_ms=arr[:, 2].copy(),
            capacity=arr[:, 3].copy(),
        )

    def __post_init__(self) -> None:
        # edges by (source, target, latency): the CSR order, fastest of parallels first
        order = np.lexsort((self.latency_ms, self.dst, self.src))
        object.__setattr__(self, "_order", order)

    def matrix(self, usable: npt.NDArray[np.bool_] | None = None) -> csr_matrix:
        """Sparse (n, n) latency matrix over the usable edges (all by default)."""
        rows: npt.NDArray[np.intp] = self._order  # type: ignore[attr-defined]
        if usable is not None:
            rows = rows[usable[rows]]
        # parallel edges: only the fastest (a sparse matrix would add them up)
        src, dst = self.src[rows], self.dst[rows]
        first = np.ones(rows.size, np.bool_)
        first[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])
        rows, src = rows[first], src[first]
        indptr = np.zeros(self.n + 1, np.int32)
        np.cumsum(np.bincount(src, minlength=self.n), out=indptr[1:])
        return csr_matrix((self.latency_ms[rows], self.dst[rows], indptr), shape=(self.n, self.n))

    def edge_index(self) -> dict[tuple[int, int], int]:
        """Directed edge -> its row (the lowest-latency one where two links are parallel)."""
        out: dict[tuple[int, int], int] = {}
        for i in np.argsort(-self.latency_ms, kind="stable").tolist():
            out[(int(self.src[i]), int(self.dst[i]))] = i
        return out

    def shortest(
        self, sources: npt.ArrayLike | None = None, usable: npt.NDArray[np.bool_] | None = None
    ) -> tuple[FloatArray, IntArray]:
        """One-way latencies and predecessors from ``sources`` (all sites by default)."""
        dist, pred = dijkstra(
            self.matrix(usable), directed=True, indices=sources, return_predecessors=True
        )
        return np.asarray(dist), np.asarray(pred, dtype=np.int32)


def spell(pred_row: IntArray, source: int, target: int) -> Path | None:
    """The sites from ``source`` to ``target`` in one predecessor row; None if unreachable."""
    if source == target:
        return (source,)
    if pred_row[target] < 0:
        return None
    out = [target]
    while out[-1] != source:
        out.append(int(pred_row[out[-1]]))
    return tuple(reversed(out))


def path_latency(graph: Graph, path: Path, edges: dict[tuple[int, int], int]) -> float:
    """One-way latency along ``path`` (KeyError if two of its sites are not linked)."""
    return float(sum(graph.latency_ms[edges[(a, b)]] for a, b in itertools.pairwise(path)))
