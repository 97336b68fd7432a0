"""FRR (``zebra``, ``bfdd``, ``bgpd``) as an ISP router or as a site's BGP speaker.

Each node runs its own daemons inside its namespace, with every path — config,
pid files, the zebra API socket, the vty sockets, the log — under the node's ``workdir``,
so that many instances live side by side on one machine.  ``vtysh --vty_socket`` reaches
them through the file system from the root namespace.

**ISP routers** implement the Gao-Rexford policy of the topology with route maps: on
import, local preference by relation (customer 300, peer 200, provider 100); on export
to a peer or a provider, only routes whose local preference says they came from a
customer.  The decision between equal routes is made deterministic and equal to the
routing engine's ``Mode.AS`` rule: ``bgp bestpath compare-routerid`` (no "oldest route"
tie-break) with router ids that sort like the model's tie-break key
(:func:`anyedge.lab.plan.router_id`), one best path (``maximum-paths 1``), and no
advertisement interval.  Sessions with neighbours that run BFD too (FRR and BIRD) are
watched by BFD (300 ms × 3), so a neighbour that goes silent is dropped in about a
second rather than at the end of the hold timer.

**Routers of an AS with several routers** (hot potato, :mod:`anyedge.lab.igp`) run
``ospfd`` too (:class:`Igp`: point-to-point internal links with the cost given, the
loopback as a stub, 1 s hellos) and hold iBGP sessions with each other between their
loopbacks (relation ``internal``: ``next-hop-self``, no route maps, so local preference
crosses unchanged and export still reads it); ``maximum-paths ibgp 1``.

**Site speakers** originate their prefixes with ``network`` statements (a route map per
prepend count adds the ASN again), accept nothing and so advertise nothing else; a
session with a prepend, MED or communities of its own sends through an outbound route
map of its own (``SESSION-<i>``: ``set as-path prepend``, ``set metric``, ``set
community … additive``).  ISP routers honour NO_EXPORT (bgpd does by itself) and the
lab's action communities addressed to them: ``ASN:990`` not to their peers, ``ASN:991``
not to their providers (a ``deny`` entry ahead of the export route maps).
Changes go through ``vtysh``: announce, withdraw, or change the prepend of a prefix.
Questions (:meth:`Frr.show`: the BGP summary, OSPF neighbours and routes, BFD peers,
routes) go straight to the daemon's vty socket (:mod:`.vty`), with no ``vtysh``
process each: the lab's polling loops ask hundreds of them.

**IPv6** (a dual-stack lab, ``SpeakerConfig.ipv6``): every session, over IPv4, also
activates the IPv6 unicast address family with the same route maps; bgpd sends the
global IPv6 address of the session's interface as the next hop.  Routers originate
their clients' IPv6 networks too, and sites their IPv6 prefixes.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .. import netns
from . import vty
from .base import Neighbor, Route, SpeakerConfig, SpeakerError, by_prefix, run_tool

FRR_LIB = Path("/usr/lib/frr")
LOCAL_PREF = {"customer": 300, "peer": 200, "provider": 100}
BFD_PROFILE = "lab"
DAEMONS = ("zebra", "bfdd", "bgpd")  # in the order they start; bgpd is the BGP daemon
IGP_DAEMONS = ("zebra", "bfdd", "ospfd", "bgpd")  # a router that runs OSPF too
ACTION = {"no-peers": 990, "no-providers": 991}  # a router's action communities: ASN:value
SHOW_DAEMON = (  # which daemon answers a question, by its first words (as vtysh routes it)
    (("show", "bgp"), "bgpd"),
    (("show", "ip", "bgp"), "bgpd"),
    (("show", "ip", "ospf"), "ospfd"),
    (("show", "bfd"), "bfdd"),
    (("show", "ip", "route"), "zebra"),
    (("show", "ipv6", "route"), "zebra"),
    (("show", "interface"), "zebra"),
)


def daemon_for(command: str) -> str | None:
    """The daemon whose vty socket answers ``command``, or None: ask ``vtysh`` (which
    knows every command, and merges what several daemons answer, e.g. ``show
    running-config``)."""
    words = tuple(command.split())
    for start, daemon in SHOW_DAEMON:
        if words[: len(start)] == start:
            return daemon
    return None


@dataclass(frozen=True)
class RouterNeighbor:
    neighbor: Neighbor
    relation: str  # what the neighbour is to this router: customer, peer, provider, internal


@dataclass(frozen=True)
class Igp:
    """A router's OSPF: its loopback and its internal links (interface, address, cost)."""

    loopback: str
    links: tuple[tuple[str, str, int], ...]


