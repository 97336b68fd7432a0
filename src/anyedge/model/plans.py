"""Customer plans: who is moved first when a site must shed load.

The reference's Traffic Manager moves ``free`` traffic first, then ``pro``, then
``business``; ``enterprise`` last or never.  A :class:`Plans` table lists plans in that
order (lowest priority first), with the share of requests each plan makes on average and
the CPU time one request of the plan costs, in ms.  CPU time per plan in ms/s, the
Traffic Manager's unit, is requests/s x share x cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .table import FloatArray, Table, frozen_array

PLAN_NAMES = ("free", "pro", "business", "enterprise")


@dataclass(frozen=True, eq=False)
class Plans(Table):
    """Plans in priority order, lowest priority first (index = priority)."""

    names: tuple[str, ...]
    share: FloatArray = field(repr=False)
    cpu_ms: FloatArray = field(repr=False)

    def __post_init__(self) -> None:
        frozen_array(self, "share", np.float64)
        frozen_array(self, "cpu_ms", np.float64)
        n = len(self.names)
        if self.share.shape != (n,) or self.cpu_ms.shape != (n,):
            raise ValueError("plan share and cost must have one value per plan")
        if len(set(self.names)) != n:
            raise ValueError(f"plan names repeat: {self.names}")
        if n and (np.any(self.share < 0) or not np.isclose(self.share.sum(), 1.0)):
            raise ValueError("plan shares must be non-negative and sum to 1")
        if np.any(self.cpu_ms <= 0):
            raise ValueError("CPU cost per request must be positive")

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def cost_per_request(self, mix: FloatArray | None = None) -> FloatArray:
        """Mean CPU ms per request for each row of ``mix`` (rows x plans), or the default mix."""
        m = self.share if mix is None else mix
        # elementwise and summed by numpy, not BLAS: the same bits on every machine and
        # thread count, so that predictions computed anywhere agree exactly
        return np.asarray((np.asarray(m) * self.cpu_ms).sum(axis=-1))


DEFAULT_PLANS = Plans(
    names=PLAN_NAMES,
    share=np.array([0.45, 0.20, 0.15, 0.20]),
    cpu_ms=np.array([0.8, 1.0, 1.3, 1.6]),
)
