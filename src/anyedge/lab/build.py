"""Bring a lab up, keep track of it, and take it down — even after a crash.

Everything a lab makes is recorded in its **lab directory** before it is made:
``state.json`` lists the namespaces (written before the first one is created) and the
process ids of every daemon and service (added as each starts; ``daemons`` keeps each
one's current pid by name, for ``anyedge lab status`` and for restarts), plus what each
site announces and forwards now and the faults made on purpose (:mod:`.faults`).
``anyedge lab down`` reads it and ends every recorded process by its id, ends whatever
else still runs inside the lab's namespaces
(``ip netns pids``), and deletes the namespaces — the recorded ones and any other with
the lab's name prefix, so a lab whose ``up`` died halfway still goes away.

The way up (:func:`up`):

1. namespaces, one per node (``ae-<lab>-<node>``), with forwarding on;
2. veth links with the plan's addresses; anycast addresses on the sites' ``lo``;
   default routes for sites and clients (routers learn the clients' networks in BGP);
3. FRR on every router, then each site's BGP speaker (FRR, BIRD, GoBGP or ExaBGP),
   then each site's service (:mod:`.service`) — or, at a site with ``servers: N``, its
   servers, their services and its edge agent (:mod:`.edge`);
4. wait until every BGP session is up and the routers' routes to the anycast
   prefixes have stopped changing.

Each node's files (configuration, sockets, logs) live in ``<lab dir>/nodes/<node>``.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..adapters import netns, nft
from ..adapters.bgp.base import (
    Neighbor,
    Route,
    SiteSpeaker,
    SpeakerConfig,
    SpeakerError,
    Timers,
)
from ..adapters.bgp.frr import Frr, Igp, RouterNeighbor
from ..model.files.atomic import write_all
from ..model.files.topology import save_world
from ..model.lab import NodeKind, Speaker
from ..model.world import World
from . import kernel_routes
from .delayline import End, LinkSpec
from .plan import LabPlan, NodePlan, Port, make_plan, namespace_prefix

STATE = "state.json"
LOCK = "state.lock"
TOPOLOGY = "topology"  # the copy of the topology the lab was built from
JOURNAL = "control.sqlite"  # the Traffic Manager's journal (anyedge lab control)
Progress = Callable[[str], None]


class LabError(RuntimeError):
    """The lab could not be brought up or reached; the message says what to do."""


@dataclass
class LabState:
    """What a lab made, as recorded in its directory."""

    name: str
    topology: str
    namespaces: list[str] = field(default_factory=list)
    pids: dict[str, list[int]] = field(default_factory=dict)
    routes: dict[str, list[list[Any]]] = field(default_factory=dict)  # site: [[cidr, prepend]]
    forward: dict[str, list[list[Any]]] = field(default_factory=dict)  # site: [[port, to, share]]
    # the faults made with ``anyedge lab fault`` and not yet undone (:mod:`.faults`)
    faults: list[dict[str, Any]] = field(default_factory=list)
    # node: daemon name (bgpd, bird, gobgpd, exabgp, service, ...) -> its current pid
    daemons: dict[str, dict[str, int]] = field(default_factory=dict)
    started: float = 0.0
    ready: bool = False

    @classmethod
    def load(cls, directory: Path) -> LabState:
        path = directory / STATE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise LabError(f"{directory}: no lab here (no {STATE}); run anyedge lab up") from None
        except (OSError, json.JSONDecodeError) as e:
            raise LabError(f"{path}: cannot read the lab's state: {e}") from None
        return cls(**data)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        write_all({directory / STATE: json.dumps(self.__dict__, indent=1, sort_keys=True)})

    def add_pids(self, directory: Path, node: str, pids: list[int]) -> None:
        self.pids.setdefault(node, []).extend(pids)
        self.save(directory)


@contextmanager
def locked(directory: Path) -> Iterator[LabState]:
    """The lab's state, read and held under an exclusive lock until the block ends, so
    that two commands changing the lab at once (``forward`` during ``compare``, say)
    do not lose each other's changes.  Save it inside the block."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOCK).open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield LabState.load(directory)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def node_dir(directory: Path, node: str) -> Path:
    return directory / "nodes" / node


