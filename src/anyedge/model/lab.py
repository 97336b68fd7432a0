"""The lab part of a topology: routers, sites and clients joined by links.

This is what ``anyedge lab`` builds in network namespaces: containerlab-style ``nodes``
and ``links`` whose ``endpoints`` are ``"node:interface"`` strings.  Each link between two
BGP speakers carries a business relation, as in the mini-Internet: ``provider-customer``
(the first endpoint sells transit to the second) or ``peer``.  Routers may stand in
``metros`` (cities with coordinates); an AS may then have several routers, one per
metro, joined by internal links (relation ``none``) that carry its IGP and iBGP
(:mod:`anyedge.lab.igp`).  A lab is small, so it is
kept as plain frozen objects rather than arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class NodeKind(StrEnum):
    ROUTER = "router"  # an ISP's BGP router
    SITE = "site"  # one of anyedge's sites, holding the anycast address on lo
    CLIENT = "client"  # an end host that probes the anycast address


class Speaker(StrEnum):
    FRR = "frr"
    BIRD = "bird"
    GOBGP = "gobgp"
    EXABGP = "exabgp"


class Relation(StrEnum):
    PROVIDER_CUSTOMER = "provider-customer"
    PEER = "peer"
    NONE = "none"  # a plain link, no BGP business relation (client access, backbone)


@dataclass(frozen=True, slots=True)
class LabNode:
    name: str
    kind: NodeKind
    asn: int | None = None
    site: str | None = None  # the IATA code of the site a SITE node stands for
    speaker: Speaker | None = None
    servers: int = 0  # a SITE node with servers: a router and this many server namespaces
    metro: str | None = None  # a ROUTER's metro (a key of Lab.metros), in a metro lab


@dataclass(frozen=True, slots=True)
class LabLink:
    a: tuple[str, str]  # (node, interface); the provider on a provider-customer link
    b: tuple[str, str]
    relation: Relation = Relation.NONE
    # what the link does to each frame, each way (the lab carries it through a delay
    # line, anyedge.lab.delayline, where any of these is set)
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    # extra copies of anyedge's ASN the site at one end puts on what it announces over
    # this link's session (on top of the prefix's own prepend); links with a site only
    prepend: int = 0
    med: int = 0  # the MED the site sends on this session
    communities: tuple[str, ...] = ()  # no-export, no-peers, no-providers (network.py)
    # the two ends' IPv6 addresses with their prefix length, in the order of the
    # endpoints, when the topology gives them (a dual-stack lab generates them otherwise)
    ipv6: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LabMetro:
    name: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Lab:
    nodes: tuple[LabNode, ...] = ()
    links: tuple[LabLink, ...] = ()
    metros: tuple[LabMetro, ...] = ()  # where routers stand (a metro lab), else none

    def metro(self, name: str) -> LabMetro:
        for m in self.metros:
            if m.name == name:
                return m
        raise KeyError(name)

    def node(self, name: str) -> LabNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)
