"""The TURN relay on anycast, in the lab: every site relays on the same address.

As the reference describes it: clients reach the relay on the anycast address
(``listen``), and the site their packets land on serves them.  Relayed addresses are on
the anycast address too, so a peer's datagram to a relayed port may land at another
site than the one holding the allocation.  Every site therefore relays from its own slice
of the relay port range (``relay.site`` in the relay's configuration,
:func:`anyedge.proto.turn.port_slice`), and a site that receives a datagram for another
site's slice hands it over the backbone to that site — nftables marks it by destination
port (table ``ip anyedge_turn``, beside Plurimog's ``ip anyedge``) and the marks the lab
set up for Plurimog route it over the backbone link, ahead of the local table.

The same holds for datagrams a site's relay sends itself: two relay-only clients whose
allocations are at two sites send to each other's relayed addresses, which are the
anycast address with a port of the other site's slice.  The kernel would deliver such a
datagram locally (the address is its own) to a port nobody holds, so the ``output``
chain marks it for the owning site's backbone link too, and that site accepts a
datagram from its own (anycast) address on the backbone (``accept_local``).

:func:`start` writes each site's ``turn.yaml`` (one fleet key for all, so any site
checks any site's nonces), starts ``anyedge turn serve`` in each site's namespace and
installs the steering; the relay processes are recorded in the lab's state, so
``anyedge lab down`` ends them with everything else.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..adapters import netns, nft
from ..proto.turn.ports import port_slice
from .build import LabError, locked, node_dir
from .forward import backbone_links, ingress
from .plan import LabPlan, NodePlan

TURN_PORT = 3478
RELAY_PORTS = (49152, 65535)
TABLE = "anyedge_turn"


def relay_slices(plan: LabPlan) -> dict[str, tuple[int, int]]:
    """Each site's slice of the relay ports, by site code."""
    sites = plan.sites
    return {
        str(n.site): port_slice(RELAY_PORTS[0], RELAY_PORTS[1], i, len(sites))
        for i, n in enumerate(sites)
    }


def steering(plan: LabPlan, node: NodePlan) -> str:
    """The nft script that sends datagrams for other sites' relay ports over the
    backbone to those sites (only sites this one has a backbone link to)."""
    slices = relay_slices(plan)
    iif = ", ".join(f'"{i}"' for i in ingress(node)) or '"lo"'
    lines = [
        f"table ip {TABLE} {{}}",
        f"delete table ip {TABLE}",
        f"table ip {TABLE} {{",
        "  chain prerouting {",
        "    type filter hook prerouting priority mangle; policy accept;",
    ]
    address = node.anycast[0]
    links = backbone_links(plan, node)
    for b in links:
        lo, hi = slices[b.to_site]
        lines.append(
            f"    iifname {{ {iif} }} ip daddr {address} udp dport {lo}-{hi} "
            f"counter meta mark set {b.mark:#x}"
        )
    lines += [
        "  }",
        "  chain output {",  # a route chain: a new mark routes the datagram again
        "    type route hook output priority mangle; policy accept;",
    ]
    for b in links:
        lo, hi = slices[b.to_site]
        lines.append(
            f"    ip saddr {address} ip daddr {address} udp dport {lo}-{hi} "
            f"counter meta mark set {b.mark:#x}"
        )
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def config(plan: LabPlan, node: NodePlan, users: dict[str, str], fleet_key: str) -> str:
    i = [n.name for n in plan.sites].index(node.name)
    return (
        "\n".join(
            [
                f"realm: {plan.name}.lab",
                f"listen: [{{transport: udp, address: {node.anycast[0]}, port: {TURN_PORT}}}]",
                f"relay: {{ipv4: {node.anycast[0]}, ports: [{RELAY_PORTS[0]}, {RELAY_PORTS[1]}], "
                f"site: {{index: {i}, count: {len(plan.sites)}}}}}",
                f"auth: {{users: {json.dumps(users)}, fleet_keys: [{json.dumps(fleet_key)}]}}",
                # the lab's hosts live in 100.64.0.0/10, a special-purpose range
                "limits: {allow_peers: [100.64.0.0/10]}",
                "log: json",
            ]
        )
        + "\n"
    )


def start(
    plan: LabPlan,
    directory: Path,
    users: dict[str, str],
    fleet_key: str = "lab-fleet-key",
    timeout: float = 15.0,
) -> dict[str, int]:
    """Run the relay at every site; returns its process id by site code."""
    pids: dict[str, int] = {}
    for node in plan.sites:
        d = node_dir(directory, node.name)
        conf = d / "turn.yaml"
        conf.write_text(config(plan, node, users, fleet_key))
        log = d / "turn.log"
        log.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "anyedge", "turn", "serve", "-c", str(conf)]
        pid = netns.spawn(node.namespace, argv, log)
        with locked(directory) as state:
            state.pids.setdefault(node.name, []).append(pid)
            state.save(directory)
        pids[str(node.site)] = pid
        nft.apply(node.namespace, steering(plan, node))
        for b in backbone_links(plan, node):  # relayed datagrams from another site
            netns.run(node.namespace, ["sysctl", "-qw", f"net.ipv4.conf.{b.ifname}.accept_local=1"])
    end = time.monotonic() + timeout
    for node in plan.sites:
        log = node_dir(directory, node.name) / "turn.log"
        while "ready" not in (log.read_text(errors="replace").splitlines() if log.exists() else []):
            if not netns.alive(pids[str(node.site)]) or time.monotonic() > end:
                tail = log.read_text(errors="replace")[-400:] if log.exists() else ""
                raise LabError(f"{node.site}: the TURN relay did not start: {tail}")
            time.sleep(0.05)
    return pids


def steered(plan: LabPlan, site: str) -> int:
    """Datagrams ``site`` has handed to other sites for their relay ports so far."""
    node = plan.site_node(site)
    out = netns.run(node.namespace, ["nft", "-j", "list", "table", "ip", TABLE])
    total = 0
    for item in json.loads(out).get("nftables", []):
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                total += int(expr["counter"]["packets"])
    return total