def speaker_config(plan: LabPlan, node: NodePlan, directory: Path) -> SpeakerConfig:
    by_name = {n.name: n for n in plan.nodes}
    neighbors = tuple(
        Neighbor(
            p.peer_address,
            _asn(by_name[p.peer]),
            p.ip,
            p.ifname,
            runs_bfd(by_name[p.peer]),
            p.prepend,
            p.med,
            p.communities,
            p.address6.split("/")[0],
        )
        for p in node.bgp_ports
    )
    assert node.asn is not None
    assert node.router_id is not None
    return SpeakerConfig(
        node=node.name,
        namespace=node.namespace,
        workdir=node_dir(directory, node.name),
        asn=node.asn,
        router_id=node.router_id,
        neighbors=neighbors,
        timers=Timers(),
        ipv6=plan.ipv6,
    )


def runs_bfd(n: NodePlan) -> bool:
    """Routers (FRR) and sites whose speaker is FRR or BIRD run BFD."""
    return n.kind is NodeKind.ROUTER or n.speaker in (Speaker.FRR, Speaker.BIRD)


def _asn(n: NodePlan) -> int:
    assert n.asn is not None
    return n.asn


def router_of(plan: LabPlan, node: NodePlan, directory: Path) -> Frr:
    """The driver of an ISP router: its eBGP sessions, and in an AS with several
    routers its iBGP sessions and OSPF (:mod:`.igp`)."""
    cfg = speaker_config(plan, node, directory)
    rel = {p.peer_address: p.relation for p in node.bgp_ports}
    igp = None
    if node.loopback is not None:
        assert node.asn is not None
        internal = tuple(Neighbor(lo, node.asn, node.loopback, "lo") for _, lo, _ in node.ibgp)
        cfg = replace(cfg, neighbors=cfg.neighbors + internal)
        rel.update(dict.fromkeys((lo for _, lo, _ in node.ibgp), "internal"))
        igp = Igp(node.loopback, tuple((p.ifname, p.address, p.cost) for p in node.igp_ports))
    neighbors = tuple(RouterNeighbor(n, rel[n.address]) for n in cfg.neighbors)
    return Frr(cfg, neighbors, networks=node.networks, igp=igp)


def speaker_of(plan: LabPlan, node: NodePlan, directory: Path) -> SiteSpeaker:
    """The driver of a site's BGP speaker."""
    cfg = speaker_config(plan, node, directory)
    kind = node.speaker or Speaker.FRR
    if kind is Speaker.FRR:
        return Frr(cfg)
    if kind is Speaker.BIRD:
        from ..adapters.bgp.bird import Bird

        return Bird(cfg)
    if kind is Speaker.GOBGP:
        from ..adapters.bgp.gobgp import GoBgp

        return GoBgp(cfg)
    from ..adapters.bgp.exabgp import ExaBgp

    return ExaBgp(cfg)


def initial_routes(node: NodePlan) -> list[Route]:
    return [Route(p) for p in node.prefixes]


# ------------------------------------------------------------------------------ up


def check_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces): run it as root")


# what each speaker needs installed, and how to install it
SPEAKER_NEEDS: dict[Speaker, tuple[str, str, str]] = {
    # speaker: (kind, what, how)
    Speaker.EXABGP: ("module", "exabgp", "pip install 'anyedge[lab]'"),
    Speaker.BIRD: ("program", "bird", "apt-get install bird2"),
    Speaker.GOBGP: ("program", "gobgpd", "apt-get install gobgpd"),
}


def check_speakers(plan: LabPlan) -> None:
    """Refuse, before anything is made, a lab whose sites use a BGP speaker this install
    lacks (it would otherwise fail halfway through, when that speaker starts)."""
    missing: dict[str, list[str]] = {}
    for n in plan.nodes:
        need = SPEAKER_NEEDS.get(n.speaker) if n.speaker is not None else None
        if need is None:
            continue
        kind, what, how = need
        absent = (
            importlib.util.find_spec(what) is None
            if kind == "module"
            else shutil.which(what) is None
        )
        if absent:
            missing.setdefault(f"{n.speaker} is not installed ({how})", []).append(n.name)
    if missing:
        raise LabError(
            "; ".join(
                f"{why}, and the lab's {', '.join(nodes)} use it" for why, nodes in missing.items()
            )
        )


