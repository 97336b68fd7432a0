"""The private backbone between sites, and the origins cache misses are fetched from.

A *backbone link* joins two sites with fibre anyedge owns or leases: its one-way latency
comes from the fibre's route length (``km``, the great circle times a route factor, as
cables follow coasts and roads) at about 200 km per millisecond, and it carries up to
``capacity_gbps``.  Links are undirected and kept sorted by (a, b) with ``a < b``.

*Transit* from each site is its transit sessions (:class:`~.network.Sessions`); how far a
site's transit strays from the great circle beyond the world's :class:`~.geo.LatencyModel`
is its ``transit_detour`` factor (1.0 where transit is as good as the latency model says;
more where traffic trombones out of the region, as from Johannesburg).

An *origin* is a customer's server in a real city; :mod:`anyedge.backbone` chooses, for
each (landing site, origin), direct transit or the backbone to another site then transit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .table import FloatArray, Int32Array, Table, frozen_array

FIBRE_KM_PER_MS = 200.0  # one way: light in glass


@dataclass(frozen=True, eq=False)
class BackboneLinks(Table):
    a: Int32Array = field(default_factory=lambda: np.zeros(0, np.int32), repr=False)
    b: Int32Array = field(default_factory=lambda: np.zeros(0, np.int32), repr=False)
    km: FloatArray = field(default_factory=lambda: np.zeros(0), repr=False)  # fibre route
    capacity_gbps: FloatArray = field(default_factory=lambda: np.zeros(0), repr=False)

    def __post_init__(self) -> None:
        frozen_array(self, "a", np.int32)
        frozen_array(self, "b", np.int32)
        frozen_array(self, "km", np.float64)
        frozen_array(self, "capacity_gbps", np.float64)
        n = self.a.shape[0]
        if any(x.shape != (n,) for x in (self.b, self.km, self.capacity_gbps)):
            raise ValueError("backbone link arrays must align")
        if np.any(self.a >= self.b):
            raise ValueError("a backbone link joins two different sites, lower row first")
        if n and np.any(np.diff(self.a.astype(np.int64) * 2**32 + self.b) <= 0):
            raise ValueError("backbone links must be sorted by (a, b) without duplicates")
        if np.any(~(self.km > 0)) or np.any(~(self.capacity_gbps > 0)):
            raise ValueError("backbone links need a positive length and capacity")

    def __len__(self) -> int:
        return int(self.a.shape[0])

    @property
    def latency_ms(self) -> FloatArray:
        """One-way latency of each link."""
        return np.asarray(self.km / FIBRE_KM_PER_MS)

    @classmethod
    def from_rows(cls, rows: list[tuple[int, int, float, float]]) -> BackboneLinks:
        """Links from (site, site, km, Gbps) rows in any order and orientation."""
        norm = sorted((min(a, b), max(a, b), km, g) for a, b, km, g in rows)
        if not norm:
            return cls()
        a, b, km, g = zip(*norm, strict=True)
        return cls(a=np.array(a), b=np.array(b), km=np.array(km), capacity_gbps=np.array(g))


@dataclass(frozen=True, eq=False)
class Origins(Table):
    name: tuple[str, ...] = ()
    city: tuple[str, ...] = ()
    country: tuple[str, ...] = ()
    lat: FloatArray = field(default_factory=lambda: np.zeros(0), repr=False)
    lon: FloatArray = field(default_factory=lambda: np.zeros(0), repr=False)

    def __post_init__(self) -> None:
        frozen_array(self, "lat", np.float64)
        frozen_array(self, "lon", np.float64)
        n = len(self.name)
        if len(self.city) != n or len(self.country) != n:
            raise ValueError("origin names must align")
        if self.lat.shape != (n,) or self.lon.shape != (n,):
            raise ValueError("origin arrays must have one entry per origin")
        if len(set(self.name)) != n:
            raise ValueError("origin names must be unique")
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.name)})

    def __len__(self) -> int:
        return len(self.name)

    def index(self, name: str) -> int:
        """Row of the origin called ``name``; KeyError if there is none."""
        return self._index[name]  # type: ignore[attr-defined, no-any-return]


@dataclass(frozen=True, eq=False)
class Backbone(Table):
    """Backbone links, each site's transit detour, and the origins behind transit."""

    links: BackboneLinks = field(default_factory=BackboneLinks)
    transit_detour: FloatArray = field(default_factory=lambda: np.zeros(0), repr=False)
    origins: Origins = field(default_factory=Origins)

    def __post_init__(self) -> None:
        if len(self.transit_detour) and np.all(np.asarray(self.transit_detour) == 1.0):
            object.__setattr__(self, "transit_detour", np.zeros(0))  # one canonical form
        frozen_array(self, "transit_detour", np.float64)
        if self.transit_detour.ndim != 1 or np.any(~(self.transit_detour >= 1.0)):
            raise ValueError("transit detours are factors of at least 1")

    def detour(self, sites: int) -> FloatArray:
        """Each of ``sites`` sites' transit detour (1.0 where none is given)."""
        if len(self.transit_detour) not in (0, sites):
            raise ValueError("transit_detour must have one entry per site")
        if not len(self.transit_detour):
            return np.ones(sites)
        return self.transit_detour
