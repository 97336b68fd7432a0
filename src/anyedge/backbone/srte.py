"""SR-TE: latency-optimal backbone paths that respect the links' capacity.

Segment routing lets the ingress choose the whole path, so the controller can pick by
latency rather than by IGP cost.  Two computations:

* :func:`k_shortest` — the ``k`` lowest-latency loopless paths between two sites (Yen's
  algorithm: each next path deviates from one already found at a spur site, with the
  edges that would repeat a found path and the root's sites removed; each spur is one
  :func:`scipy.sparse.csgraph.dijkstra` call).  They are the alternatives a head end
  keeps ready.
* :func:`place` — demands (source, target, Gbps) placed one at a time, largest first, each
  on the lowest-latency path whose every link still has room for it: the constrained
  shortest path is a plain shortest path over the links whose residual capacity is at
  least the demand.  No link is ever loaded beyond its capacity; a demand that fits
  nowhere is reported unplaced rather than squeezed in.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .graph import FloatArray, Graph, Path, path_latency, spell


def k_shortest(graph: Graph, source: int, target: int, k: int) -> list[tuple[float, Path]]:
    """Up to ``k`` loopless paths, lowest one-way latency first, as (ms, sites)."""
    edges = graph.edge_index()
    dist, pred = graph.shortest([source])
    first = spell(pred[0], source, target)
    if first is None or k < 1:
        return []
    found: list[tuple[float, Path]] = [(float(dist[0, target]), first)]
    heap: dict[Path, float] = {}
    while len(found) < k:
        last = found[-1][1]
        for i in range(len(last) - 1):
            spur, root = last[i], last[: i + 1]
            usable = np.ones(graph.src.size, np.bool_)
            for _, p in found:
                if p[: i + 1] == root and len(p) > i + 1:
                    usable[(graph.src == p[i]) & (graph.dst == p[i + 1])] = False
            for node in root[:-1]:
                usable[(graph.src == node) | (graph.dst == node)] = False
            _d, pr = graph.shortest([spur], usable)
            tail = spell(pr[0], spur, target)
            if tail is None:
                continue
            path = root[:-1] + tail
            if path not in heap and all(path != p for _, p in found):
                heap[path] = path_latency(graph, path, edges)
        if not heap:
            break
        best = min(heap, key=lambda p: (heap[p], len(p), p))
        found.append((heap.pop(best), best))
    return found


@dataclass(frozen=True)
class Demand:
    source: int
    target: int
    gbps: float


@dataclass(frozen=True, eq=False)
class Placement:
    paths: tuple[Path | None, ...]  # per demand, in the order given; None: no room
    latency_ms: tuple[float, ...]  # one way, inf where unplaced
    load: FloatArray  # Gbps on each directed edge of the graph

    @property
    def unplaced(self) -> list[int]:
        return [i for i, p in enumerate(self.paths) if p is None]


def place(graph: Graph, demands: Sequence[Demand]) -> Placement:
    """Each demand on its latency-shortest path with room, largest demands first."""
    edges = graph.edge_index()
    load = np.zeros(graph.src.size)
    paths: list[Path | None] = [None] * len(demands)
    lat = [float("inf")] * len(demands)
    order = sorted(range(len(demands)), key=lambda i: (-demands[i].gbps, i))
    for i in order:
        d = demands[i]
        usable = graph.capacity - load >= d.gbps
        dist, pred = graph.shortest([d.source], usable)
        p = spell(pred[0], d.source, d.target)
        if p is None:
            continue
        for a, b in itertools.pairwise(p):
            load[_room(graph, usable, a, b, edges)] += d.gbps
        paths[i], lat[i] = p, float(dist[0, d.target])
    return Placement(tuple(paths), tuple(lat), load)


def _room(
    graph: Graph, usable: np.ndarray, a: int, b: int, edges: dict[tuple[int, int], int]
) -> int:
    """The directed edge a->b the path used: the shortest usable one (links may be parallel)."""
    rows = np.flatnonzero((graph.src == a) & (graph.dst == b) & usable)
    return int(rows[np.argmin(graph.latency_ms[rows])]) if rows.size else edges[(a, b)]
