"""The plan of a lab: every namespace, address, route and BGP session, decided up front.

``anyedge lab up`` turns a topology's ``lab`` part into a :class:`LabPlan` — pure data,
computed before anything is created — and then carries it out (:mod:`.build`).  The
plan decides:

* **addresses**: link *i* gets the /30 ``100.64.0.0 + 4i``; its first endpoint takes
  ``.1``, its second ``.2``.  Each site holds the first address of every anycast
  prefix it announces on ``lo`` (a /32, or a /128).  A lab whose sites announce an IPv6
  prefix is dual-stack: link *i* also gets the /126 ``2001:db8:ffff:: + 4i``
  (:data:`LINKS6`, ``::1`` and ``::2`` the same way), unless the topology gives the
  link's two addresses (``ipv6: [A/LEN, B/LEN]``), sites and clients an IPv6 default
  route, and every BGP session carries IPv6 unicast beside IPv4 (MP-BGP over the IPv4
  session; each speaker sends its own IPv6 address on the link as the next hop);
* **BGP sessions**: one per link between BGP speakers, with what the neighbour is to the
  node (customer, peer, provider), so routers can apply Gao-Rexford policy;
* **router ids** that sort like the routing engine's tie-break key (:func:`router_id`):
  the ASN first, then the site, so that an FRR router choosing between equal routes
  with ``bgp bestpath compare-routerid`` picks the route the model's ``Mode.AS`` picks
  (the routers of an AS with several routers: the ASN, then their order in the file);
* **hot potato** in a metro lab (:mod:`.igp`): a loopback per router of an AS with
  several routers, its iBGP peers' loopbacks, and an OSPF cost on each internal link;
* **return paths** follow BGP too: a client's router originates the client's network
  as its own customer route (exported to everyone, like any prefix it originates), so
  when a link on the way back fails, answers reroute with the anycast routes.  A site
  sends them to its first router (sites never carry transit);
* **service ports**: each plan is served on its own port (``7001`` for the first plan),
  so the lab can count and steer traffic per plan;
* **sites with servers** (``servers: N``): the site's namespace is their router, the
  servers are namespaces of their own on :data:`SEGMENT` (built by :mod:`.edge`);
* **a test prefix** (:data:`TEST_PREFIX`), announced by every site beside the
  topology's prefixes, for the Traffic Predictor's measurements (:mod:`.trial`).

:func:`lab_world` is the model of the same lab: a :class:`~anyedge.model.World` whose
sites have the lab's sessions, whose Internet is the lab's routers and whose users are
its clients.  ``anyedge lab compare`` computes catchments on it and probes the lab.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..adapters.bgp.frr import ACTION
from ..model.files.labv6 import LINKS6
from ..model.files.topology import dump_yaml, parse_world, world_to_dict
from ..model.lab import Lab, LabLink, LabNode, NodeKind, Relation, Speaker
from ..model.world import World
from . import igp
from .delayline import Shape

LINKS = "100.64.0.0/10"
LINK_BASE = ipaddress.IPv4Address("100.64.0.0")
LINK6_BASE = ipaddress.IPv6Network(LINKS6).network_address  # link i: LINK6_BASE + 4i, /126
ROUTER_ID_BASE = int(ipaddress.IPv4Address("10.0.0.0"))
PORT_BASE = 7000
# The Traffic Predictor's own anycast range: announced by every site, withdrawn at one
# site at a time to see where that site's users go, while real traffic stays put.
TEST_PREFIX = "203.0.113.0/24"
MAX_LINKS = 2**20 - 2**10  # /30s in 100.64.0.0/10 below the routers' loopbacks (.igp)
# The L2 segment behind a site with servers (the same in every site: each is its own
# namespace): its router is .1, server i is .(11 + i).
SEGMENT = "192.0.2.0/24"
WIRE = Shape()  # a link that takes no time and loses nothing: a veth pair


@dataclass(frozen=True)
class Port:
    """One end of a link, seen from its node."""

    link: int
    ifname: str
    address: str  # with its prefix length, e.g. 100.64.0.1/30
    peer: str  # the node at the other end
    peer_address: str  # without prefix length
    relation: str  # what the peer is to this node: customer, peer, provider or none
    shape: Shape = WIRE  # the link's delay, jitter and loss (a delay line if any)
    prepend: int = 0  # extra copies of its ASN this node puts on what it sends here (sites)
    med: int = 0  # the MED it sends here (sites)
    communities: tuple[str, ...] = ()  # what it tags its routes with here, "ASN:VALUE"
    cost: int = 0  # an internal link's OSPF cost (km between its metros), else 0
    address6: str = ""  # its IPv6 address with prefix length (a dual-stack lab), else ""
    peer_address6: str = ""  # the other end's, without prefix length

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]


@dataclass(frozen=True)
class NodePlan:
    name: str
    kind: NodeKind
    namespace: str
    asn: int | None  # routers: theirs; sites: anyedge's; clients: None
    router_id: str | None
    site: str | None  # the site code of a site node
    site_row: int | None  # its row in lab_world's sites
    speaker: Speaker | None
    ports: tuple[Port, ...]
    anycast: tuple[str, ...] = ()  # IPv4 addresses held on lo (sites)
    prefixes: tuple[str, ...] = ()  # prefixes the site announces (IPv4, then IPv6)
    default_via: str | None = None  # sites and clients
    anycast6: tuple[str, ...] = ()  # IPv6 addresses held on lo (sites)
    default_via6: str | None = None  # sites and clients of a dual-stack lab
    # sites with more than one transit: the others' addresses, a default route via each
    # at a higher metric, so that replies leave by another transit when the first's link
    # is down (the kernel deletes a route with its link)
    fallback_via: tuple[str, ...] = ()
    fallback_via6: tuple[str, ...] = ()  # the same, IPv6 (a dual-stack lab)
    networks: tuple[str, ...] = ()  # routers: the clients' networks they originate
    servers: int = 0  # sites with servers: the site is their router (see .edge)
    capacity_ms: float = 0.0  # sites: CPU ms/s of the site's servers (the world's)
    metro: str | None = None  # routers of a metro lab: where they stand
    loopback: str | None = None  # routers of an AS with several: their iBGP address
    # (router, its loopback, the IGP's cost to it) of each other router of the same AS
    ibgp: tuple[tuple[str, str, int], ...] = ()

    @property
    def igp_ports(self) -> tuple[Port, ...]:
        """A router's internal links (to routers of its own AS), which run OSPF."""
        return tuple(p for p in self.ports if p.cost)

    def default_routes(self) -> list[list[str]]:
        """``ip route`` arguments after ``add``/``replace`` for the default routes."""
        out = []
        for first, rest in (
            (self.default_via, self.fallback_via),
            (self.default_via6, self.fallback_via6),
        ):
            vias = [first] if first else []
            out += [
                ["default", "via", via, *(["metric", str(10 * i)] if i else [])]
                for i, via in enumerate([*vias, *rest])
            ]
        return out

    @property
    def server_namespaces(self) -> tuple[str, ...]:
        """The namespaces of a site's servers ``s0``, ``s1``... as planned."""
        return tuple(f"{self.namespace}-s{i}" for i in range(self.servers))

    @property
    def bgp_ports(self) -> tuple[Port, ...]:
        return tuple(p for p in self.ports if p.relation != "none")

    @property
    def backbone(self) -> tuple[Port, ...]:
        """A site's links to other sites."""
        return tuple(p for p in self.ports if p.relation == "none" and self.kind is NodeKind.SITE)


