"""Faults made on purpose in a running lab, recorded, and undone.

``anyedge lab fault`` breaks one thing at a time, the way a network breaks:

* ``link-down A B`` / ``link-up A B`` — both ends of the link between nodes A and B go
  administratively down (``ip link set … down`` in each node's namespace), so the
  kernel drops the link's routes and every BGP daemon on it sees the interface go;
  up again, the routes the kernel deleted with the link — a node's default routes, a
  site's backbone routing table — are put back (:func:`restore_routes`);
* ``kill NODE`` / ``restart NODE`` — ``kill -9`` of the node's BGP daemon (a router's
  ``bgpd``, a site's FRR ``bgpd``, ``bird``, ``gobgpd`` or ``exabgp``); restart starts
  whatever of the node's daemons is not running (:func:`start_dead`) from its
  configuration, a site's speaker announcing what the lab's state says it announces;
* ``partition SITE`` / ``rejoin SITE`` — an nftables table in the site's namespace
  drops BGP (TCP port 179) both ways, so every session of the site ends at its hold
  timer and none comes back until the table goes.

Each fault is recorded in the lab's state under ``faults`` as it is made, and removed
by the command that undoes it, as one of::

    {"kind": "link", "a": "isp1", "b": "isp3"}
    {"kind": "daemon", "node": "isp2"}
    {"kind": "partition", "site": "SYD"}

(``a`` and ``b`` as the command named them).  Other commands read the records:
:func:`excused` says which BGP sessions they may expect to be down, so that
``withdraw`` or ``compare`` in a faulty lab wait only for the sessions that can come
up; ``anyedge lab heal`` (:mod:`.heal`) undoes them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..adapters import netns, nft
from ..adapters.bgp.base import Route
from ..adapters.bgp.frr import Frr
from ..model.lab import NodeKind, Speaker
from .build import (
    SERVICE,
    LabError,
    LabState,
    daemon_names,
    locked,
    router_of,
    speaker_of,
    start_service,
)
from .plan import LabPlan, NodePlan, Port

PARTITION_TABLE = "aefault"  # the nftables table (family inet) of a partitioned site
PARTITION = f"""table inet {PARTITION_TABLE} {{
  chain input {{ type filter hook input priority -250; policy accept;
    tcp dport 179 drop; tcp sport 179 drop; }}
  chain output {{ type filter hook output priority -250; policy accept;
    tcp dport 179 drop; tcp sport 179 drop; }}
}}
"""
REJOIN = f"table inet {PARTITION_TABLE} {{}}\ndelete table inet {PARTITION_TABLE}\n"


class BadFault(ValueError):
    """A fault on a node, link or site the lab does not have (bad input)."""


# ------------------------------------------------------------------- what is where


def node_named(plan: LabPlan, name: str) -> NodePlan:
    try:
        return plan.node(name)
    except KeyError:
        names = ", ".join(n.name for n in plan.nodes)
        raise BadFault(f"no node {name!r} in the lab; nodes: {names}") from None


def bgp_node(plan: LabPlan, name: str) -> NodePlan:
    """A router or a site: a node that runs a BGP daemon."""
    n = node_named(plan, name)
    if not n.bgp_ports:
        runs = ", ".join(x.name for x in plan.nodes if x.bgp_ports)
        raise BadFault(f"{name} runs no BGP daemon (a {n.kind}); these do: {runs}")
    return n


def site_named(plan: LabPlan, code: str) -> NodePlan:
    try:
        return plan.site_node(code.upper())
    except KeyError:
        codes = ", ".join(str(n.site) for n in plan.sites)
        raise BadFault(f"no site {code!r} in the lab; sites: {codes}") from None


def link_between(plan: LabPlan, a: str, b: str) -> tuple[NodePlan, Port, NodePlan, Port]:
    """The link joining nodes ``a`` and ``b`` (either order)."""
    node_named(plan, a)
    node_named(plan, b)
    for n, p, other, q in plan.links():
        if {n.name, other.name} == {a, b} and a != b:
            return n, p, other, q
    theirs = sorted({p.peer for p in plan.node(a).ports})
    raise BadFault(f"no link between {a} and {b}; {a} is linked to: {', '.join(theirs)}")


def same_link(record: dict[str, Any], a: str, b: str) -> bool:
    return record.get("kind") == "link" and {record.get("a"), record.get("b")} == {a, b}


def excused(
    records: Iterable[Mapping[str, Any]], plan: LabPlan
) -> tuple[set[str], set[frozenset[str]]]:
    """What the fault records (a lab state's ``faults``) take down: the nodes whose BGP
    daemon was killed, and the sessions (pairs of node names) a downed link, a killed
    daemon or a partition ends."""
    killed: set[str] = set()
    cut: set[frozenset[str]] = set()
    silent: set[str] = set()
    for f in records:
        if f.get("kind") == "link":
            cut.add(frozenset((str(f["a"]), str(f["b"]))))
        elif f.get("kind") == "daemon":
            killed.add(str(f["node"]))
        elif f.get("kind") == "partition":
            code = str(f.get("site", "")).upper()  # a record written by hand may say syd
            silent |= {n.name for n in plan.sites if n.site == code}
    for n in plan.nodes:
        if n.name in killed | silent:
            cut |= {frozenset((n.name, p.peer)) for p in n.bgp_ports}
            cut |= {frozenset((n.name, peer)) for peer, _, _ in n.ibgp}  # and its iBGP
    return killed, cut


# ---------------------------------------------------------------------------- links


def _set_link(n: NodePlan, p: Port, other: NodePlan, q: Port, how: str) -> None:
    netns.batch(n.namespace, [f"link set {p.ifname} {how}"])
    netns.batch(other.namespace, [f"link set {q.ifname} {how}"])


def link_down(plan: LabPlan, directory: Path, a: str, b: str) -> dict[str, Any]:
    n, p, other, q = link_between(plan, a, b)
    record = {"kind": "link", "a": a, "b": b}
    with locked(directory) as state:
        _set_link(n, p, other, q, "down")
        if not any(same_link(f, a, b) for f in state.faults):
            state.faults.append(record)
        state.save(directory)
    return record


def link_up(plan: LabPlan, directory: Path, a: str, b: str) -> dict[str, Any]:
    n, p, other, q = link_between(plan, a, b)
    with locked(directory) as state:
        _set_link(n, p, other, q, "up")
        failed = restore_routes(plan, n) + restore_routes(plan, other)
        state.faults = [f for f in state.faults if not same_link(f, a, b)]
        state.save(directory)
    if failed:
        raise LabError(f"link {a}-{b} is up, but routes could not be put back: {'; '.join(failed)}")
    return {"kind": "link", "a": a, "b": b}


def restore_routes(plan: LabPlan, node: NodePlan) -> list[str]:
    """Put back the static routes of ``node`` that the kernel deletes with a link: its
    default routes (a site's through each of its transits) and, at a site, each backbone
    link's routing table (Plurimog's).  ``ip route replace``: nothing changes where they
    are there.  What could not be put back (its link is still down) is returned."""
    from .forward import backbone_links

    cmds = [["route", "replace", *r] for r in node.default_routes()]
    if node.kind is NodeKind.SITE:
        for b in backbone_links(plan, node):
            via = ["via", b.via, "dev", b.ifname, "table", str(b.table)]
            cmds.append(["route", "replace", "default", *via])
    failed = []
    for c in cmds:
        try:
            netns.run(node.namespace, ["ip", *c])
        except netns.NetnsError as e:
            failed.append(f"{node.name}: {e}")
    return failed


def links_up(plan: LabPlan) -> list[str]:
    """Every link of the lab up and every node's routes back (:func:`restore_routes`)."""
    for n in plan.nodes:
        netns.batch(n.namespace, [f"link set {p.ifname} up" for p in n.ports])
    return [msg for n in plan.nodes for msg in restore_routes(plan, n)]


# -------------------------------------------------------------------------- daemons


def bgp_daemon(node: NodePlan) -> str:
    """The name of the daemon that speaks BGP at ``node`` (``bgpd``, ``bird``, ...)."""
    return daemon_names(node)[-1]


def running(node: NodePlan, pid: int | None) -> bool:
    """``pid`` is alive inside ``node``'s namespace (a reused pid elsewhere is not)."""
    return pid is not None and netns.alive(pid) and pid in netns.pids(node.namespace)


def kill(plan: LabPlan, directory: Path, name: str) -> dict[str, Any]:
    """``kill -9`` the BGP daemon of ``name`` and record it."""
    n = bgp_node(plan, name)
    daemon = bgp_daemon(n)
    with locked(directory) as state:
        pid = state.daemons.get(n.name, {}).get(daemon)
        if pid is None:
            raise LabError(f"{name}: the lab's state has no pid for its {daemon}")
        was = running(n, pid)
        if was:
            netns.kill(pid)
        if not any(f.get("kind") == "daemon" and f.get("node") == n.name for f in state.faults):
            state.faults.append({"kind": "daemon", "node": n.name})
        state.save(directory)
    return {"node": n.name, "daemon": daemon, "pid": pid, "was_running": was}


def restart(plan: LabPlan, directory: Path, name: str) -> dict[str, Any]:
    """Start whatever of ``name``'s daemons is not running; clear its daemon fault."""
    n = bgp_node(plan, name)
    with locked(directory) as state:
        started = start_dead(plan, directory, n, state)
        state.faults = [
            f for f in state.faults if not (f.get("kind") == "daemon" and f.get("node") == n.name)
        ]
        state.save(directory)
    return {"node": n.name, "started": started}


def start_dead(plan: LabPlan, directory: Path, n: NodePlan, state: LabState) -> dict[str, int]:
    """Start the daemons of ``n`` that are not running, with their configuration (a
    site's speaker announcing the routes the state records); record their pids in
    ``state`` (the caller saves it).  FRR's ``bgpd`` and ``bfdd`` restart alone while
    ``zebra`` runs; without ``zebra``, all three start again."""
    pids = state.daemons.setdefault(n.name, {})
    names = daemon_names(n)
    dead = [x for x in names if not running(n, pids.get(x))]
    routes = [Route(p, int(k)) for p, k in state.routes.get(n.name, [])]
    new: dict[str, int] = {}
    if dead and (n.kind is NodeKind.ROUTER or n.speaker in (Speaker.FRR, None)):
        frr = (
            router_of(plan, n, directory)
            if n.kind is NodeKind.ROUTER
            else speaker_of(plan, n, directory)
        )
        assert isinstance(frr, Frr)
        if "zebra" in dead:
            netns.stop([pids[x] for x in names if x not in dead and x in pids])
            dead = list(names)
        frr.write_config(routes)
        new = {x: frr.start_daemon(x) for x in names if x in dead}
    elif dead:
        new = dict(zip(names, speaker_of(plan, n, directory).start(routes), strict=True))
    if n.kind is NodeKind.SITE and SERVICE in pids and not running(n, pids[SERVICE]):
        new[SERVICE] = start_service(plan, n, directory)
    pids.update(new)
    state.pids.setdefault(n.name, []).extend(new.values())
    return new


# ------------------------------------------------------------------------ partitions


def partition(plan: LabPlan, directory: Path, code: str) -> dict[str, Any]:
    n = site_named(plan, code)
    site = str(n.site)
    with locked(directory) as state:
        apply_nft(n, REJOIN + PARTITION)
        if not any(f.get("kind") == "partition" and f.get("site") == site for f in state.faults):
            state.faults.append({"kind": "partition", "site": site})
        state.save(directory)
    return {"kind": "partition", "site": site}


def rejoin(plan: LabPlan, directory: Path, code: str) -> dict[str, Any]:
    n = site_named(plan, code)
    site = str(n.site)
    with locked(directory) as state:
        apply_nft(n, REJOIN)
        state.faults = [
            f for f in state.faults if not (f.get("kind") == "partition" and f.get("site") == site)
        ]
        state.save(directory)
    return {"kind": "partition", "site": site}


def apply_nft(n: NodePlan, script: str) -> None:
    try:
        nft.apply(n.namespace, script)
    except RuntimeError as e:
        raise LabError(f"{n.name}: {e}") from None
