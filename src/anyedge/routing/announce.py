"""What is announced, where: the knobs an operator turns, and the routes they inject.

For anyedge's own prefixes an :class:`Announcement` says, per site, whether the site
announces the prefix, how many times it prepends its ASN, and to whom it announces
(every session, only peers, or only transit).  Turned into :class:`Seeds`, each session
of an announcing site injects one route into its neighbour: a *customer* route into a
transit provider (anyedge is its customer), a *peer* route into a peer, with the AS path
``neighbour, origin, origin × prepend`` — the origin being anyedge's ASN, or, at a site
of another operator sharing the prefix, that operator's (``Network.operators``); the
prepend is the site's for the prefix plus the session's own (``Sessions.prepend``, a
per-session prepend in the topology), so one neighbour can see a longer path than
another.

For a plain CAIDA graph, :meth:`Seeds.origins` makes ASes of the graph the origins
instead (their own route, AS path of length one), the set-up BGPy simulates.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from ..model.network import Network, SessionKind
from ..model.world import World

IntArray = npt.NDArray[np.int64]


class Rank(IntEnum):
    """Preference of a route by how it was learned; lower is better (Gao-Rexford)."""

    ORIGIN = 0
    CUSTOMER = 1
    PEER = 2
    PROVIDER = 3
    NONE = 4


class Block(IntEnum):
    """What the AS holding a seed may not export it to (bits; communities on a session).

    NO_EXPORT (RFC 1997, 65535:65281) keeps the route in that AS: every bit.  The lab's
    action communities ask the neighbour not to announce to its peers or providers."""

    NONE = 0
    PROVIDERS = 1  # the "up" phase
    PEERS = 2  # the "across" phase
    CUSTOMERS = 4  # the "down" phase
    NO_EXPORT = 7


class Scope(IntEnum):
    ALL = 0
    PEERS = 1  # announce only on peering sessions
    TRANSIT = 2  # announce only to transit providers


@dataclass(frozen=True)
class Announcement:
    """Per-site controls for one prefix (arrays indexed by site row)."""

    announced: npt.NDArray[np.bool_]
    prepend: IntArray
    scope: npt.NDArray[np.int8]

    @classmethod
    def everywhere(cls, sites: int) -> Announcement:
        return cls(
            announced=np.ones(sites, dtype=np.bool_),
            prepend=np.zeros(sites, dtype=np.int64),
            scope=np.zeros(sites, dtype=np.int8),
        )

    @classmethod
    def of_prefix(cls, network: Network, prefix: int) -> Announcement:
        """The announcement the topology gives ``prefix`` (a row of network.prefixes)."""
        a = cls.everywhere(len(network.sites))
        return replace(a, announced=network.prefixes.announced[prefix].copy())

    def withdraw(self, *sites: int) -> Announcement:
        announced = self.announced.copy()
        announced[list(sites)] = False
        return replace(self, announced=announced)

    def announce(self, *sites: int) -> Announcement:
        announced = self.announced.copy()
        announced[list(sites)] = True
        return replace(self, announced=announced)

    def with_prepend(self, site: int, times: int) -> Announcement:
        if not 0 <= times <= 32:
            raise ValueError(f"prepend count must be between 0 and 32, got {times}")
        prepend = self.prepend.copy()
        prepend[site] = times
        return replace(self, prepend=prepend)

    def with_scope(self, site: int, scope: Scope) -> Announcement:
        s = self.scope.copy()
        s[site] = scope
        return replace(self, scope=s)


@dataclass(frozen=True)
class Seeds:
    """Routes injected into the graph before propagation, one per row."""

    at: IntArray  # AS row that holds the route
    rank: IntArray  # Rank.ORIGIN, CUSTOMER or PEER
    length: IntArray  # AS-path length at that AS, the AS itself included
    nbr_asn: IntArray  # ASN it was learned from (the final tie-break), 0 for an origin
    tie: IntArray  # after the ASN: the site, so parallel sessions break ties alike
    origin: IntArray  # which origin: a site row, or an index into the origin ASNs
    n_origins: int
    # the session's MED: among seeds at one AS with equal rank, length and neighbour
    # ASN the lowest wins (before the site tie-break); it goes no further than that AS
    med: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    block: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))  # Block bits

    def __post_init__(self) -> None:
        for name in ("med", "block"):
            if getattr(self, name).size != self.at.size:
                object.__setattr__(self, name, np.zeros(self.at.size, np.int64))

    def __len__(self) -> int:
        return int(self.at.shape[0])

    def _select(self, keep: npt.NDArray[np.bool_]) -> Seeds:
        return Seeds(
            self.at[keep],
            self.rank[keep],
            self.length[keep],
            self.nbr_asn[keep],
            self.tie[keep],
            self.origin[keep],
            self.n_origins,
            self.med[keep],
            self.block[keep],
        )

    def without(self, origin: int) -> Seeds:
        """The seeds of every origin but ``origin``."""
        return self._select(self.origin != origin)

    def only(self, origin: int) -> Seeds:
        """The seeds of ``origin`` alone."""
        return self._select(self.origin == origin)

    @classmethod
    def of_world(
        cls, world: World, ann: Announcement, up: npt.NDArray[np.bool_] | None = None
    ) -> Seeds:
        """One seed per session of an announcing site (only sessions ``up``, if given)."""
        net = world.network
        ses = net.sessions
        site = ses.site.astype(np.int64)
        transit = ses.kind == SessionKind.TRANSIT
        scope = ann.scope[site]
        ok = ann.announced[site] & (
            (scope == Scope.ALL)
            | ((scope == Scope.PEERS) & ~transit)
            | ((scope == Scope.TRANSIT) & transit)
        )
        if up is not None:
            ok &= up
        at = world.session_as.astype(np.int64)[ok]
        site = site[ok]
        rank = np.where(transit[ok], Rank.CUSTOMER, Rank.PEER).astype(np.int64)
        return cls(
            at=at,
            rank=rank,
            length=2 + ann.prepend[site] + ses.prepend[ok],
            nbr_asn=net.origin_asn()[site],  # each site's operator's ASN
            tie=site,
            origin=site,
            n_origins=len(net.sites),
            med=ses.med[ok],
            block=ses.block[ok].astype(np.int64),
        )

    @classmethod
    def origins(cls, rows: npt.ArrayLike, prepend: npt.ArrayLike | None = None) -> Seeds:
        """Origin ASes (by row) announcing one prefix themselves, as in BGPy."""
        at = np.asarray(rows, dtype=np.int64)
        k = at.size
        pre = np.zeros(k, dtype=np.int64) if prepend is None else np.asarray(prepend, np.int64)
        return cls(
            at=at,
            rank=np.full(k, Rank.ORIGIN, dtype=np.int64),
            length=1 + pre,
            nbr_asn=np.zeros(k, dtype=np.int64),
            tie=np.zeros(k, dtype=np.int64),
            origin=np.arange(k, dtype=np.int64),
            n_origins=k,
        )