@dataclass(frozen=True)
class LabPlan:
    name: str
    asn: int
    nodes: tuple[NodePlan, ...]
    prefixes: tuple[str, ...]  # every anycast prefix: IPv4, then IPv6, then TEST_PREFIX
    plans: tuple[str, ...]  # plan names; plan i is served on port PORT_BASE + 1 + i
    cpu_ms: tuple[float, ...] = ()  # CPU ms a request of each plan costs (the world's)

    @property
    def ipv6(self) -> bool:
        """Dual-stack: do the lab's sites announce an IPv6 prefix?"""
        return bool(self.prefixes6)

    @property
    def prefixes6(self) -> tuple[str, ...]:
        return tuple(p for p in self.prefixes if ipaddress.ip_network(p).version == 6)

    @property
    def service_prefixes(self) -> tuple[str, ...]:
        """The prefixes ``lab compare`` checks: the first IPv4 one, and the first IPv6
        one in a dual-stack lab."""
        return (self.prefixes[0], *self.prefixes6[:1])

    @property
    def service_address6(self) -> str | None:
        """The IPv6 address clients probe (the first IPv6 anycast prefix's first), if any."""
        return first_host(self.prefixes6[0]) if self.prefixes6 else None

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(PORT_BASE + 1 + i for i in range(len(self.plans)))

    @property
    def service_address(self) -> str:
        """The address clients probe: the first address of the first anycast prefix."""
        return first_host(self.prefixes[0])

    @property
    def test_address(self) -> str:
        """The Traffic Predictor's test address (in :data:`TEST_PREFIX`)."""
        return first_host(TEST_PREFIX)

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def links(self) -> Iterator[tuple[NodePlan, Port, NodePlan, Port]]:
        """Each link once: (node, its port, the node at the other end, that one's port)."""
        by_name = {n.name: n for n in self.nodes}
        done: set[int] = set()
        for n in self.nodes:
            for p in n.ports:
                if p.link not in done:
                    done.add(p.link)
                    other = by_name[p.peer]
                    q = next(x for x in other.ports if x.link == p.link and x.peer == n.name)
                    yield n, p, other, q

    def of_kind(self, kind: NodeKind) -> tuple[NodePlan, ...]:
        return tuple(n for n in self.nodes if n.kind is kind)

    @property
    def sites(self) -> tuple[NodePlan, ...]:
        return tuple(sorted(self.of_kind(NodeKind.SITE), key=lambda n: n.site_row or 0))

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(ns for n in self.nodes for ns in (n.namespace, *n.server_namespaces))

    def site_node(self, code: str) -> NodePlan:
        for n in self.nodes:
            if n.site == code:
                return n
        raise KeyError(code)