def ospfd_config(cfg: SpeakerConfig, igp: Igp) -> str:
    """ospfd.conf: one area, point-to-point links costed as given, fast hellos."""
    lines = _common(cfg.node, cfg.workdir)
    for ifname, _, cost in igp.links:
        lines += [
            f"interface {ifname}",
            " ip ospf network point-to-point",
            f" ip ospf cost {cost}",
            " ip ospf hello-interval 1",
            " ip ospf dead-interval 3",
            " ip ospf retransmit-interval 1",
            "exit",
        ]
    lines += [
        "router ospf",
        f" ospf router-id {cfg.router_id}",
        " log-adjacency-changes",
        " timers throttle spf 0 50 500",
        " timers throttle lsa all 0",  # no 5 s wait to re-originate (MinLSInterval)
        " timers lsa min-arrival 0",  # nor to accept a newer copy (MinLSArrival)
        f" network {igp.loopback}/32 area 0",
        *(f" network {ipaddress.ip_interface(a).network} area 0" for _, a, _ in igp.links),
        "exit",
    ]
    return "\n".join(lines) + "\n"


def _common(name: str, workdir: Path) -> list[str]:
    return [f"hostname {name}", f"log file {workdir / 'frr.log'} informational", "!"]


def _timers(cfg: SpeakerConfig) -> list[str]:
    t = cfg.timers
    return [f" timers bgp {t.keepalive} {t.hold}"]


def _neighbor_lines(cfg: SpeakerConfig, n: Neighbor) -> list[str]:
    a = n.address
    lines = [
        f" neighbor {a} remote-as {n.asn}",
        f" neighbor {a} timers connect {cfg.timers.connect_retry}",
        f" neighbor {a} advertisement-interval 0",
        f" neighbor {a} update-source {n.local_address}",
    ]
    if n.bfd:
        lines.append(f" neighbor {a} bfd profile {BFD_PROFILE}")
    return lines


def _family(prefix: str) -> str:
    """The address family a prefix goes under: ``ipv4`` or ``ipv6``."""
    return "ipv6" if ":" in prefix else "ipv4"


def _families(cfg: SpeakerConfig) -> tuple[str, ...]:
    return ("ipv4", "ipv6") if cfg.ipv6 else ("ipv4",)


def bfdd_config(cfg: SpeakerConfig) -> str:
    """bfdd.conf: the lab's BFD profile (bgpd asks for sessions with it)."""
    t = cfg.timers
    lines = [
        *_common(cfg.node, cfg.workdir),
        "bfd",
        f" profile {BFD_PROFILE}",
        f"  detect-multiplier {t.bfd_multiplier}",
        f"  receive-interval {t.bfd_interval_ms}",
        f"  transmit-interval {t.bfd_interval_ms}",
        " exit",
        "exit",
    ]
    return "\n".join(lines) + "\n"


def router_config(
    cfg: SpeakerConfig, neighbors: Iterable[RouterNeighbor], networks: Iterable[str] = ()
) -> str:
    """bgpd.conf for an ISP router with the policy of its relations; ``networks`` (its
    clients' networks) it originates as its customers' routes, exported to everyone."""
    nbs = list(neighbors)
    lines = _common(cfg.node, cfg.workdir)
    for rel, pref in LOCAL_PREF.items():
        lines += [f"route-map FROM-{rel.upper()} permit 10", f" set local-preference {pref}"]
    lines += ["route-map CLIENTS permit 10", f" set local-preference {LOCAL_PREF['customer']}"]
    lines += ["route-map TO-CUSTOMER permit 10"]
    for rel, value in (("PEER", ACTION["no-peers"]), ("PROVIDER", ACTION["no-providers"])):
        lines += [f"bgp community-list standard NO-{rel}S permit {cfg.asn}:{value}"]
        lines += [f"route-map TO-{rel} deny 5", f" match community NO-{rel}S"]
        lines += [f"route-map TO-{rel} permit 10", " match local-preference 300"]
    lines += [
        "!",
        f"router bgp {cfg.asn}",
        f" bgp router-id {cfg.router_id}",
        " no bgp ebgp-requires-policy",
        " bgp bestpath compare-routerid",
        *_timers(cfg),
    ]
    for rn in nbs:
        lines += _neighbor_lines(cfg, rn.neighbor)
    for af in _families(cfg):
        lines += [f" address-family {af} unicast", "  maximum-paths 1", "  maximum-paths ibgp 1"]
        lines += [f"  network {n} route-map CLIENTS" for n in networks if _family(n) == af]
        for rn in nbs:
            a, rel = rn.neighbor.address, rn.relation.upper()
            lines += [f"  neighbor {a} activate"] if af == "ipv6" else []
            if rn.relation == "internal":
                lines += [f"  neighbor {a} next-hop-self"]
                continue
            lines += [
                f"  neighbor {a} route-map FROM-{rel} in",
                f"  neighbor {a} route-map TO-{rel} out",
            ]
        lines += [" exit-address-family"]
    lines += ["!"]
    return "\n".join(lines) + "\n"


