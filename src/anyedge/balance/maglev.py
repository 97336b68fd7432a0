"""Maglev's lookup table (Eisenbud et al., NSDI 2016, section 3.4), for comparison only.

Maglev gives each backend a permutation of the table's ``M`` slots (``M`` prime) from
two hashes of its name, ``offset = h1(name) mod M`` and ``skip = h2(name) mod (M − 1) +
1``, so that ``permutation[i][j] = (offset + j × skip) mod M``.  Then the backends take
turns, in index order: on its turn a backend takes the next slot of its permutation
that is still empty, until every slot is taken (the paper's Pseudocode 1).  A weighted
backend gets more turns: every round each backend earns ``weight / max(weight)`` of a
turn and takes one whenever it has earned a whole one (with equal weights this is the
paper's algorithm exactly).

Maglev needs no memory of the previous table, but when a backend goes, more than its
own slots change hands, the more so the fewer slots each backend has: the paper
recommends ``M`` larger than 100 × backends.  :mod:`.table` moves the minimum instead.
``h1`` and ``h2`` here are BLAKE2b with two personalisations; the loop is plain Python,
so its time says nothing about Maglev's C++ speed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int32]


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def table_size(backends: int, per_backend: int = 100) -> int:
    """The smallest prime ``M ≥ per_backend × backends`` (the paper's advice)."""
    m = max(per_backend * backends, 2)
    while not is_prime(m):
        m += 1
    return m


def _h(name: str, person: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8, person=person).digest())


def permutations(names: Sequence[str], size: int) -> tuple[list[int], list[int]]:
    """Each backend's ``offset`` and ``skip`` for a table of ``size`` (prime) slots."""
    if not is_prime(size):
        raise ValueError(f"Maglev's table size must be prime, not {size}")
    offset = [_h(n, b"maglev-offset") % size for n in names]
    skip = [_h(n, b"maglev-skip") % (size - 1) + 1 for n in names]
    return offset, skip


def populate(
    offset: Sequence[int],
    skip: Sequence[int],
    size: int,
    weight: Sequence[float] | None = None,
) -> IntArray:
    """Pseudocode 1 of the paper: the backend index of each of ``size`` slots."""
    n = len(offset)
    w = [1.0] * n if weight is None else [float(x) for x in weight]
    if len(skip) != n or len(w) != n:
        raise ValueError("offset, skip and weight are one per backend")
    top = max(w, default=0.0)
    if not top > 0 or any(x < 0 for x in w):
        raise ValueError("Maglev needs a backend with a positive weight, and none negative")
    share = [x / top for x in w]
    credit = [0.0] * n
    nxt = [0] * n
    entry = [-1] * size
    filled = 0
    while True:
        for i in range(n):
            credit[i] += share[i]
            if credit[i] < 1.0:
                continue
            credit[i] -= 1.0
            o, s, j = offset[i], skip[i], nxt[i]
            c = (o + j * s) % size
            while entry[c] >= 0:
                j += 1
                c = (o + j * s) % size
            entry[c] = i
            nxt[i] = j + 1
            filled += 1
            if filled == size:
                return np.asarray(entry, dtype=np.int32)


def build(
    names: Sequence[str], size: int = 65_537, weight: Sequence[float] | None = None
) -> IntArray:
    """Maglev's lookup table for backends of these names (65,537 = 2¹⁶ + 1 is prime)."""
    offset, skip = permutations(names, size)
    return populate(offset, skip, size, weight)


def lookup(entry: IntArray, hashes: npt.ArrayLike) -> IntArray:
    """The backend of each flow hash: ``entry[hash mod M]``."""
    h = np.asarray(hashes).astype(np.uint64)
    return entry[(h % np.uint64(entry.size)).astype(np.intp)]