def check_name(name: str) -> None:
    """A lab's name: 1 to 8 lower-case letters or digits (it prefixes every namespace,
    so no name may be the beginning of another's namespaces)."""
    if not re.fullmatch(r"[a-z0-9]{1,8}", name):
        raise ValueError(f"a lab name is 1 to 8 lower-case letters or digits, got {name!r}")


def first_host(cidr: str) -> str:
    net = ipaddress.ip_network(cidr)
    return str(net.network_address + 1) if net.num_addresses > 1 else str(net.network_address)


def namespace_prefix(name: str) -> str:
    return f"ae-{name}-"


def lab_sites(world: World) -> list[str]:
    """Codes of the sites the lab has a node for, in the order of the topology."""
    in_lab = {n.site for n in world.lab.nodes if n.kind is NodeKind.SITE}
    return [c for c in world.network.sites.code if c in in_lab]


def router_id(asn_rank: int, tie: int = 0) -> str:
    """A router id that sorts like the model's tie-break: (ASN, site row).

    ``asn_rank`` is the ASN's position among the lab's ASNs in increasing order.
    """
    if not 0 <= tie < 4096:
        raise ValueError(f"at most 4096 sites in a lab, got site row {tie}")
    return str(ipaddress.IPv4Address(ROUTER_ID_BASE + ((asn_rank + 1) << 12) + tie))


def _relation_seen_from(relation: Relation, first: bool) -> str:
    """What the node at the other end is, for the node at end ``first`` (a) or b."""
    if relation is Relation.PROVIDER_CUSTOMER:
        return "customer" if first else "provider"
    return "peer" if relation is Relation.PEER else "none"


