"""anyedge's own network: sites, their sections and servers, prefixes, BGP sessions.

A *site* is a data centre in a city, named by the IATA code of its airport (``CHC``,
``IAD``).  A large multi-colo site (an MCP in the reference) has several *sections*
(``IAD01`` … ``IAD09``), each a separately failing group of servers between which
Duomog shifts load; a small site has one section.  Capacity is servers x CPU per server,
in ms of CPU time per second.  Each site has three utilisation thresholds (maximum,
target, acceptable) for the Traffic Manager.

Every site announces anycast *prefixes* from one ASN through its own BGP *sessions*:
transit (the neighbour is the site's provider) and peering (settlement-free, with the
access networks in the site's city).  Which site announces which prefix is a boolean
matrix, prefixes x sites.

A prefix may be shared with other *operators* (F-root's prefix is announced both by
ISC's own sites and by a CDN's): an :class:`Operator` names the sites it runs, each of
which originates the prefix from the operator's own ASN; sites no operator claims are
anyedge's and originate from ``Network.asn`` (:meth:`Network.origin_asn`).

Tables hold rows in a canonical order (sites as given, sections grouped by site in
order, sessions sorted by site, relation and ASN) so that two equal networks compare
equal field by field.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from .plans import DEFAULT_PLANS, Plans
from .table import BoolArray, FloatArray, Int8Array, Int32Array, IntArray, Table, frozen_array


class SiteKind(IntEnum):
    SINGLE = 0  # one section
    MCP = 1  # multi-colo point of presence: several sections


# What a community on a session asks the neighbour not to do, as the bits of
# Sessions.block: 1 export to its providers, 2 to its peers, 4 to its customers.
# NO_EXPORT (RFC 1997, 65535:65281) is all three; "no-peers" and "no-providers" are the
# lab's action communities (the neighbour's ASN:990 and :991).
COMMUNITY_BLOCK = {"no-providers": 1, "no-peers": 2, "no-export": 7}


def block_of(communities: Sequence[str]) -> int:
    out = 0
    for c in communities:
        out |= COMMUNITY_BLOCK[c]
    return out


def communities_of(block: int) -> list[str]:
    """The fewest community names that make ``block``."""
    if block == COMMUNITY_BLOCK["no-export"]:
        return ["no-export"]
    return [c for c, b in COMMUNITY_BLOCK.items() if b != 7 and block & b]


class SessionKind(IntEnum):
    TRANSIT = 0  # the neighbour sells us transit (it is our provider)
    PEER = 1  # settlement-free peering


THRESHOLD_NAMES = ("maximum", "target", "acceptable")
DEFAULT_THRESHOLDS = (0.90, 0.85, 0.75)


@dataclass(frozen=True, eq=False)
class Sites(Table):
    code: tuple[str, ...]
    city: tuple[str, ...]
    country: tuple[str, ...]
    lat: FloatArray = field(repr=False)
    lon: FloatArray = field(repr=False)
    kind: Int8Array = field(repr=False)
    thresholds: FloatArray = field(repr=False)  # (n, 3): maximum, target, acceptable

    def __post_init__(self) -> None:
        for name in ("lat", "lon"):
            frozen_array(self, name, np.float64)
        frozen_array(self, "kind", np.int8)
        frozen_array(self, "thresholds", np.float64)
        n = len(self.code)
        if len(self.city) != n or len(self.country) != n:
            raise ValueError("site names must align")
        if self.lat.shape != (n,) or self.lon.shape != (n,) or self.kind.shape != (n,):
            raise ValueError("site arrays must have one entry per site")
        if self.thresholds.shape != (n, 3):
            raise ValueError("thresholds must be (sites, 3)")
        if len(set(self.code)) != n:
            raise ValueError("site codes must be unique")
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.code)})

    def __len__(self) -> int:
        return len(self.code)

    def index(self, code: str) -> int:
        """Row of the site with IATA ``code``; KeyError if there is none."""
        return self._index[code]  # type: ignore[attr-defined, no-any-return]


@dataclass(frozen=True, eq=False)
class Sections(Table):
    name: tuple[str, ...]
    site: Int32Array = field(repr=False)
    servers: IntArray = field(repr=False)
    cpu_per_server: FloatArray = field(repr=False)  # ms/s

    def __post_init__(self) -> None:
        frozen_array(self, "site", np.int32)
        frozen_array(self, "servers", np.int64)
        frozen_array(self, "cpu_per_server", np.float64)
        n = len(self.name)
        if any(a.shape != (n,) for a in (self.site, self.servers, self.cpu_per_server)):
            raise ValueError("section arrays must have one entry per section")
        if n and np.any(np.diff(self.site) < 0):
            raise ValueError("sections must be grouped by site, in site order")
        if np.any(self.servers < 0) or np.any(self.cpu_per_server < 0):
            raise ValueError("servers and CPU per server must be non-negative")

    def __len__(self) -> int:
        return len(self.name)

    @property
    def capacity(self) -> FloatArray:
        """CPU capacity of each section in ms/s."""
        return np.asarray(self.servers * self.cpu_per_server)


@dataclass(frozen=True, eq=False)
class Prefixes(Table):
    cidr: tuple[str, ...]
    announced: BoolArray = field(repr=False)  # (prefixes, sites)

    def __post_init__(self) -> None:
        frozen_array(self, "announced", np.bool_)
        if self.announced.ndim != 2 or self.announced.shape[0] != len(self.cidr):
            raise ValueError("announced must be (prefixes, sites)")
        nets = tuple(ipaddress.ip_network(c) for c in self.cidr)
        if tuple(str(n) for n in nets) != self.cidr:
            raise ValueError("prefixes must be in canonical CIDR form")
        object.__setattr__(self, "_nets", nets)

    def __len__(self) -> int:
        return len(self.cidr)

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return self._nets  # type: ignore[attr-defined, no-any-return]

    @property
    def version(self) -> Int8Array:
        return np.array([n.version for n in self.networks], dtype=np.int8)


@dataclass(frozen=True, eq=False)
class Sessions(Table):
    """BGP sessions of the sites with the Internet, sorted by (site, kind, asn).

    ``prepend`` is how many extra times the site puts its ASN on what it announces over
    that session alone (on top of the prefix's own prepend, :class:`Announcement`): the
    neighbour sees an AS path that much longer.  ``med`` is the MED the site sends on it
    (the neighbour prefers the lowest among routes from us of equal length), ``block``
    what the communities on it ask the neighbour not to do (bits of
    :class:`anyedge.routing.announce.Block`: 1 no export to its providers, 2 to its peers,
    4 to its customers; NO_EXPORT is 7).  Empty arrays mean none anywhere."""

    site: Int32Array = field(repr=False)
    asn: IntArray = field(repr=False)
    kind: Int8Array = field(repr=False)
    prepend: IntArray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    med: IntArray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    block: Int8Array = field(repr=False, default_factory=lambda: np.zeros(0, np.int8))

    def __post_init__(self) -> None:
        frozen_array(self, "site", np.int32)
        frozen_array(self, "asn", np.int64)
        frozen_array(self, "kind", np.int8)
        n = self.site.shape[0]
        for name, dtype in (("prepend", np.int64), ("med", np.int64), ("block", np.int8)):
            if np.asarray(getattr(self, name)).size == 0:
                object.__setattr__(self, name, np.zeros(n, dtype))
            frozen_array(self, name, dtype)
        shapes = {a.shape for a in (self.asn, self.kind, self.prepend, self.med, self.block)}
        if shapes != {(n,)}:
            raise ValueError("session arrays must align")
        if np.any((self.prepend < 0) | (self.prepend > 32)):
            raise ValueError("a session's prepend count is between 0 and 32")
        if n:
            order = np.lexsort((self.asn, self.kind, self.site))
            if np.any(order != np.arange(n)):
                raise ValueError("sessions must be sorted by site, kind and ASN")
            if np.unique(np.stack([self.site, self.asn]), axis=1).shape[1] != n:
                raise ValueError("a site has two sessions with the same neighbour")

    def __len__(self) -> int:
        return int(self.site.shape[0])

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[tuple[int, int, int]],
        prepend: Sequence[int] | None = None,
        med: Sequence[int] | None = None,
        block: Sequence[int] | None = None,
    ) -> Sessions:
        """Sessions from (site, asn, kind) rows in any order (and each row's prepend,
        MED and community bits)."""
        arr = np.array(rows, dtype=np.int64).reshape(-1, 3)

        def col(v: Sequence[int] | None) -> IntArray:
            return np.zeros(len(arr), np.int64) if v is None else np.asarray(v, np.int64)

        order = np.lexsort((arr[:, 1], arr[:, 2], arr[:, 0]))
        return cls(
            site=arr[order, 0],
            asn=arr[order, 1],
            kind=arr[order, 2],
            prepend=col(prepend)[order],
            med=col(med)[order],
            block=col(block)[order],
        )

    def prepend_of(self, site: int, asn: int) -> int:
        """The prepend of ``site``'s session with ``asn`` (0 if there is none)."""
        hit = np.flatnonzero((self.site == site) & (self.asn == asn))
        return int(self.prepend[hit[0]]) if hit.size else 0


@dataclass(frozen=True)
class Operator:
    """Another operator's sites on anyedge's prefixes, originating from its own ASN."""

    name: str
    asn: int
    sites: tuple[int, ...]  # site rows


@dataclass(frozen=True, eq=False)
class Network(Table):
    """Everything anyedge owns: one ASN, its sites, sections, prefixes and sessions."""

    asn: int
    sites: Sites
    sections: Sections
    prefixes: Prefixes
    sessions: Sessions
    plans: Plans = field(default_factory=lambda: DEFAULT_PLANS)
    operators: tuple[Operator, ...] = ()  # sites run by others on the same prefixes

    def __post_init__(self) -> None:
        n = len(self.sites)
        claimed: set[int] = set()
        asns = {self.asn}
        for o in self.operators:
            if o.asn in asns:
                raise ValueError(f"operator {o.name}'s ASN {o.asn} is already used")
            asns.add(o.asn)
            for s in o.sites:
                if not 0 <= s < n:
                    raise ValueError(f"operator {o.name} refers to a site that does not exist")
                if s in claimed:
                    raise ValueError(f"site {self.sites.code[s]} belongs to two operators")
                claimed.add(s)
        if len(self.sections) and (self.sections.site.min() < 0 or self.sections.site.max() >= n):
            raise ValueError("a section refers to a site that does not exist")
        if self.prefixes.announced.shape[1] != n:
            raise ValueError("announced must have one column per site")
        if len(self.sessions) and (self.sessions.site.min() < 0 or self.sessions.site.max() >= n):
            raise ValueError("a session refers to a site that does not exist")

    def origin_asn(self) -> IntArray:
        """The ASN each site originates the prefixes from (its operator's)."""
        out = np.full(len(self.sites), self.asn, dtype=np.int64)
        for o in self.operators:
            out[list(o.sites)] = o.asn
        return out

    def operator_names(self) -> tuple[str, ...]:
        """Each site's operator: its name, or ``""`` for anyedge's own sites."""
        names = [""] * len(self.sites)
        for o in self.operators:
            for s in o.sites:
                names[s] = o.name
        return tuple(names)

    def site_capacity(self) -> FloatArray:
        """CPU capacity of each site in ms/s (sum over its sections)."""
        return np.bincount(
            self.sections.site, weights=self.sections.capacity, minlength=len(self.sites)
        ).astype(np.float64)

    def site_sections(self, site: int) -> range:
        """Section rows of one site (they are contiguous)."""
        lo = int(np.searchsorted(self.sections.site, site, side="left"))
        hi = int(np.searchsorted(self.sections.site, site, side="right"))
        return range(lo, hi)