def _prepend_map(asn: int, n: int) -> list[str]:
    lines = [f"route-map ORIGIN-P{n} permit 10"]
    if n:
        lines.append(f" set as-path prepend {' '.join([str(asn)] * n)}")
    return lines


def site_config(cfg: SpeakerConfig, routes: Mapping[str, Route]) -> str:
    """bgpd.conf for a site speaker that originates ``routes``."""
    lines = _common(cfg.node, cfg.workdir)
    lines += ["route-map NOTHING deny 10", "route-map ORIGINATED permit 10"]
    for k in sorted({r.prepend for r in routes.values()} | {0}):
        lines += _prepend_map(cfg.asn, k)
    for i, n in enumerate(cfg.neighbors, start=1):
        if n.shaped:  # what this session alone sends: prepend, MED, communities
            lines += [f"route-map SESSION-{i} permit 10"]
            if n.prepend:
                lines += [f" set as-path prepend {' '.join([str(cfg.asn)] * n.prepend)}"]
            if n.med:
                lines += [f" set metric {n.med}"]
            if n.communities:
                lines += [f" set community {' '.join(n.communities)} additive"]
    lines += [
        "!",
        f"router bgp {cfg.asn}",
        f" bgp router-id {cfg.router_id}",
        " no bgp ebgp-requires-policy",
        " no bgp network import-check",
        *_timers(cfg),
    ]
    for n in cfg.neighbors:
        lines += _neighbor_lines(cfg, n)
    for af in _families(cfg):
        lines += [f" address-family {af} unicast"]
        for r in routes.values():
            if _family(r.prefix) == af:
                lines.append(f"  network {r.prefix} route-map ORIGIN-P{r.prepend}")
        for i, n in enumerate(cfg.neighbors, start=1):
            out = f"SESSION-{i}" if n.shaped else "ORIGINATED"
            lines += [f"  neighbor {n.address} activate"] if af == "ipv6" else []
            lines += [
                f"  neighbor {n.address} route-map NOTHING in",
                f"  neighbor {n.address} route-map {out} out",
            ]
        lines += [" exit-address-family"]
    lines += ["!"]
    return "\n".join(lines) + "\n"