def up(
    world: World,
    plan: LabPlan,
    directory: Path,
    progress: Progress = lambda _: None,
    timeout: float = 60.0,
) -> LabState:
    """Build the lab of ``plan``; on failure, take down what was made (keeping the
    nodes' logs) and raise."""
    check_root()
    check_speakers(plan)
    prefix = namespace_prefix(plan.name)
    if (directory / STATE).exists() or netns.listed(prefix):
        raise LabError(
            f"lab {plan.name!r} is already up (or left over) in {directory}: "
            f"run anyedge lab down --dir {directory} first"
        )
    _check_directory(directory)
    for leftover in directory.glob(JOURNAL + "*"):
        leftover.unlink()  # a journal of another lab must not steer this one
    save_world(world, directory / TOPOLOGY)  # later commands read this copy, not the file
    state = LabState(
        name=plan.name,
        topology=str(directory / TOPOLOGY),
        namespaces=list(plan.namespaces),
        started=time.time(),
    )
    state.save(directory)  # before anything is made: down can always find it
    try:
        _build(plan, directory, state, progress)
        progress("waiting for BGP to converge")
        wait_converged(plan, directory, timeout)
        state.ready = True
        state.save(directory)
    except BaseException as e:
        down(directory, keep_logs=True)
        if isinstance(e, (netns.NetnsError, SpeakerError, OSError, subprocess.SubprocessError)):
            raise LabError(
                f"lab {plan.name!r} did not come up: {e} (logs in {directory / 'nodes'})"
            ) from e
        raise
    return state


def _check_directory(directory: Path) -> None:
    """FRR's daemons run as the ``frr`` user: it must be able to enter the lab directory."""
    try:
        pwd.getpwnam("frr")
    except KeyError:
        raise LabError("no frr user: install FRR (apt-get install frr)") from None
    for tool in ("ip", "nft", "vtysh"):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} is not installed (apt-get install iproute2 nftables frr)")
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(directory.stat().st_mode | 0o755)
    for parent in directory.resolve().parents:
        if not parent.stat().st_mode & 0o001:
            raise LabError(
                f"the frr user cannot enter {parent} (mode "
                f"{oct(parent.stat().st_mode & 0o777)}): choose another --dir or chmod o+x it"
            )


def _build(plan: LabPlan, directory: Path, state: LabState, progress: Progress) -> None:
    _network(plan, directory, state, progress)
    _start(plan, directory, state, progress)


def _network(plan: LabPlan, directory: Path, state: LabState, progress: Progress) -> None:
    """Namespaces, links, addresses and routes: one ``ip -batch`` per namespace."""
    progress(f"creating {len(plan.nodes)} namespaces")
    for n in plan.nodes:
        netns.add(n.namespace)
    progress("linking them")
    shaped = []
    for n, p, other, q in plan.links():
        if p.shape.shaped:
            shaped.append(
                LinkSpec(End(n.namespace, p.ifname), End(other.namespace, q.ifname), p.shape)
            )
        else:
            netns.veth(n.namespace, p.ifname, other.namespace, q.ifname)
    if shaped:
        progress(f"starting the delay lines of {len(shaped)} links")
        state.add_pids(directory, DELAY_LINES, [start_delay_lines(shaped, directory)])
    for n in plan.nodes:
        cmds = [f"addr add {p.address} dev {p.ifname}" for p in n.ports]
        cmds += [f"addr add {p.address6} dev {p.ifname} nodad" for p in n.ports if p.address6]
        if n.servers:  # the servers hold the anycast addresses; the site routes to them
            from .edge import router_commands

            cmds += router_commands(n)
        else:
            cmds += [f"addr add {a}/32 dev lo" for a in n.anycast]
            cmds += [f"addr add {a}/128 dev lo" for a in n.anycast6]
        if n.loopback:
            cmds.append(f"addr add {n.loopback}/32 dev lo")
        cmds += [f"route add {' '.join(r)}" for r in n.default_routes()]
        if n.kind is NodeKind.SITE:
            from .forward import backbone_links

            cmds += nft.routing_commands(backbone_links(plan, n))
        netns.batch(n.namespace, cmds)


DELAY_LINES = "delay-lines"  # the key of the delay lines' process in the lab's state
# the key of processes the lab runs in the machine's namespace, each with ``--dir
# DIRECTORY`` in its command line (the zone followers of ``lab dns --store``)
HOST_PIDS = "host"


