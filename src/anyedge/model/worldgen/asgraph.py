"""CAIDA-like AS graphs of any size, for benchmarks and tests of the routing engine.

The shape of the real AS graph in miniature: a tier-1 clique at the top, transit
providers that buy from tier-1s and from each other (always from ASes created before
them, so the hierarchy has no loop), stubs at the bottom with one to three providers
and, now and then, a tier-1 directly; some peering between transits.  A 70,000-AS
graph has about 120,000 customer-provider links, like a recent CAIDA snapshot's stub
fringe.  ASNs are 1..n; deterministic for the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..internet import Eyeballs, Internet, Metros

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class ASGraph:
    asn: IntArray  # 1..n, sorted
    p2c: IntArray  # (E, 2) provider row, customer row
    p2p: IntArray  # (P, 2) lower row first

    def internet(self) -> Internet:
        """As a bare :class:`Internet` (no metros, no demand)."""
        n = self.asn.size
        o1 = np.lexsort((self.p2c[:, 1], self.p2c[:, 0]))
        o2 = np.lexsort((self.p2p[:, 1], self.p2p[:, 0]))
        pairs = np.zeros((0, 2), dtype=np.int32)
        return Internet(
            asn=self.asn,
            kind=np.zeros(n, dtype=np.int8),
            name=("",) * n,
            country=("",) * n,
            p2c=self.p2c[o1],
            p2p=self.p2p[o2],
            metros=Metros.empty(),
            presence=pairs,
            eyeballs=Eyeballs.empty(4),
        )


def caida_like(
    n: int,
    seed: int = 1,
    tier1: int = 12,
    transits: int | None = None,
    transit_peers: int | None = None,
) -> ASGraph:
    """A CAIDA-like graph of ``n`` ASes (see the module doc)."""
    rng = np.random.default_rng(seed)
    t = transits if transits is not None else max(4, n // 175)
    t = min(t, n - tier1)
    stubs = n - tier1 - t
    if stubs < 0 or tier1 < 1:
        raise ValueError("need at least one tier-1 and room for the transits")
    # transit i (row tier1+i) buys from 1-3 ASes among the tier-1s and earlier transits
    rows: list[IntArray] = []
    for i in range(t):
        me = tier1 + i
        want = int(rng.integers(1, 4))
        provs = rng.choice(me, size=min(want, me), replace=False)  # among rows 0..me-1
        rows.append(np.stack([provs, np.full(provs.size, me)], axis=1))
    # stubs buy from 1-3 transits, sometimes also a tier-1
    s_rows = tier1 + t + np.arange(stubs)
    per_stub = rng.choice([1, 2, 3], size=stubs, p=[0.5, 0.35, 0.15])
    cust = np.repeat(s_rows, per_stub)
    prov = tier1 + rng.integers(0, t, size=cust.size)
    extra = rng.random(stubs) < 0.05
    cust = np.concatenate([cust, s_rows[extra]])
    prov = np.concatenate([prov, rng.integers(0, tier1, size=int(extra.sum()))])
    rows.append(np.stack([prov, cust], axis=1))
    p2c = np.unique(np.concatenate(rows), axis=0)
    # peering: the tier-1 clique, plus transit pairs not already customer and provider
    a, b = np.triu_indices(tier1, k=1)
    peers = [np.stack([a, b], axis=1)]
    want = transit_peers if transit_peers is not None else t * 2
    if t >= 2 and want:
        x = tier1 + rng.integers(0, t, size=(want * 2, 2))
        x = np.sort(x, axis=1)
        x = x[x[:, 0] != x[:, 1]]
        related = set(map(tuple, np.sort(p2c, axis=1).tolist()))
        x = np.array(
            [r for r in np.unique(x, axis=0).tolist() if tuple(r) not in related][:want],
            dtype=np.int64,
        ).reshape(-1, 2)
        peers.append(x)
    p2p = np.unique(np.concatenate(peers), axis=0)
    return ASGraph(
        asn=np.arange(1, n + 1, dtype=np.int64), p2c=p2c.astype(np.int64), p2p=p2p.astype(np.int64)
    )
