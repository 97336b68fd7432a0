"""What a lab can do with IPv6: the topology checks for sites that announce IPv6 prefixes.

A lab whose sites announce an IPv6 prefix is dual-stack (:mod:`anyedge.lab.plan`):
every link gets an IPv6 address too and every BGP session carries IPv6 unicast beside
IPv4.  Not every part of the lab does IPv6 yet, so a topology that asks for it where it
cannot be had is refused here, at the site node, before anything is built:

* a site with servers (its edge, :mod:`anyedge.lab.edge`, routes IPv4 only);
* a site whose BGP speaker is not one of :data:`IPV6_SPEAKERS` (every driver the lab
  has announces IPv6 today; a new one starts outside this list until it does).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from .schema import TopologyIn
from .yamlpos import Loc

# the site speakers that announce IPv6 prefixes in the lab (all four drivers do)
IPV6_SPEAKERS = ("frr", "bird", "gobgp", "exabgp")


def check_lab_ipv6(t: TopologyIn) -> Iterator[tuple[Loc, str]]:
    """An error per lab site that would announce an IPv6 prefix it cannot."""
    v6: dict[str, list[str]] = {}  # site code -> the IPv6 prefixes it announces
    codes = [s.code for s in t.sites]
    for p in t.prefixes:
        try:
            if ipaddress.ip_network(p.cidr, strict=False).version != 6:
                continue
        except ValueError:
            continue  # reported by the prefix checks
        for code in codes if p.sites == "all" else p.sites:
            v6.setdefault(code, []).append(p.cidr)
    for name, n in t.lab.nodes.items():
        if n.kind != "site" or n.site not in v6:
            continue
        speaker = n.speaker or "frr"
        said = ", ".join(v6[n.site])
        if speaker not in IPV6_SPEAKERS:
            yield (
                ("lab", "nodes", name, "speaker"),
                f"site {n.site} announces {said}, and its {speaker} speaker cannot announce "
                f"IPv6 in the lab yet (IPv6 sites use: {', '.join(IPV6_SPEAKERS)})",
            )
        if n.servers:
            yield (
                ("lab", "nodes", name, "servers"),
                f"site {n.site} announces {said}, and a site with servers routes IPv4 "
                "only in the lab",
            )
