"""Plurimog in a site's namespace: forward a share of flows to another site, by nftables.

A site that must shed load hands some of its flows to another site over the backbone;
the other site holds the anycast address too, so it serves the packets itself and
answers the client directly.  Per flow, not per packet: the share is taken by hashing
the flow's source address and port (``jhash ip saddr . th sport``) into 10,000 buckets,
so every packet of a TCP connection or a UDP exchange goes the same way.

The rules live in one table, ``ip anyedge``, replaced as a whole in one ``nft -f``
transaction each time (absolute, idempotent: the Traffic Manager's actuator contract).
In the ``prerouting`` hook, packets to an anycast address and a plan's port that arrived
from the Internet side (not over the backbone, so nothing is forwarded twice) get a
firewall mark naming the receiving site; policy routing (:func:`routing_commands`, set
up once when the lab is built) sends marked packets out of the backbone link to that
site, ahead of the local table that would otherwise deliver them here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

BUCKETS = 10_000
MARK_BASE = 0x100
TABLE_BASE = 100
RULE_PREF = 100
LOCAL_PREF = 200


@dataclass(frozen=True)
class Backbone:
    """A backbone link from this site to another one."""

    index: int  # numbers the mark and the routing table
    to_site: str
    ifname: str
    via: str  # the other site's address on the link
    shared: tuple[str, ...] | None = None  # anycast addresses both sites hold (None: all)

    @property
    def mark(self) -> int:
        return MARK_BASE + self.index

    @property
    def table(self) -> int:
        return TABLE_BASE + self.index


@dataclass(frozen=True)
class Share:
    port: int  # the plan's port
    to_site: str
    share: float  # of the plan's flows at this site, 0..1


def routing_commands(links: Sequence[Backbone]) -> list[str]:
    """``ip`` commands (for ``ip -batch``) that route each mark over its backbone link."""
    cmds = []
    for b in links:
        cmds.append(f"route add default via {b.via} dev {b.ifname} table {b.table}")
        cmds.append(f"rule add pref {RULE_PREF} fwmark {b.mark} lookup {b.table}")
    if links:
        # marked packets must be routed before the local table delivers them here
        cmds += [f"rule add pref {LOCAL_PREF} lookup local", "rule del pref 0 lookup local"]
    return cmds


def render(
    anycast: Sequence[str],
    ingress: Sequence[str],
    links: Sequence[Backbone],
    shares: Sequence[Share],
) -> str:
    """The nft script that makes the site forward ``shares`` (replacing any before)."""
    by_site = {b.to_site: b for b in links}
    lines = [
        "table ip anyedge {}",
        "delete table ip anyedge",
        "table ip anyedge {",
        "  chain prerouting {",
        "    type filter hook prerouting priority mangle; policy accept;",
    ]
    per_port: dict[int, list[Share]] = {}
    for s in shares:
        if s.to_site not in by_site:
            raise ValueError(f"no backbone link to {s.to_site}")
        if not 0.0 <= s.share <= 1.0:
            raise ValueError(f"a share is between 0 and 1, got {s.share}")
        if s.share > 0:
            per_port.setdefault(s.port, []).append(s)
    iif = ", ".join(f'"{i}"' for i in ingress)
    for port, ss in sorted(per_port.items()):
        # only addresses every receiver holds: another site would route the rest back
        # here, and the packet would go round until its TTL ran out
        held = set(anycast)
        for x in ss:
            shared = by_site[x.to_site].shared
            held &= set(anycast if shared is None else shared)
        if not held:
            raise ValueError(f"port {port}: no anycast address is held by every receiver")
        dst = ", ".join(a for a in anycast if a in held)
        total = sum(s.share for s in ss)
        if total > 1.0 + 1e-9:
            raise ValueError(f"port {port}: shares add up to {total:g} > 1")
        lo, entries = 0, []
        for s in sorted(ss, key=lambda s: s.to_site):
            n = min(round(s.share * BUCKETS), BUCKETS - lo)
            if n > 0:
                entries.append(f"{_range(lo, lo + n - 1)} : {by_site[s.to_site].mark:#x}")
                lo += n
        if not entries:
            continue
        if lo < BUCKETS:
            entries.append(f"{_range(lo, BUCKETS - 1)} : 0x0")
        lines.append(
            f"    iifname {{ {iif} }} ip daddr {{ {dst} }} meta l4proto {{ tcp, udp }} "
            f"th dport {port} meta mark set jhash ip saddr . th sport mod {BUCKETS} "
            f"map {{ {', '.join(entries)} }}"
        )
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def _range(lo: int, hi: int) -> str:
    return f"{lo}-{hi}" if hi > lo else str(lo)


def apply(namespace: str, script: str) -> None:
    """Load ``script`` into ``namespace``'s nftables in one transaction."""
    p = subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0:
        raise RuntimeError(f"{namespace}: nft: {p.stderr.strip()}\n{script}")
