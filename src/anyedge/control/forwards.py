"""The forwards in force, as a sparse table: only the pairs that forward.

Entry ``k`` sends ``share[k]`` of site ``src[k]``'s own users' traffic of plan
``plan[k]`` to site ``dst[k]``; ``cpu[k]`` is the CPU time in ms/s it carried when it was
last decided.  Entries are sorted by (src, plan, dst), one per triple, every share
positive.  A network of 3,000 sites with a few hundred forwards keeps a few hundred
rows here, where a dense (sites, plans, sites) array would hold 36 million.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

TINY = 1e-12  # a share at or below this is no forward


@dataclass(frozen=True)
class Forwards:
    src: IntArray
    plan: IntArray
    dst: IntArray
    share: FloatArray
    cpu: FloatArray

    @classmethod
    def empty(cls) -> Forwards:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z, np.zeros(0), np.zeros(0))

    @classmethod
    def of(
        cls,
        src: npt.ArrayLike,
        plan: npt.ArrayLike,
        dst: npt.ArrayLike,
        share: npt.ArrayLike,
        cpu: npt.ArrayLike | None = None,
    ) -> Forwards:
        """Entries in any order; repeated triples are added up, empty shares dropped."""
        s = np.asarray(src, dtype=np.int64).ravel()
        p = np.asarray(plan, dtype=np.int64).ravel()
        d = np.asarray(dst, dtype=np.int64).ravel()
        sh = np.asarray(share, dtype=np.float64).ravel()
        c = np.zeros(sh.size) if cpu is None else np.asarray(cpu, dtype=np.float64).ravel()
        if not s.size:
            return cls.empty()
        order = np.lexsort((d, p, s))
        s, p, d, sh, c = s[order], p[order], d[order], sh[order], c[order]
        new = np.ones(s.size, dtype=np.bool_)
        new[1:] = (s[1:] != s[:-1]) | (p[1:] != p[:-1]) | (d[1:] != d[:-1])
        group = np.cumsum(new) - 1
        n = int(group[-1]) + 1
        share_sum = np.asarray(np.bincount(group, weights=sh, minlength=n), dtype=np.float64)
        cpu_sum = np.asarray(np.bincount(group, weights=c, minlength=n), dtype=np.float64)
        s, p, d = s[new], p[new], d[new]
        keep = share_sum > TINY
        return cls(s[keep], p[keep], d[keep], share_sum[keep], np.maximum(cpu_sum[keep], 0.0))

    @classmethod
    def from_dense(cls, share: npt.ArrayLike, cpu: npt.ArrayLike | None = None) -> Forwards:
        """From a (sites, plans, sites) array of shares (and one of CPU time)."""
        a = np.asarray(share, dtype=np.float64)
        s, p, d = np.nonzero(a > TINY)
        c = None if cpu is None else np.asarray(cpu, dtype=np.float64)[s, p, d]
        return cls.of(s, p, d, a[s, p, d], c)

    def dense(self, sites: int, plans: int) -> FloatArray:
        """The shares as a (sites, plans, sites) array (for small networks and tests)."""
        out = np.zeros((sites, plans, sites))
        out[self.src, self.plan, self.dst] = self.share
        return out

    def __len__(self) -> int:
        return int(self.src.size)

    def kept(self, sites: int, plans: int) -> FloatArray:
        """(sites, plans): the share of each site's own plan traffic it serves itself."""
        out = np.ones((sites, plans))
        np.subtract.at(out, (self.src, self.plan), self.share)
        return np.asarray(np.clip(out, 0.0, 1.0))

    def forwarding(self, sites: int) -> npt.NDArray[np.bool_]:
        out = np.zeros(sites, dtype=np.bool_)
        out[self.src] = True
        return out

    def receiving(self, sites: int) -> npt.NDArray[np.bool_]:
        out = np.zeros(sites, dtype=np.bool_)
        out[self.dst] = True
        return out

    def with_cpu(self, cpu: npt.ArrayLike) -> Forwards:
        return Forwards(self.src, self.plan, self.dst, self.share, np.asarray(cpu, np.float64))
