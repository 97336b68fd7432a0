"""Each site's neighbours, nearest first: what the decision core walks to find receivers.

A site above its maximum forwards to the nearest sites with room, and it rarely needs
more than a handful of them.  Sorting the site's whole latency row for that costs
O(sites log sites) per overloaded site, so O(sites² log sites) per decision once a fixed
share of a large network is overloaded, and walking the row through numpy scalars
touches the dense table at random.  Instead each site gets, the first time it needs
one, a short list: its ``K`` nearest others (with every site tied with the last of
them), found by a partition of the row (O(sites)) and sorted, kept as plain Python
lists of ids and latencies.  A walk that runs off the end of the short list goes on in
the whole row sorted, made (once) only then and kept as an array of ids.

Both lists hold exactly the first entries of ``argsort(row, kind="stable")``: ties
between equal latencies go to the lower site id, and sites of unknown (infinite or NaN)
latency come last — so a decision makes the same actions whichever list it walks.

The lists are kept per latency table (by identity, dropped when the table is) for as
long as the table lives: a configuration's arrays are not changed in place.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

K = 32  # neighbours in a site's short list (a tie with the last one adds more)
FIRST_STEP, MAX_STEP = 16, 1024  # past the short list: sites looked at a time


@dataclass
class Nearest:
    """Site s's nearest others, nearest first: ``ids`` and their latency ``ms``; ``whole``
    when they are every site (else the first ``len(ids)`` of them)."""

    ids: list[int]
    ms: list[float]
    whole: bool


@dataclass
class _Table:
    short: dict[int, Nearest] = field(default_factory=dict)
    order: dict[int, npt.NDArray[np.int32]] = field(default_factory=dict)


_TABLES: dict[int, _Table] = {}  # latency table (by id) -> its sites' lists


def _table(lat: npt.NDArray[np.floating]) -> _Table:
    t = _TABLES.get(id(lat))
    if t is None:
        t = _TABLES[id(lat)] = _Table()
        weakref.finalize(lat, _TABLES.pop, id(lat), None)
    return t


def nearest(lat: npt.NDArray[np.floating], s: int) -> Nearest:
    """The short list of site s: its ``K`` nearest (and any tied with the last); every
    site, when the row is short or the ``K``-th nearest's latency is unknown."""
    t = _table(lat)
    got = t.short.get(s)
    if got is None:
        got = _short(lat[s], K)
        if got is None:
            order = everyone(lat, s)
            got = Nearest(order.tolist(), _floats(lat[s][order]), True)
        t.short[s] = got
    return got


def everyone(lat: npt.NDArray[np.floating], s: int) -> npt.NDArray[np.int32]:
    """Every site, nearest first: the row's stable sort, made once per site and table
    (kept as 32-bit ids: 40 KB a site at 10,000 sites)."""
    t = _table(lat)
    got = t.order.get(s)
    if got is None:
        got = t.order[s] = np.argsort(lat[s], kind="stable").astype(np.int32)
    return got


def walk(lat: npt.NDArray[np.floating], s: int) -> Iterator[tuple[list[int], list[float]]]:
    """Site s's others nearest first, as (ids, latencies) chunks of plain lists: the short
    list, then the rest of the whole order a growing chunk at a time."""
    near = nearest(lat, s)
    yield near.ids, near.ms
    if near.whole:
        return
    order, row = everyone(lat, s), lat[s]
    start, step = len(near.ids), FIRST_STEP
    while start < order.size:
        ids = order[start : start + step]
        yield ids.tolist(), _floats(row[ids])
        start += step
        step = min(4 * step, MAX_STEP)


def _short(row: npt.NDArray[np.floating], k: int) -> Nearest | None:
    """The first entries of the row's stable sort, at least k of them; None when the
    row is short or its k-th nearest is not finite (then the whole sort is as cheap)."""
    n = row.shape[0]
    if n <= 4 * k:
        return None
    v = float(np.partition(row, k - 1)[k - 1])
    if not math.isfinite(v):
        return None
    sel = np.flatnonzero(row <= v)  # in id order, so the stable sort breaks ties by id
    sel = sel[np.argsort(row[sel], kind="stable")]
    return Nearest(sel.tolist(), _floats(row[sel]), False)


def _floats(a: npt.NDArray[np.floating]) -> list[float]:
    return np.asarray(a, dtype=np.float64).tolist()  # type: ignore[no-any-return]