@dataclass
class Frr:
    """One FRR instance (zebra and bgpd) in a node's namespace."""

    config: SpeakerConfig
    router_neighbors: tuple[RouterNeighbor, ...] | None = None  # set for ISP routers
    networks: tuple[str, ...] = ()  # an ISP router's clients' networks, originated
    igp: Igp | None = None  # a router of an AS with several routers: its OSPF
    _routes: dict[str, Route] = field(default_factory=dict)

    @property
    def vty_dir(self) -> Path:
        return self.config.workdir

    def _daemon(self, name: str, extra: list[str]) -> int:
        d = self.config.workdir
        argv = [
            str(FRR_LIB / name),
            "-f",
            str(d / f"{name}.conf"),
            "-i",
            str(d / f"{name}.pid"),
            "-z",
            str(d / "zserv.api"),
            "--vty_socket",
            str(d),
            "-P",
            "0",
            *extra,
        ]
        return netns.spawn(self.config.namespace, argv, d / f"{name}.out")

    def start(self, routes: Iterable[Route] = ()) -> list[int]:
        """Write the configuration and start :attr:`daemons` in order; their pids."""
        self.write_config(routes)
        return [self.start_daemon(name) for name in self.daemons]

    @property
    def daemons(self) -> tuple[str, ...]:
        """``zebra``, ``bfdd``, ``bgpd``, and ``ospfd`` before ``bgpd`` where it runs OSPF."""
        return IGP_DAEMONS if self.igp is not None else DAEMONS

    def write_config(self, routes: Iterable[Route] = ()) -> None:
        """The daemons' files; a site's ``bgpd.conf`` originates ``routes``."""
        cfg = self.config
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        self._routes = dict(by_prefix(routes))
        (cfg.workdir / "zebra.conf").write_text("\n".join(_common(cfg.node, cfg.workdir)) + "\n")
        (cfg.workdir / "bfdd.conf").write_text(bfdd_config(cfg))
        if self.igp is not None:
            (cfg.workdir / "ospfd.conf").write_text(ospfd_config(cfg, self.igp))
        if self.router_neighbors is not None:
            text = router_config(cfg, self.router_neighbors, self.networks)
        else:
            text = site_config(cfg, self._routes)
        (cfg.workdir / "bgpd.conf").write_text(text)
        _give_to_frr(cfg.workdir)

    def start_daemon(self, name: str) -> int:
        """Start one of :attr:`daemons` (``zebra`` first: the others connect to it) with
        the configuration written before; its pid once its socket is there.  The sockets
        a killed daemon left behind are removed first, or the wait would end at once."""
        d = self.config.workdir
        ready = d / ("zserv.api" if name == "zebra" else f"{name}.vty")
        for stale in {ready, d / f"{name}.vty", d / "bfdd.sock" if name == "bfdd" else ready}:
            stale.unlink(missing_ok=True)
        extra = ["--bfdctl", str(d / "bfdd.sock")] if name == "bfdd" else []
        pid = self._daemon(name, extra)
        _wait_for(ready, f"{self.config.node}: {name}", pid, d / f"{name}.out")
        return pid

    def bfd_peers(self) -> dict[str, str]:
        """BFD session status by peer address (``up``, ``down``, ...)."""
        out = self.show("show bfd peers json")
        try:
            peers: list[dict[str, object]] = json.loads(out or "[]")
        except json.JSONDecodeError as e:
            raise SpeakerError(f"{self.config.node}: unreadable BFD peers: {e}") from None
        return {str(p.get("peer")): str(p.get("status")) for p in peers}

    def vtysh(self, *commands: str, timeout: float = 10.0) -> str:
        argv = ["vtysh", "--vty_socket", str(self.vty_dir)]
        for c in commands:
            argv += ["-c", c]
        return run_tool(self.config.node, argv, timeout)

    def show(self, command: str, timeout: float = 10.0) -> str:
        """The answer to a read-only question, from the daemon's vty socket (no
        ``vtysh`` process); through ``vtysh`` if :func:`daemon_for` knows no daemon for
        it.  :class:`SpeakerError` naming the node, the daemon and the command if the
        daemon is not running, does not answer in ``timeout`` seconds, or refuses the
        command (FRR's message)."""
        daemon = daemon_for(command)
        if daemon is None:
            return self.vtysh(command, timeout=timeout)
        where = f"{self.config.node}: {daemon} {command!r}"
        try:
            answer = vty.ask(self.vty_dir / f"{daemon}.vty", command, timeout)
        except vty.VtyError as e:
            raise SpeakerError(f"{where}: {e}") from None
        if not answer.ok:
            text = answer.text.strip() or "no output"
            raise SpeakerError(f"{where}: {text} ({answer.status_name})")
        return answer.text

    def assume(self, routes: Iterable[Route]) -> None:
        """What the running daemon announces now (a driver made afresh does not know)."""
        self._routes = dict(by_prefix(routes))

    def apply(self, routes: Iterable[Route]) -> None:
        want = by_prefix(routes)
        changes: dict[str, list[str]] = {}
        for p in self._routes:
            if p not in want:
                changes.setdefault(_family(p), []).append(f"no network {p}")
        for p, r in want.items():
            if self._routes.get(p) != r:
                changes.setdefault(_family(p), []).append(
                    f"network {p} route-map ORIGIN-P{r.prepend}"
                )
        if changes:
            maps: list[str] = []
            for n in sorted({r.prepend for r in want.values()}):
                maps += _prepend_map(self.config.asn, n)
            af = [f"router bgp {self.config.asn}"]
            for family, lines in sorted(changes.items()):
                af += [f"address-family {family} unicast", *lines, "exit-address-family"]
            self.vtysh("configure terminal", *maps, *af)
        self._routes = dict(want)

    def summary(self) -> dict[str, dict[str, object]]:
        """Per neighbour address: its session state and prefixes received (``pfxRcd``;
        in a dual-stack lab, IPv4 and IPv6 prefixes together)."""
        if not self.config.ipv6:
            return self._peers(self.show("show bgp ipv4 unicast summary json"))
        out = self.show("show bgp summary json")  # every address family, by its name
        try:
            families = json.loads(out or "{}")
        except json.JSONDecodeError as e:
            raise SpeakerError(f"{self.config.node}: unreadable BGP summary: {e}") from None
        peers: dict[str, dict[str, object]] = {}
        for family in ("ipv4Unicast", "ipv6Unicast"):
            for a, p in families.get(family, {}).get("peers", {}).items():
                if a in peers:
                    got = int(str(peers[a].get("pfxRcd", 0))) + int(str(p.get("pfxRcd", 0)))
                    peers[a]["pfxRcd"] = got
                else:
                    peers[a] = dict(p)
        return peers

    def _peers(self, out: str) -> dict[str, dict[str, object]]:
        try:
            peers: dict[str, dict[str, object]] = json.loads(out or "{}").get("peers", {})
        except json.JSONDecodeError as e:
            raise SpeakerError(f"{self.config.node}: unreadable BGP summary: {e}") from None
        return peers

    def ospf_full(self) -> set[str]:
        """The addresses of the OSPF neighbours whose adjacency is full (databases
        exchanged): none for a router that runs no OSPF."""
        if self.igp is None:
            return set()
        out = self.show("show ip ospf neighbor json")
        try:
            nbrs: dict[str, list[dict[str, object]]] = json.loads(out or "{}").get("neighbors", {})
        except json.JSONDecodeError as e:
            raise SpeakerError(f"{self.config.node}: unreadable OSPF neighbours: {e}") from None
        return {
            str(n.get("ifaceAddress"))
            for ns in nbrs.values()
            for n in ns
            if str(n.get("nbrState", n.get("state", ""))).startswith("Full")
        }

    def ospf_costs(self) -> dict[str, int]:
        """The OSPF cost of the route to each prefix (``show ip ospf route``)."""
        out = self.show("show ip ospf route json")
        try:
            routes: dict[str, dict[str, object]] = json.loads(out or "{}")
        except json.JSONDecodeError as e:
            raise SpeakerError(f"{self.config.node}: unreadable OSPF routes: {e}") from None
        return {
            p: int(str(r["cost"])) for p, r in routes.items() if isinstance(r, dict) and "cost" in r
        }

    def established(self) -> int:
        return sum(1 for p in self.summary().values() if p.get("state") == "Established")

    def sessions(self) -> dict[str, bool]:
        """Per neighbour address: is its session established."""
        peers = self.summary()
        return {
            n.address: peers.get(n.address, {}).get("state") == "Established"
            for n in self.config.neighbors
        }

    def received(self) -> dict[str, int]:
        """Prefixes received from each neighbour with an established session."""
        return {
            a: int(str(p.get("pfxRcd", 0)))
            for a, p in self.summary().items()
            if p.get("state") == "Established"
        }


def _give_to_frr(d: Path) -> None:
    """The daemons drop to the ``frr`` user: let them write their own directory."""
    import grp
    import os
    import pwd

    uid, gid = pwd.getpwnam("frr").pw_uid, grp.getgrnam("frr").gr_gid
    for p in (d, *d.iterdir()):
        os.chown(p, uid, gid)


def _wait_for(path: Path, what: str, pid: int, log: Path, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if not netns.alive(pid):
            tail = log.read_text(errors="replace")[-400:] if log.exists() else ""
            raise SpeakerError(f"{what} exited at start: {tail.strip() or 'no output'}")
        if time.monotonic() > end:
            raise SpeakerError(f"{what} did not start in {timeout:g} s (no {path})")
        time.sleep(0.05)