def make_plan(world: World, name: str = "lab") -> LabPlan:
    """The plan of ``world``'s lab (the topology checks have already passed)."""
    lab = world.lab
    if not lab.nodes:
        raise ValueError("the topology has no lab: nodes")
    if len(lab.links) > MAX_LINKS:
        raise ValueError(f"at most {MAX_LINKS} links in a lab")
    check_name(name)
    net = world.network
    codes = lab_sites(world)
    site_row = {c: i for i, c in enumerate(codes)}
    v4 = [
        q
        for q, c in enumerate(net.prefixes.cidr)
        if ipaddress.ip_network(c).version == 4
        and any(net.prefixes.announced[q, net.sites.index(s)] for s in codes)
    ]
    if not v4:
        raise ValueError("the lab's sites announce no IPv4 prefix")
    v6 = [
        q
        for q, c in enumerate(net.prefixes.cidr)
        if ipaddress.ip_network(c).version == 6
        and any(net.prefixes.announced[q, net.sites.index(s)] for s in codes)
    ]
    taken_ranges = (
        (TEST_PREFIX, "the lab's test prefix"),
        (LINKS, "the lab's links"),
        *(((LINKS6, "the lab's IPv6 links"),) if v6 else ()),  # a dual-stack lab's only
    )
    for c in net.prefixes.cidr:
        for taken, what in taken_ranges:
            net_c, net_t = ipaddress.ip_network(c), ipaddress.ip_network(taken)
            if net_c.version == net_t.version and net_c.overlaps(net_t):
                raise ValueError(f"prefix {c} overlaps {taken}, {what}")
    if any(n.servers for n in lab.nodes):
        for c in net.prefixes.cidr:
            if ipaddress.ip_network(c).overlaps(ipaddress.ip_network(SEGMENT)):
                raise ValueError(f"prefix {c} overlaps {SEGMENT}, the servers' segment in a site")
    origin = net.origin_asn()  # a site of another operator speaks BGP from its ASN
    asns = sorted(
        {n.asn for n in lab.nodes if n.kind is NodeKind.ROUTER and n.asn} | set(origin.tolist())
    )
    rank = {a: i for i, a in enumerate(asns)}

    ports: dict[str, list[Port]] = {n.name: [] for n in lab.nodes}
    by_node = {n.name: n for n in lab.nodes}
    loop = igp.loopbacks(lab)
    far = igp.igp_costs(lab)
    for i, link in enumerate(lab.links):
        base = LINK_BASE + 4 * i
        a_ip, b_ip = base + 1, base + 2
        shape = Shape(link.delay_ms, link.jitter_ms, link.loss)
        cost = igp.cost(lab, link) if link.a[0] in loop and igp.is_internal(lab, link) else 0
        a6, b6 = (link.ipv6 or _link6(i)) if v6 else ("", "")
        ports[link.a[0]].append(
            Port(
                i,
                link.a[1],
                f"{a_ip}/30",
                link.b[0],
                str(b_ip),
                _relation_seen_from(link.relation, True),
                shape,
                *_session(link, by_node, link.a[0], link.b[0]),
                cost=cost,
                address6=a6,
                peer_address6=b6.split("/")[0],
            )
        )
        ports[link.b[0]].append(
            Port(
                i,
                link.b[1],
                f"{b_ip}/30",
                link.a[0],
                str(a_ip),
                _relation_seen_from(link.relation, False),
                shape,
                *_session(link, by_node, link.b[0], link.a[0]),
                cost=cost,
                address6=b6,
                peer_address6=a6.split("/")[0],
            )
        )
    networks = _client_networks(lab, ports)
    capacity = net.site_capacity()
    nodes = []
    nth: dict[int, int] = {}  # routers of each AS so far: the router id's tie
    for n in lab.nodes:
        ns = namespace_prefix(name) + n.name
        p = tuple(ports[n.name])
        if n.kind is NodeKind.ROUTER:
            assert n.asn is not None
            nth[n.asn] = nth.get(n.asn, -1) + 1
            same = [x.name for x in lab.nodes if x.asn == n.asn and x.name != n.name]
            nodes.append(
                NodePlan(
                    n.name,
                    n.kind,
                    ns,
                    n.asn,
                    router_id(rank[n.asn], nth[n.asn]),
                    None,
                    None,
                    Speaker.FRR,
                    p,
                    networks=networks.get(n.name, ()),
                    metro=n.metro,
                    loopback=loop.get(n.name),
                    ibgp=tuple((x, loop[x], far[n.name, x]) for x in same if x in loop),
                )
            )
        elif n.kind is NodeKind.SITE:
            assert n.site is not None
            s = net.sites.index(n.site)
            mine = tuple(net.prefixes.cidr[q] for q in v4 if net.prefixes.announced[q, s])
            mine += (TEST_PREFIX,)
            mine6 = tuple(net.prefixes.cidr[q] for q in v6 if net.prefixes.announced[q, s])
            up = [x for x in p if x.relation != "none"]
            nodes.append(
                NodePlan(
                    n.name,
                    n.kind,
                    ns,
                    int(origin[s]),
                    router_id(rank[int(origin[s])], site_row[n.site]),
                    n.site,
                    site_row[n.site],
                    n.speaker or Speaker.FRR,
                    p,
                    anycast=tuple(first_host(c) for c in mine),
                    prefixes=(*mine[:-1], *mine6, TEST_PREFIX),
                    default_via=up[0].peer_address if up else None,
                    anycast6=tuple(first_host(c) for c in mine6),
                    default_via6=up[0].peer_address6 or None if up else None,
                    fallback_via=tuple(x.peer_address for x in up[1:]),
                    fallback_via6=tuple(x.peer_address6 for x in up[1:] if x.peer_address6),
                    servers=n.servers,
                    capacity_ms=float(capacity[s]),
                )
            )
        else:
            nodes.append(
                NodePlan(
                    n.name,
                    n.kind,
                    ns,
                    None,
                    None,
                    None,
                    None,
                    None,
                    p,
                    default_via=p[0].peer_address if p else None,
                    default_via6=p[0].peer_address6 or None if p else None,
                )
            )
    return LabPlan(
        name=name,
        asn=net.asn,
        nodes=tuple(nodes),
        prefixes=(*(net.prefixes.cidr[q] for q in (*v4, *v6)), TEST_PREFIX),
        plans=net.plans.names,
        cpu_ms=tuple(float(c) for c in net.plans.cpu_ms),
    )


