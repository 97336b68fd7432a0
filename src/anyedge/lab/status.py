"""What is up and what is down in a running lab: ``anyedge lab status``.

Read, never changed: for each node its namespace, its daemons (alive or dead, by the
pids the lab's state records — so a daemon that died on its own shows) and each of
its BGP sessions as the node's own daemon sees it; each link (up when both ends are
administratively up and have a carrier); each site's announcements — what the state
records and how many prefixes each of its routers has heard from it — and its
Plurimog forwarding, recorded against installed (the shares in the site's nftables
table, counted only where the backbone link's route is there to carry them).

Everything found down goes into ``down`` as a sentence naming the link, session,
daemon or forwarding; ``unexplained`` keeps those no recorded fault
(:mod:`.faults`) accounts for — a lab that breaks on its own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..adapters import netns
from ..adapters.bgp.base import SiteSpeaker
from ..adapters.bgp.frr import Frr
from ..adapters.nft import BUCKETS
from ..model.lab import NodeKind
from .build import LabState, router_of, speaker_of
from .faults import excused, running
from .forward import backbone_links
from .plan import LabPlan, NodePlan


def status(plan: LabPlan, directory: Path) -> dict[str, Any]:
    state = LabState.load(directory)
    killed, cut = excused(state.faults, plan)
    down: list[tuple[str, bool]] = []  # (what, explained by a recorded fault)
    links = _links(plan, state, down)
    nodes, heard = [], {}
    for n in plan.nodes:
        row, sessions = _node(plan, directory, state, n, killed, cut, down)
        nodes.append(row)
        heard[n.name] = sessions
    sites = [_site(plan, state, n, heard, down) for n in plan.sites]
    return {
        "name": state.name,
        "nodes": nodes,
        "links": links,
        "sites": sites,
        "faults": state.faults,
        "down": [what for what, _ in down],
        "unexplained": [what for what, ok in down if not ok],
    }


def _links(plan: LabPlan, state: LabState, down: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    flags: dict[str, dict[str, list[str]]] = {}
    for n in plan.nodes:
        if netns.exists(n.namespace):
            text = netns.run(n.namespace, ["ip", "-j", "link", "show"], check=False)
            flags[n.name] = {x["ifname"]: x.get("flags", []) for x in json.loads(text or "[]")}
    recorded = {frozenset((str(f["a"]), str(f["b"]))) for f in state.faults if f["kind"] == "link"}
    out = []
    for n, p, other, q in plan.links():
        ends = [flags.get(x.name, {}).get(i.ifname, []) for x, i in ((n, p), (other, q))]
        up = all("UP" in f and "LOWER_UP" in f for f in ends)
        out.append({"a": n.name, "b": other.name, "up": up, "relation": p.relation})
        if not up:
            pair = frozenset((n.name, other.name))
            down.append((f"link {n.name}-{other.name} is down", pair in recorded))
    return out


def _node(
    plan: LabPlan,
    directory: Path,
    state: LabState,
    n: NodePlan,
    killed: set[str],
    cut: set[frozenset[str]],
    down: list[tuple[str, bool]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    pids = state.pids.get(n.name, [])
    ns_up = netns.exists(n.namespace)
    daemons = {
        name: ("alive" if running(n, pid) else "dead")
        for name, pid in state.daemons.get(n.name, {}).items()
    }
    for name, how in daemons.items():
        if how == "dead":
            down.append((f"{n.name}: its {name} is not running", n.name in killed))
    row: dict[str, Any] = {
        "node": n.name,
        "kind": str(n.kind),
        "namespace": n.namespace,
        "up": ns_up,
        "processes": f"{sum(netns.alive(p) for p in pids)}/{len(pids)}",
        "speaker": str(n.speaker) if n.speaker else "",
        "site": n.site or "",
        "daemons": daemons,
        "sessions": {},
        "established": "",
        "error": None,
    }
    got: dict[str, Any] = {}
    if not (n.bgp_ports and ns_up):
        return row, got
    drv: SiteSpeaker | Frr = (
        router_of(plan, n, directory)
        if n.kind is NodeKind.ROUTER
        else speaker_of(plan, n, directory)
    )
    try:
        seen = drv.sessions()
        if isinstance(drv, Frr) and n.kind is NodeKind.ROUTER:
            got = {a: int(str(p.get("pfxRcd", 0))) for a, p in drv.summary().items()}
    except Exception as e:  # a daemon that died is a status, not a crash
        dead = any(h == "dead" for h in daemons.values())
        row["established"] = "daemon dead" if dead else "no answer"
        daemon = f"{n.speaker} speaker" if n.speaker else "FRR"
        row["error"] = f"its {daemon} does not answer: {str(e).splitlines()[0][:200]}"
        if not dead:
            down.append((f"{n.name}: {row['error']}", n.name in killed))
        return row, got
    by_address = {p.peer_address: p.peer for p in n.bgp_ports}
    by_address.update({lo: peer for peer, lo, _ in n.ibgp})  # iBGP: by the peer's loopback
    row["sessions"] = {by_address[a]: ok for a, ok in seen.items()}
    row["established"] = f"{sum(seen.values())}/{len(seen)}"
    for a, ok in seen.items():
        if not ok:
            pair = frozenset((n.name, by_address[a]))
            down.append(
                (f"session {n.name}-{by_address[a]} is not established (at {n.name})", pair in cut)
            )
    return row, {by_address[a]: k for a, k in got.items() if a in by_address}


def _site(
    plan: LabPlan,
    state: LabState,
    n: NodePlan,
    heard: dict[str, dict[str, Any]],
    down: list[tuple[str, bool]],
) -> dict[str, Any]:
    recorded = [[str(p), int(k)] for p, k in state.routes.get(n.name, [])]
    heard_by = {p.peer: heard.get(p.peer, {}).get(n.name) for p in n.bgp_ports}
    want = [(int(port), str(to), float(share)) for port, to, share in state.forward.get(n.name, [])]
    installed = installed_forwarding(plan, n)
    for port, to, share in want:
        got = sum(float(s) for p, t, s in installed if p == port and t == to)
        if abs(got - share) > 1.0 / BUCKETS:
            link = frozenset(
                (n.name, next(p.peer for p in n.backbone if plan.node(p.peer).site == to))
            )
            faulty = any(
                f["kind"] == "link" and frozenset((f["a"], f["b"])) == link for f in state.faults
            )
            down.append(
                (
                    f"{n.site} forwards {100 * got:.0f} % of port {port} to {to}, "
                    f"recorded {100 * share:.0f} %",
                    faulty,
                )
            )
    return {
        "site": n.site,
        "node": n.name,
        "speaker": str(n.speaker),
        "announces": recorded,
        "heard_by": heard_by,
        "forward_recorded": [list(w) for w in want],
        "forward_installed": installed,
    }


_RULE = re.compile(r"th dport (\d+) .*map \{(.*)\}")
_ENTRY = re.compile(r"(\d+)(?:-(\d+))?\s*:\s*(0x[0-9a-f]+)")


def installed_forwarding(plan: LabPlan, n: NodePlan) -> list[list[Any]]:
    """[[port, to site, share]] as the site's nftables table and routing forward now:
    the buckets marked for a backbone link, counted only if that link's routing table
    has its route (without it the packets are served at home)."""
    if not n.backbone or not netns.exists(n.namespace):
        return []
    text = netns.run(n.namespace, ["nft", "list", "table", "ip", "anyedge"], check=False)
    links = {b.mark: b for b in backbone_links(plan, n)}
    routed = {
        b.mark
        for b in links.values()
        if netns.run(
            n.namespace, ["ip", "route", "show", "table", str(b.table)], check=False
        ).strip()
    }
    out = []
    for line in text.splitlines():
        m = _RULE.search(line)
        if not m:
            continue
        shares: dict[str, int] = {}
        for lo, hi, mark in _ENTRY.findall(m.group(2)):
            b = links.get(int(mark, 16))
            if b is None:
                continue
            width = (int(hi) if hi else int(lo)) - int(lo) + 1
            shares[b.to_site] = shares.get(b.to_site, 0) + (width if b.mark in routed else 0)
        out += [[int(m.group(1)), to, k / BUCKETS] for to, k in sorted(shares.items())]
    return out
