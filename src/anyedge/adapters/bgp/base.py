"""What every BGP speaker driver offers the lab: configuration in, routes out.

A *site speaker* is the BGP daemon of one of anyedge's sites.  It originates the anycast
prefixes the site may announce and nothing else: it learns no routes (import none) and
so re-advertises none.  Drivers exist for FRR, BIRD, GoBGP and ExaBGP
(:mod:`.frr`, :mod:`.bird`, :mod:`.gobgp`, :mod:`.exabgp`); the topology names the
speaker of each site and the lab mixes them.

Every driver takes a :class:`SpeakerConfig` (the same for all kinds) and offers:

* ``start()`` — write its configuration under ``workdir`` and start the daemon inside
  the node's namespace, announcing the :class:`Route` set given; returns the pids it
  started (the lab records them);
* ``apply(routes)`` — make the daemon announce exactly ``routes`` (absolute, idempotent:
  prefixes not listed are withdrawn, a changed prepend count is re-announced);
* ``assume(routes)`` — tell a driver made afresh (by a later command) what the running
  daemon announces now, so that ``apply`` withdraws what is no longer wanted;
* ``established()`` — how many of its BGP sessions are up;
* ``sessions()`` — per neighbour address, whether its session is established, as the
  daemon itself sees it (what ``anyedge lab status`` shows).

In a dual-stack lab (``SpeakerConfig.ipv6``) the same sessions carry IPv6 unicast
beside IPv4, and routes may be IPv6 prefixes, sent with the node's IPv6 address on the
link (``Neighbor.local_address6``) as their next hop.  The topology checks refuse an IPv6
prefix at a site whose speaker does not do this yet
(:data:`anyedge.model.files.labv6.IPV6_SPEAKERS`).

The ASN is prepended ``prepend`` extra times; the origin attribute is always IGP and
the MED is absent or 0 (FRR's ``network`` statements attach 0; absent counts as 0), so
that the routers' decision between two sites comes down to the path length and then the
router id (see :mod:`anyedge.lab.plan`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Timers:
    """BGP timers in seconds, tuned for a lab by default."""

    keepalive: int = 1
    hold: int = 3
    connect_retry: int = 1
    bfd_interval_ms: int = 300  # BFD transmit and receive interval, where both ends run it
    bfd_multiplier: int = 3  # packets missed before BFD declares the neighbour down


@dataclass(frozen=True)
class Neighbor:
    address: str  # the peer's IPv4 address on the shared link
    asn: int
    local_address: str  # this node's address on that link
    interface: str  # this node's interface on that link
    bfd: bool = False  # the neighbour runs BFD too (FRR and BIRD do; GoBGP, ExaBGP do not)
    prepend: int = 0  # extra copies of the ASN on everything sent to this neighbour alone
    med: int = 0  # the MED sent to this neighbour (0: none, or FRR's 0)
    communities: tuple[str, ...] = ()  # "ASN:VALUE" standard communities added for it
    local_address6: str = ""  # this node's IPv6 address on that link (a dual-stack lab)

    @property
    def shaped(self) -> bool:
        """Does this session change what is sent over it (prepend, MED, communities)?"""
        return bool(self.prepend or self.med or self.communities)


@dataclass(frozen=True)
class Route:
    prefix: str  # CIDR
    prepend: int = 0  # extra copies of the ASN in the AS path


@dataclass(frozen=True)
class SpeakerConfig:
    node: str
    namespace: str
    workdir: Path  # the node's own directory: configuration, pid files, sockets, log
    asn: int
    router_id: str
    neighbors: tuple[Neighbor, ...]
    timers: Timers = Timers()
    ipv6: bool = False  # the sessions (over IPv4) carry IPv6 unicast too (MP-BGP)


class SiteSpeaker(Protocol):
    config: SpeakerConfig

    def start(self, routes: Iterable[Route]) -> list[int]: ...

    def apply(self, routes: Iterable[Route]) -> None: ...

    def assume(self, routes: Iterable[Route]) -> None: ...

    def established(self) -> int: ...

    def sessions(self) -> dict[str, bool]: ...


class SpeakerError(RuntimeError):
    """A speaker did not start or did not take a change."""


def run_tool(node: str, argv: Sequence[str], timeout: float = 10.0) -> str:
    """Run a daemon's control tool (vtysh, birdc, gobgp); its output, or
    :class:`SpeakerError` naming the node, the command and what it said."""
    name = Path(argv[0]).name
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise SpeakerError(f"{node}: {name} {argv[1:]}: no answer in {timeout:g} s") from None
    if p.returncode != 0:
        raise SpeakerError(f"{node}: {name} {argv[1:]}: {p.stdout}{p.stderr}")
    return p.stdout


def by_prefix(routes: Iterable[Route]) -> Mapping[str, Route]:
    out: dict[str, Route] = {}
    for r in routes:
        if not 0 <= r.prepend <= 32:
            raise ValueError(f"prepend count must be between 0 and 32, got {r.prepend}")
        out[r.prefix] = r
    return out
