"""Server weights from measured CPU: the Traffic Manager's finest granularity.

The traffic manager post moves traffic between data centers (Plurimog) and between the
sections of one (Duomog); inside a section, Unimog spreads it over the servers, and a
server that runs hotter than the others gets a smaller share of the buckets.  This is
the rule that sets those shares from what the servers report.

Each server ``i`` has a weight ``w`` (its share of the buckets is ``w / Σw``), a
capacity ``C`` and a measured CPU time ``t`` (both in ms/s, so its utilisation is
``u = t / C``).  If traffic is spread evenly over the buckets, ``u`` grows in
proportion to ``w``: ``u = w × k`` for a factor ``k`` that holds the server's speed, its
capacity and the traffic's cost.  Every server is at the same utilisation when
``w ∝ 1 / k = w / u``, i.e. weight ∝ capacity / (CPU time per unit of weight).  So:

    ideal = w / max(u, floor), scaled so that Σ ideal = Σ w
    new   = (1 - damping) × w + damping × ideal

``damping`` (0–1] is how far one step goes: 1 jumps to the ideal (exact if load is
linear and measured without noise), smaller values halve, quarter, ... the imbalance
step by step and keep measurement noise from shaking the table.  ``floor`` keeps an
idle server from claiming an unbounded weight.  A server of weight 0 (draining,
removed, or new and not yet measured) keeps 0; the total weight does not change.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def weights_from_cpu(
    weight: npt.ArrayLike,
    cpu: npt.ArrayLike,
    capacity: npt.ArrayLike,
    *,
    damping: float = 0.5,
    floor: float = 0.02,
) -> FloatArray:
    """New server weights that even out utilisation (see the module docstring).

    ``weight``: current weights (≥ 0); ``cpu``: measured CPU time per server (ms/s);
    ``capacity``: each server's CPU capacity (ms/s, > 0)."""
    w = np.asarray(weight, dtype=np.float64)
    t = np.asarray(cpu, dtype=np.float64)
    c = np.asarray(capacity, dtype=np.float64)
    if not w.shape == t.shape == c.shape or w.ndim != 1:
        raise ValueError("weight, cpu and capacity are one number per server each")
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(t)) and np.all(np.isfinite(c))):
        raise ValueError("weight, cpu and capacity must be finite")
    if np.any(w < 0) or np.any(t < 0) or np.any(c <= 0):
        raise ValueError("weights and CPU time must be non-negative, capacities positive")
    if not 0 < damping <= 1:
        raise ValueError("damping must be in (0, 1]")
    if not 0 < floor <= 1:
        raise ValueError("floor must be in (0, 1]")
    live = w > 0
    if not live.any():
        return w.copy()
    u = np.maximum(t / c, floor)
    ideal = np.where(live, w / u, 0.0)
    ideal *= w.sum() / ideal.sum()
    return np.asarray((1.0 - damping) * w + damping * ideal, dtype=np.float64)