def start_delay_lines(links: list[LinkSpec], directory: Path, timeout: float = 30.0) -> int:
    """One process for every link with a delay, jitter or loss
    (:mod:`anyedge.lab.delayline`), in the first link's first namespace (so that deleting
    it ends the process too); returns its pid once every device is up."""
    d = directory / DELAY_LINES
    d.mkdir(parents=True, exist_ok=True)
    spec, ready = d / "links.json", d / "ready.json"
    spec.write_text(json.dumps([x.to_dict() for x in links], indent=1))
    ready.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "anyedge.lab.delayline", str(spec), "--ready", str(ready)]
    pid = netns.spawn(links[0].a.namespace, argv, d / "delaylines.log")
    end = time.monotonic() + timeout
    while not ready.exists():
        if not netns.alive(pid):
            log = (d / "delaylines.log").read_text(errors="replace").strip()
            raise LabError(f"the delay lines did not start: {log[-300:] or 'no output'}")
        if time.monotonic() > end:
            raise LabError(f"the delay lines were not up within {timeout:g} s")
        time.sleep(0.05)
    return pid


def _start(plan: LabPlan, directory: Path, state: LabState, progress: Progress) -> None:
    """FRR on the routers, then each site's speaker and service."""
    progress(f"starting FRR on {len(plan.of_kind(NodeKind.ROUTER))} routers")
    for n in plan.of_kind(NodeKind.ROUTER):
        pids = router_of(plan, n, directory).start()
        state.daemons[n.name] = dict(zip(daemon_names(n), pids, strict=True))
        state.add_pids(directory, n.name, pids)
    for n in plan.sites:
        progress(f"starting {n.speaker} and the service at {n.site}")
        speaker = speaker_of(plan, n, directory)
        pids = speaker.start(initial_routes(n))
        state.daemons[n.name] = dict(zip(daemon_names(n), pids, strict=True))
        state.add_pids(directory, n.name, pids)
        state.routes[n.name] = [[r.prefix, r.prepend] for r in initial_routes(n)]
        if n.servers:
            from .edge import build_site

            build_site(plan, n, directory, state)
        else:
            pid = start_service(plan, n, directory)
            state.daemons[n.name][SERVICE] = pid
            state.add_pids(directory, n.name, [pid])


SERVICE = "service"  # the daemon name of a site's service in the state's ``daemons``


def daemon_names(node: NodePlan) -> tuple[str, ...]:
    """The BGP daemons of ``node``, in the order its driver starts them (the last is
    the one that speaks BGP): FRR's three, or the site's one speaker."""
    from ..adapters.bgp.frr import DAEMONS, IGP_DAEMONS

    kind = Speaker.FRR if node.kind is NodeKind.ROUTER else node.speaker
    return {
        Speaker.FRR: IGP_DAEMONS if node.loopback else DAEMONS,
        Speaker.BIRD: ("bird",),
        Speaker.GOBGP: ("gobgpd",),
        Speaker.EXABGP: ("exabgp",),
    }[kind or Speaker.FRR]


def start_service(plan: LabPlan, node: NodePlan, directory: Path, timeout: float = 10.0) -> int:
    d = node_dir(directory, node.name)
    d.mkdir(parents=True, exist_ok=True)
    log = d / "service.log"
    log.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "anyedge.lab.service", "--site", str(node.site)]
    for a in (*node.anycast, *node.anycast6):
        argv += ["--address", a]
    argv += ["--ports", ",".join(map(str, plan.ports))]
    argv += metrics_args(plan, targets_file(directory, node.name, "site"), node.capacity_ms)
    pid = netns.spawn(node.namespace, argv, log)
    return wait_ready(pid, log, f"{node.name}: the service", timeout)


def targets_file(directory: Path, node: str, service: str) -> Path:
    """The Prometheus file_sd target file of one service (Prometheus globs only a
    path's last part, so they are all in one folder: ``<lab>/prometheus``)."""
    d = directory / "prometheus"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{node}-{service}.json"