def _link6(i: int) -> tuple[str, str]:
    """The IPv6 addresses of link ``i``'s two ends in a dual-stack lab (a /126 each)."""
    base = LINK6_BASE + 4 * i
    return f"{base + 1}/126", f"{base + 2}/126"


def _client_networks(lab: Lab, ports: dict[str, list[Port]]) -> dict[str, tuple[str, ...]]:
    """The network of each client, by the router it hangs off: that router originates it
    in BGP, so that answers find their way back by the routing protocol too."""
    kind = {n.name: n.kind for n in lab.nodes}
    out: dict[str, list[str]] = {}
    for n in lab.nodes:
        if n.kind is not NodeKind.CLIENT or not ports[n.name]:
            continue
        cport = ports[n.name][0]
        if kind[cport.peer] is NodeKind.ROUTER:
            for address in (cport.address, cport.address6):
                if address:
                    out.setdefault(cport.peer, []).append(
                        str(ipaddress.ip_interface(address).network)
                    )
    return {k: tuple(v) for k, v in out.items()}


# the wire form of the topology's community names; {asn} is the neighbour's
WIRE_COMMUNITY = {
    "no-export": "65535:65281",
    "no-peers": f"{{asn}}:{ACTION['no-peers']}",
    "no-providers": f"{{asn}}:{ACTION['no-providers']}",
}


def _session(
    link: LabLink, by_node: dict[str, LabNode], me: str, peer: str
) -> tuple[int, int, tuple[str, ...]]:
    """(prepend, MED, communities) that ``me`` sends over ``link`` (a site's, else none)."""
    if by_node[me].kind is not NodeKind.SITE:
        return 0, 0, ()
    asn = by_node[peer].asn
    wire = tuple(WIRE_COMMUNITY[c].format(asn=asn) for c in link.communities)
    return link.prepend, link.med, wire


