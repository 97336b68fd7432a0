"""What a lab can do with IPv6: the topology checks for sites that announce IPv6 prefixes.

A lab whose sites announce an IPv6 prefix is dual-stack (:mod:`anyedge.lab.plan`):
every link gets an IPv6 address too and every BGP session carries IPv6 unicast beside
IPv4.  Not every part of the lab does IPv6 yet, so a topology that asks for it where it
cannot be had is refused here, at the site node, before anything is built:

* a site with servers (its edge, :mod:`anyedge.lab.edge`, routes IPv4 only);
* a link's own IPv6 addresses (``ipv6: [A/LEN, B/LEN]``, one per endpoint, in their
  order) that are not two addresses of one network, overlap another link's or a
  prefix, fall in the range the lab generates the others from (:data:`LINKS6`), or are
  given in a lab with no IPv6 at all;
* a metro lab (several routers per AS, :mod:`.labmetro`): its IGP is OSPFv2;
* a site whose BGP speaker is not one of :data:`IPV6_SPEAKERS` (every driver the lab
  has announces IPv6 today; a new one starts outside this list until it does).
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator

from .labmetro import is_metro_lab
from .schema import TopologyIn
from .yamlpos import Loc

# the site speakers that announce IPv6 prefixes in the lab (all four drivers do)
IPV6_SPEAKERS = ("frr", "bird", "gobgp", "exabgp")
# the range the links' IPv6 /126s are generated from (link i: LINKS6 + 4i)
LINKS6 = "2001:db8:ffff::/48"


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
    in_lab = {n.site for n in t.lab.nodes.values() if n.kind == "site"}
    dual = any(code in in_lab for code in v6)
    yield from _check_link_addresses(t, dual)
    if dual and is_metro_lab(t):
        sites = ", ".join(sorted(code for code in v6 if code in in_lab))
        yield (
            ("lab", "metros"),
            f"sites {sites} announce IPv6, and a lab whose routers stand in metros is IPv4 "
            "only (its IGP is OSPFv2)",
        )
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


def _check_link_addresses(t: TopologyIn, dual: bool) -> Iterator[tuple[Loc, str]]:
    """The IPv6 addresses links give: two of one network each, apart from the rest."""
    generated = ipaddress.IPv6Network(LINKS6)
    prefixes = []
    for p in t.prefixes:
        with contextlib.suppress(ValueError):  # reported by the prefix checks
            prefixes.append(ipaddress.ip_network(p.cidr, strict=False))
    seen: list[tuple[ipaddress.IPv6Network, int]] = []
    for i, link in enumerate(t.lab.links):
        if not link.ipv6:
            continue
        loc: Loc = ("lab", "links", i, "ipv6")
        if not dual:
            yield loc, "no site of the lab announces an IPv6 prefix, so its links have no IPv6"
            continue
        if len(link.ipv6) != 2:
            yield loc, "two addresses with their prefix length, one per endpoint"
            continue
        ends = []
        for j, text in enumerate(link.ipv6):
            try:
                end = ipaddress.IPv6Interface(text)
            except ValueError:
                end = None
            if end is None or "/" not in text:
                yield (*loc, j), f"{text!r} is not an IPv6 address with its prefix length"
            elif end.network.prefixlen > 127:
                yield (*loc, j), f"{text}: a link needs a network of two addresses at least"
            elif end.network.prefixlen < 127 and end.ip == end.network.network_address:
                yield (*loc, j), f"{text} is its network's own address (subnet-router anycast)"
            else:
                ends.append(end)
        if len(ends) != 2:
            continue
        a, b = ends
        net = a.network
        if b.network != net or a.ip == b.ip:
            yield loc, f"{link.ipv6[0]} and {link.ipv6[1]} are not two addresses of one network"
        elif net.overlaps(generated):
            yield loc, f"{net} overlaps {LINKS6}, where the lab generates the other links'"
        else:
            clash = [p for p in prefixes if p.version == 6 and p.overlaps(net)]
            other = [k for n, k in seen if n.overlaps(net)]
            if clash:
                yield loc, f"{net} overlaps the prefix {clash[0]}"
            elif other:
                yield loc, f"{net} overlaps links[{other[0]}]'s IPv6 network"
            seen.append((net, i))