def metrics_args(plan: LabPlan, sd: Path, capacity: float) -> list[str]:
    """A service's ``/metrics`` for Prometheus (:mod:`.service_metrics`): on a free port
    of 127.0.0.1 in this process's namespace (the lab's host, where Prometheus runs),
    registered in the file_sd target file ``sd``, with each plan's CPU cost."""
    return [
        "--metrics", "127.0.0.1:0", "--metrics-netns", f"/proc/{os.getpid()}/ns/net",
        "--metrics-sd", str(sd), "--plans", ",".join(plan.plans),
        "--cpu-ms", ",".join(f"{c:g}" for c in plan.cpu_ms), "--capacity", f"{capacity:g}",
    ]  # fmt: skip


def wait_ready(pid: int, log: Path, what: str, timeout: float) -> int:
    """``pid`` once its ``log`` has a line ``ready``; :class:`LabError` naming ``what`` if
    it ends first or takes longer than ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if log.exists() and "ready" in log.read_text(errors="replace").splitlines():
            return pid
        if not netns.alive(pid):
            raise LabError(f"{what} did not start: {log.read_text(errors='replace')[-500:]}")
        time.sleep(0.05)
    raise LabError(f"{what} did not start in {timeout:g} s (see {log})")


def wait_converged(
    plan: LabPlan,
    directory: Path,
    timeout: float = 60.0,
    quiet: float = 1.5,
    expect: dict[str, dict[str, int]] | None = None,
    faults: list[Any] | None = None,
) -> float:
    """Wait until BGP has converged; return when the routes last changed (seconds from
    the call, to the 0.2 s it polls at).

    First every session must be up and every expectation met, each router asked until
    it is (then no more) — ``expect`` maps a router to the number of prefixes it must
    have received from each neighbour address (after a site announces or withdraws, its
    routers must have heard it, however slowly the site's speaker sent it); then the
    routers' routes to the anycast prefixes must stay the same for ``quiet`` seconds.
    Sessions that a recorded fault takes down (:func:`anyedge.lab.faults.excused`), or
    one of the records ``faults`` given here (a lab broken by hand), are waited for only
    until they are down (a partition ends them at their hold timer, seconds after it is
    recorded), not to come up, nor expectations on them.  Raises :class:`LabError`
    naming the sessions that did not settle past ``timeout``, and at once, naming it, if
    a BGP daemon no fault killed is not running (its sessions cannot come up).
    """
    from .faults import excused

    t0 = time.monotonic()
    state = LabState.load(directory) if (directory / STATE).exists() else None
    records = [*(state.faults if state else []), *(faults or [])]
    killed, cut = excused(records, plan)
    routers = [
        (n, router_of(plan, n, directory))
        for n in plan.of_kind(NodeKind.ROUTER)
        if n.name not in killed
    ]
    expect = expect or {}
    looked = False
    pending = routers
    while True:
        _check_daemons(plan, state, killed)
        unsettled = [
            (n, why, port)
            for n, r in pending
            for why, port in _unsettled(r, n, expect.get(n.name, {}), cut)
        ]
        waiting = [why for _, why, _ in unsettled]
        if not waiting:
            break
        # a router seen settled is not asked again: after a withdrawal or a heal most
        # routers are settled from the first look (a question to a daemon's vty socket,
        # Frr.show, costs ~0.3 ms of CPU; a vtysh process per question cost ~35 ms)
        still = {n.name for n, _, _ in unsettled}
        pending = [(n, r) for n, r in pending if n.name in still]
        if not looked and time.monotonic() - t0 > LINK_LOOK:
            looked = True  # once: a session over a link that is down will not come up
            _check_links([(n, p) for n, _, p in unsettled if p is not None])
        if time.monotonic() - t0 > timeout:
            raise LabError(
                f"BGP did not settle in {timeout:g} s: {'; '.join(waiting)} "
                "(anyedge lab status shows what is down; anyedge lab heal restores the lab)"
            )
        time.sleep(0.1)
    last, since = None, time.monotonic()
    while time.monotonic() - since < quiet:
        now = anycast_routes(plan)
        if now != last:
            last, since = now, time.monotonic()
        if time.monotonic() - t0 > timeout:
            raise LabError(f"routes still changing after {timeout:g} s")
        time.sleep(0.2)
    return since - t0


def check_daemons(plan: LabPlan, directory: Path) -> None:
    """Before a command changes a running lab: :class:`LabError` naming each BGP daemon
    that is not running though no recorded fault killed it (it would leave sessions
    that never settle)."""
    from .faults import excused

    state = LabState.load(directory)
    _check_daemons(plan, state, excused(state.faults, plan)[0])


def _check_daemons(plan: LabPlan, state: LabState | None, killed: set[str]) -> None:
    """:class:`LabError` naming the BGP daemons that are not running though no fault
    killed them: nothing waits for sessions that cannot come up."""
    if state is None or not state.ready:
        return  # still coming up: its own timeouts apply
    gone = []
    for n in plan.nodes:
        if not n.bgp_ports or n.name in killed:
            continue
        for name, pid in state.daemons.get(n.name, {}).items():
            if name != SERVICE and not netns.alive(pid):
                peers = ", ".join(sorted({p.peer for p in n.bgp_ports}))
                gone.append(
                    f"{n.name}'s {name} (pid {pid}) is not running: its sessions "
                    f"with {peers} cannot come up"
                )
    if gone:
        raise LabError("; ".join(gone) + " (anyedge lab fault restart NODE, or anyedge lab heal)")


def _unsettled(
    r: Frr, node: NodePlan, expect: dict[str, int], cut: set[frozenset[str]]
) -> list[tuple[str, Port | None]]:
    """Why ``node`` has not settled: each session not established (with its port),
    each neighbour whose prefixes it has not heard as expected (sessions in ``cut``
    excepted: for those, that they are still established)."""
    try:
        peers = r.summary()
    except SpeakerError as e:  # a question can race a bgpd that has only just started
        return [(f"{node.name} does not answer ({str(e)[:120]})", None)]
    out: list[tuple[str, Port | None]] = []
    for p in node.bgp_ports:
        info = peers.get(p.peer_address, {})
        st = str(info.get("state", "unknown"))
        if frozenset((node.name, p.peer)) in cut:
            # a fault holds it down: wait until it is down (a partition ends it only at
            # the hold timer), then not for it to come up
            if st == "Established":
                out.append(
                    (f"session {node.name}-{p.peer} is still up, though a fault cuts it", None)
                )
            continue
        got = int(str(info.get("pfxRcd", 0)))
        up_ms = int(str(info.get("peerUptimeMsec", FRESH_MS)))
        if st != "Established":
            out.append((f"session {node.name}-{p.peer} is {st} (at {node.name})", p))
        elif up_ms < FRESH_MS:
            out.append((f"session {node.name}-{p.peer} came up {up_ms} ms ago", None))
        elif p.peer_address in expect and got != expect[p.peer_address]:
            want = expect[p.peer_address]
            out.append((f"{node.name} has {got} prefixes from {p.peer}, not {want}", None))
    if node.igp_ports:  # OSPF first: iBGP's next hops are priced by it (.igp)
        try:
            full = r.ospf_full()
        except SpeakerError as e:
            return [(f"{node.name}'s ospfd does not answer ({str(e)[:120]})", None)]
        for p in node.igp_ports:
            if p.peer_address not in full and frozenset((node.name, p.peer)) not in cut:
                out.append((f"OSPF adjacency {node.name}-{p.peer} is not full", p))
        costs = r.ospf_costs() if not out and not cut else {}
        for peer, lo, cost in node.ibgp if costs else ():  # the SPF over every link
            if costs.get(f"{lo}/32") != cost:
                at = costs.get(f"{lo}/32")
                how = "no route" if at is None else f"cost {at}"
                out.append((f"OSPF at {node.name} reaches {peer} at {how}, not {cost}", None))
    for peer, lo, _ in node.ibgp:  # iBGP, once OSPF has found the peer's loopback
        if frozenset((node.name, peer)) in cut:
            continue
        st = str(peers.get(lo, {}).get("state", "unknown"))
        if st != "Established":
            out.append((f"iBGP session {node.name}-{peer} is {st} (at {node.name})", None))
    return out


LINK_LOOK = 3.0  # seconds of waiting after which the links of unsettled sessions are read
# A session that has just come up has not sent its routes yet: FRR holds a new peer's
# first updates for its coalesce time (1 s by default), so the routes can stay the same
# for longer than settling's quiet time right after the session is up.
FRESH_MS = 1500


def _check_links(sessions: list[tuple[NodePlan, Port]]) -> None:
    """:class:`LabError` naming each link under a waiting session that is down (no
    recorded fault took it down, or the session would not be waited for)."""
    down = []
    for n, p in sessions:
        text = netns.run(n.namespace, ["ip", "-j", "link", "show", "dev", p.ifname], check=False)
        flags = (json.loads(text or "[{}]") or [{}])[0].get("flags", [])
        if "UP" not in flags or "LOWER_UP" not in flags:
            down.append(f"link {n.name}-{p.peer} is down at {n.name} ({p.ifname})")
    if down:
        raise LabError(
            f"{'; '.join(down)}, and no fault records it: its BGP session cannot come up "
            "(anyedge lab fault link-up A B, or anyedge lab heal)"
        )


def anycast_routes(plan: LabPlan) -> dict[str, bytes]:
    """Each router's kernel routes learned by BGP (IPv6's too in a dual-stack lab), as
    bytes equal for equal routes (:mod:`.kernel_routes`: netlink from a thread in the
    router's namespace; settling reads every router's routes five times a second, which
    was ~5,000 ``ip`` processes in a run of the test suite)."""
    families = (socket.AF_INET, socket.AF_INET6) if plan.ipv6 else (socket.AF_INET,)
    out = {}
    for n in plan.of_kind(NodeKind.ROUTER):
        try:
            out[n.name] = kernel_routes.read(n.namespace, families)
        except OSError as e:
            raise LabError(f"{n.name}: its kernel's routes: {e}") from None
    return out


# ---------------------------------------------------------------------------- down


def down(directory: Path, name: str | None = None, keep_logs: bool = False) -> dict[str, Any]:
    """End every process and delete every namespace of the lab in ``directory``.

    Works on a lab whose ``up`` crashed: every process inside a recorded namespace, or
    one with the lab's prefix, is ended by its id (``ip netns pids``: a recorded pid is
    never signalled unless it still runs inside one of the lab's namespaces, so a pid
    the system has since reused is safe), then the namespaces go, and the journal of
    ``anyedge lab control`` with them.  Returns what was removed.
    """
    check_root()
    try:
        state: LabState | None = LabState.load(directory)
    except LabError:
        state = None
    if state is None and name is None:
        raise LabError(f"{directory}: no lab here (no {STATE}); give --name to clean up by name")
    lab_name = name or (state.name if state else "")
    spaces = set(state.namespaces if state else []) | set(netns.listed(namespace_prefix(lab_name)))
    removed = [ns for ns in sorted(spaces) if netns.exists(ns)]
    inside = [p for ns in removed for p in netns.pids(ns)]
    netns.stop(inside)
    if state is not None:
        # the delay lines' process closes two TAP devices per link as it ends; with tens
        # of links the kernel takes seconds over it (the process sits in D state, deaf to
        # SIGKILL), so wait for it rather than leave it behind
        netns.stop(state.pids.get(DELAY_LINES, []), grace=20.0)
        netns.stop([p for p in state.pids.get(HOST_PIDS, []) if _runs_in(p, directory)])
    for ns in removed:
        netns.remove(ns)
    left = [ns for ns in removed if netns.exists(ns)]
    if left:
        raise LabError(f"could not delete namespaces: {', '.join(left)}")
    for f in (STATE, LOCK, *(p.name for p in directory.glob(JOURNAL + "*"))):
        (directory / f).unlink(missing_ok=True)
    # services killed rather than stopped leave their Prometheus targets behind
    shutil.rmtree(directory / "prometheus", ignore_errors=True)
    if not keep_logs:
        for sub in ("nodes", TOPOLOGY, DELAY_LINES):
            if (directory / sub).is_dir():
                shutil.rmtree(directory / sub, ignore_errors=True)
    return {"name": lab_name, "namespaces": removed, "processes": len(inside)}


def _runs_in(pid: int, directory: Path) -> bool:
    """Whether ``pid`` is a process started for the lab in ``directory`` (its command
    line names the directory; a pid the system reused for another process does not)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(directory.absolute()).encode() in argv


def attach(directory: Path) -> tuple[World, LabPlan, LabState]:
    """The world, plan and state of the lab running in ``directory``."""
    from ..model.files import load_world

    state = LabState.load(directory)
    world = load_world(state.topology)
    return world, make_plan(world, state.name), state
