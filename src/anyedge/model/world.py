"""A world: anyedge's network, the Internet it is attached to, and how latency behaves.

This is the one object the rest of anyedge takes: the routing engine computes
catchments over it, the predictor and the Traffic Manager reason about its sites, the
twin runs it through a day, the lab builds its ``lab`` part.  Loaded from a topology
YAML (:mod:`anyedge.model.files`) or built by :mod:`anyedge.model.worldgen`.

Latency is the latency model's (access delay + inflation x distance) unless the world
carries its own last mile: ``access_ms``, one access round trip per eyeball row (the
calibrated world's, :mod:`anyedge.model.worldgen.lastmile`), which then replaces the
model's flat access delay for users — in the routing engine's round trips
(:meth:`eyeball_rtt_ms`) and in the geography-only bound (:meth:`metro_site_rtt`, with
each metro's demand-weighted access delay).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .backbone import Backbone
from .geo import LatencyModel
from .internet import Internet
from .lab import Lab
from .network import Network
from .table import FloatArray, Int32Array, Table, frozen_array


@dataclass(frozen=True, eq=False)
class World(Table):
    network: Network
    internet: Internet
    latency: LatencyModel = field(default_factory=LatencyModel)
    lab: Lab = field(default_factory=Lab)
    backbone: Backbone = field(default_factory=Backbone)
    access_ms: FloatArray = field(default_factory=lambda: np.zeros(0), repr=False)

    def __post_init__(self) -> None:
        frozen_array(self, "access_ms", np.float64)
        if self.access_ms.size and self.access_ms.shape != (len(self.internet.eyeballs),):
            raise ValueError("access_ms must have one entry per eyeball row (or none)")
        if np.any(self.access_ms < 0):
            raise ValueError("access delays must be non-negative")
        plans = len(self.network.plans)
        if self.internet.eyeballs.mix.shape[1] != plans:
            raise ValueError("eyeball plan mix must have one column per plan")
        if len(self.network.sessions):
            self.internet.indices(self.network.sessions.asn)  # KeyError if unknown
        if self.network.asn in set(self.internet.asn.tolist()):
            raise ValueError(f"anyedge's ASN {self.network.asn} is also an Internet AS")
        for o in self.network.operators:
            if o.asn in set(self.internet.asn.tolist()):
                raise ValueError(f"operator {o.name}'s ASN {o.asn} is also an Internet AS")
        links, n = self.backbone.links, len(self.network.sites)
        if len(links) and int(links.b.max()) >= n:
            raise ValueError("a backbone link refers to a site that does not exist")
        self.backbone.detour(n)  # ValueError unless one per site (or none)

    @property
    def session_as(self) -> Int32Array:
        """Internet row of each session's neighbour."""
        return self.internet.indices(self.network.sessions.asn)

    def eyeball_cpu(self) -> FloatArray:
        """Peak CPU time each eyeball row would cost, in ms/s."""
        e = self.internet.eyeballs
        return np.asarray(e.rps * self.network.plans.cost_per_request(e.mix))

    def peak_demand_rps(self) -> float:
        return float(self.internet.eyeballs.rps.sum())

    def peak_demand_cpu(self) -> float:
        return float(self.eyeball_cpu().sum())

    def eyeball_access_ms(self) -> FloatArray:
        """Access round trip of every eyeball row: the world's own, or the model's flat one."""
        if self.access_ms.size:
            return self.access_ms
        return np.full(len(self.internet.eyeballs), self.latency.access_ms)

    def eyeball_rtt_ms(self, km: FloatArray) -> FloatArray:
        """Round trips of the eyeball rows whose paths are ``km`` long (one per row)."""
        if not self.access_ms.size:
            return self.latency.rtt_from_km(km)
        path = self.latency.rtt_from_km(km) - self.latency.access_ms
        return np.asarray(path + self.eyeball_access_ms())

    def metro_site_rtt(self) -> FloatArray:
        """(metros, sites) round-trip times by geography alone, in ms."""
        m, s = self.internet.metros, self.network.sites
        rtt = self.latency.rtt_matrix(m.lat, m.lon, s.lat, s.lon)
        if not self.access_ms.size:
            return rtt
        e = self.internet.eyeballs
        w = np.bincount(e.metro, weights=e.rps, minlength=len(m))
        acc = np.bincount(e.metro, weights=e.rps * self.access_ms, minlength=len(m))
        metro_access = np.divide(acc, w, out=np.full(len(m), self.latency.access_ms), where=w > 0)
        return np.asarray(rtt - self.latency.access_ms + metro_access[:, None])
