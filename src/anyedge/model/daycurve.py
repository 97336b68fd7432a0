"""Demand over a day: every metro follows its own local time.

Requests rise through the morning, dip after lunch, peak in the evening around 21:00
and fall to about a third of the peak before dawn — the familiar shape of eyeball
traffic.  Local time is solar time from the metro's longitude (15° per hour), close
enough to civil time for load that follows the sun.  The world's eyeball demand is each
(AS, metro)'s evening peak, so the factor is 1 at the peak hour.  The digital twin
(:mod:`anyedge.sim`) drives its demand with this curve, and the world builder sizes
each site on the busiest moment of its catchment under it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]

# relative demand at each local hour 0..23 (peak 1.0 at 21:00)
PROFILE = np.array(
    [
        0.62,
        0.48,
        0.39,
        0.34,
        0.32,
        0.33,
        0.38,
        0.48,
        0.60,
        0.70,
        0.76,
        0.79,
        0.80,
        0.79,
        0.77,
        0.77,
        0.79,
        0.82,
        0.86,
        0.92,
        0.98,
        1.00,
        0.93,
        0.78,
    ]
)


def local_hours(lon: npt.ArrayLike, utc_hour: float) -> FloatArray:
    return np.asarray((utc_hour + np.asarray(lon, dtype=np.float64) / 15.0) % 24.0)


def diurnal(hours: npt.ArrayLike) -> FloatArray:
    """Demand factor at each local hour (continuous, periodic)."""
    h = np.asarray(hours, dtype=np.float64) % 24.0
    floor = np.floor(h)
    frac = h - floor
    lo = floor.astype(np.int64) % 24  # a tiny negative hour is 24.0 modulo 24
    return np.asarray(PROFILE[lo] * (1 - frac) + PROFILE[(lo + 1) % 24] * frac)
