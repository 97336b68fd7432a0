"""Distances and round-trip times on the Earth.

Light in fibre covers about 200 km per millisecond, so a round trip covers about 100 km
of great-circle distance per millisecond.  Real paths are longer than the great circle
(cables follow coasts, routes detour through exchange points), so the distance is
multiplied by a path-inflation factor; the last mile adds an access delay.  With the
defaults below London–New York comes out near 74 ms and Sydney–Auckland near 30 ms,
close to what is measured between those cities.

Every function broadcasts over numpy arrays, so one call gives the whole matrix between
all metros and all sites.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_KM = 6371.0088
FIBRE_KM_PER_MS_RTT = 100.0

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike


def great_circle_km(
    lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike
) -> FloatArray:
    """Haversine distance in kilometres; arguments in degrees, broadcast together."""
    p1 = np.radians(np.asarray(lat1, dtype=np.float64))
    p2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dp = p2 - p1
    dl = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """Round-trip time = access delay + inflation x great-circle km / (100 km per ms)."""

    inflation: float = 1.3
    access_ms: float = 2.0
    km_per_ms_rtt: float = FIBRE_KM_PER_MS_RTT

    def __post_init__(self) -> None:
        if not self.inflation >= 1.0:
            raise ValueError(f"path inflation must be at least 1, got {self.inflation}")
        if not self.access_ms >= 0.0:
            raise ValueError(f"access delay must be non-negative, got {self.access_ms}")
        if not self.km_per_ms_rtt > 0.0:
            raise ValueError(f"km per ms must be positive, got {self.km_per_ms_rtt}")

    def rtt_from_km(self, km: ArrayLike) -> FloatArray:
        return np.asarray(self.access_ms + self.inflation * np.asarray(km) / self.km_per_ms_rtt)

    def rtt_ms(
        self, lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike
    ) -> FloatArray:
        """Round-trip time in ms between points, broadcast like :func:`great_circle_km`."""
        return self.rtt_from_km(great_circle_km(lat1, lon1, lat2, lon2))

    def rtt_matrix(
        self, lat_a: ArrayLike, lon_a: ArrayLike, lat_b: ArrayLike, lon_b: ArrayLike
    ) -> FloatArray:
        """(len(a), len(b)) matrix of round-trip times."""
        la, lo = np.asarray(lat_a)[:, None], np.asarray(lon_a)[:, None]
        return self.rtt_ms(la, lo, np.asarray(lat_b)[None, :], np.asarray(lon_b)[None, :])