def lab_world(world: World) -> World:
    """The model of the lab: its sites, sessions, routers and clients as a world."""
    lab = world.lab
    codes = lab_sites(world)
    d: dict[str, Any] = world_to_dict(world, inline=True)
    by_node = {n.name: n for n in lab.nodes}
    transit: dict[str, list[int]] = {c: [] for c in codes}
    peers: dict[str, list[int]] = {c: [] for c in codes}
    prepend: dict[str, dict[int, int]] = {c: {} for c in codes}
    med: dict[str, dict[int, int]] = {c: {} for c in codes}
    communities: dict[str, dict[int, list[str]]] = {c: {} for c in codes}
    relations: list[str] = []
    for link in lab.links:
        a, b = by_node[link.a[0]], by_node[link.b[0]]
        if link.relation is Relation.NONE:
            continue
        if a.kind is NodeKind.ROUTER and b.kind is NodeKind.ROUTER:
            code = -1 if link.relation is Relation.PROVIDER_CUSTOMER else 0
            relations.append(f"{a.asn}|{b.asn}|{code}")
            continue
        router, site = (a, b) if a.kind is NodeKind.ROUTER else (b, a)
        assert site.site is not None
        assert router.asn is not None
        (transit if link.relation is Relation.PROVIDER_CUSTOMER else peers)[site.site].append(
            router.asn
        )
        if link.prepend:
            prepend[site.site][router.asn] = link.prepend
        if link.med:
            med[site.site][router.asn] = link.med
        if link.communities:
            communities[site.site][router.asn] = list(link.communities)
    sites = []
    for s in d["sites"]:
        if s["code"] in transit:
            s = dict(s, transit=transit[s["code"]], peers=peers[s["code"]])
            for key, per_site in (("prepend", prepend), ("med", med), ("communities", communities)):
                s.pop(key, None)
                if per_site[s["code"]]:
                    s[key] = per_site[s["code"]]
            sites.append(s)
    d["sites"] = sites
    d["prefixes"] = [
        dict(p, sites=[c for c in (codes if p["sites"] == "all" else p["sites"]) if c in transit])
        for p in d.get("prefixes", [])
    ]
    d["prefixes"] = [p for p in d["prefixes"] if p["sites"]]
    d["prefixes"].append({"cidr": TEST_PREFIX, "sites": "all"})
    d["operators"] = [
        dict(o, sites=[c for c in o["sites"] if c in transit]) for o in d.get("operators", [])
    ]
    d["operators"] = [o for o in d["operators"] if o["sites"]]
    lat = sum(s["lat"] for s in sites) / len(sites)
    lon = sum(s["lon"] for s in sites) / len(sites)
    clients = client_names(world)
    home = {}
    for link in lab.links:
        for me, other in ((link.a[0], link.b[0]), (link.b[0], link.a[0])):
            if by_node[me].kind is NodeKind.CLIENT:
                home[me] = by_node[other].asn
    # one metro per client, so that every client is an eyeball row of its own
    names: dict[int | None, str] = {}  # an AS of several routers is named for its first
    for n in lab.nodes:
        if n.kind is NodeKind.ROUTER:
            names.setdefault(n.asn, n.name)
    d["internet"] = {
        "relations": list(dict.fromkeys(relations)),  # once per pair of ASes
        "ases": [{"asn": a, "name": name} for a, name in names.items()],
        "metros": [
            {"id": i + 1, "name": c, "country": "NZ", "lat": lat, "lon": lon, "population": 1}
            for i, c in enumerate(clients)
        ],
        "eyeballs": [{"asn": home[c], "metro": i + 1, "rps": 100.0} for i, c in enumerate(clients)],
    }
    if igp.is_metro_lab(lab):
        igp.metro_model(lab, clients, d)
    return parse_world(dump_yaml(d), "<lab model>")


def client_names(world: World) -> list[str]:
    """The lab's clients in the order of the topology; client i is metro i + 1 of
    :func:`lab_world`."""
    return [n.name for n in world.lab.nodes if n.kind is NodeKind.CLIENT]
