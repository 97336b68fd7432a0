"""Random lab topologies: a small tiered Internet with sites and clients, as topology YAML.

Used by the tests (the model must agree with the lab on any of them) and by
``anyedge lab generate``.  The shape follows the Internet's: a clique of tier-1 routers
that peer with each other; below them transit and access routers, each buying transit
from one or two routers of a higher tier (so provider relations never loop), with some
peering between routers of the same tier; sites buying transit from (or peering with)
one or two routers; clients behind access routers.  Site speakers cycle through the
kinds asked for, so one lab mixes them.  With ``operators=2`` every second site belongs
to a second operator (``cdn``, AS64400) that originates the same prefix from its ASN.

With ``delays=True`` every link takes a ``delay_ms`` from the world's latency model
(:class:`~anyedge.model.geo.LatencyModel`, the one that prices the twin's paths): each
router stands at one of the chosen sites' cities, a little off it (up to
:data:`SPREAD_DEG` degrees each way), a site at its city and a client at its router;
a link's one-way delay is half the model's round trip for the great-circle distance
between its ends, without the access term, and a client's access link carries the
access term (half of ``access_ms`` each way).  A path's delays, there and back, then add
up to what the model gives for the path's length: ``access_ms + inflation * km /
km_per_ms`` (:mod:`anyedge.lab.rtt` predicts round trips from them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model.geo import LatencyModel, great_circle_km

SITES = (
    ("CHC", "Christchurch", "NZ", -43.53, 172.63),
    ("AKL", "Auckland", "NZ", -36.85, 174.76),
    ("SYD", "Sydney", "AU", -33.87, 151.21),
    ("SIN", "Singapore", "SG", 1.35, 103.82),
    ("NRT", "Tokyo", "JP", 35.76, 140.39),
    ("LAX", "Los Angeles", "US", 33.94, -118.41),
    ("IAD", "Washington", "US", 38.95, -77.46),
    ("LHR", "London", "GB", 51.47, -0.45),
)
SPEAKERS = ("frr", "bird", "gobgp", "exabgp")
PREFIX6 = "2001:db8:100::/48"  # a dual-stack lab's IPv6 anycast prefix (ipv6=True)
SPREAD_DEG = 2.0  # how far (degrees of latitude and longitude) a router stands off its city


def generate(
    seed: int,
    routers: int = 12,
    sites: int = 4,
    clients: int = 6,
    speakers: tuple[str, ...] = SPEAKERS,
    prefix: str = "198.51.100.0/24",
    operators: int = 1,
    delays: bool = False,
    ipv6: bool = False,
) -> dict[str, Any]:
    """A topology (as a dict ready for YAML) with a random lab; with ``ipv6``, the same
    lab dual-stack (:data:`PREFIX6` at every site but every third)."""
    if not 3 <= routers <= 250:
        raise ValueError(f"routers must be between 3 and 250, got {routers}")
    if not 1 <= sites <= len(SITES):
        raise ValueError(f"sites must be between 1 and {len(SITES)}, got {sites}")
    if clients < 1:
        raise ValueError("a lab needs at least one client")
    if operators not in (1, 2):
        raise ValueError(f"operators must be 1 or 2, got {operators}")
    rng = np.random.default_rng(seed)
    n_t1 = max(2, routers // 6)
    n_transit = max(1, (routers - n_t1) // 3)
    tier = [1] * n_t1 + [2] * n_transit + [3] * (routers - n_t1 - n_transit)
    names = [f"r{i + 1}" for i in range(routers)]
    nodes: dict[str, dict[str, Any]] = {
        n: {"kind": "router", "asn": 65001 + i} for i, n in enumerate(names)
    }
    ifcount: dict[str, int] = {}
    links: list[dict[str, Any]] = []

    def link(a: str, b: str, relation: str) -> None:
        ends = []
        for n in (a, b):
            ifcount[n] = ifcount.get(n, 0) + 1
            ends.append(f"{n}:eth{ifcount[n]}")
        links.append({"endpoints": ends, "relation": relation})

    related: set[frozenset[str]] = set()
    for i in range(n_t1):
        for j in range(i + 1, n_t1):
            link(names[i], names[j], "peer")
            related.add(frozenset((names[i], names[j])))
    for i in range(n_t1, routers):
        above = [j for j in range(routers) if tier[j] < tier[i]]
        k = min(len(above), 1 + int(rng.random() < 0.5))
        for j in rng.choice(above, size=k, replace=False).tolist():
            link(names[j], names[i], "provider-customer")
            related.add(frozenset((names[i], names[j])))
    for _ in range(routers // 3):
        i, j = rng.choice(routers, size=2, replace=False).tolist()
        pair = frozenset((names[i], names[j]))
        if tier[i] == tier[j] and tier[i] > 1 and pair not in related:
            link(names[i], names[j], "peer")
            related.add(pair)
    chosen = SITES[:sites]
    for s, (code, *_rest) in enumerate(chosen):
        node = code.lower()
        nodes[node] = {"kind": "site", "site": code, "speaker": speakers[s % len(speakers)]}
        k = 1 + int(rng.random() < 0.4)
        for j in rng.choice(routers, size=k, replace=False).tolist():
            relation = "peer" if tier[j] > 1 and rng.random() < 0.3 else "provider-customer"
            link(names[j], node, relation)
    access = [i for i in range(routers) if tier[i] == 3] or list(range(routers))
    for c in range(clients):
        node = f"c{c + 1}"
        nodes[node] = {"kind": "client"}
        link(names[int(rng.choice(access))], node, "none")
    out: dict[str, Any] = {
        "asn": 64500,
        "sites": [
            {
                "code": code,
                "city": city,
                "country": country,
                "lat": lat,
                "lon": lon,
                "sections": [{"name": f"{code}01", "servers": 4, "cpu_per_server": 1000}],
            }
            for code, city, country, lat, lon in chosen
        ],
        "prefixes": [{"cidr": prefix, "sites": "all"}],
        "lab": {"nodes": nodes, "links": links},
    }
    if ipv6:
        six = [c[0] for i, c in enumerate(chosen) if i % 3 != 2]
        out["prefixes"].append({"cidr": PREFIX6, "sites": six})
    if operators == 2 and sites > 1:
        out["operators"] = [{"name": "cdn", "asn": 64400, "sites": [c[0] for c in chosen[1::2]]}]
    if delays:
        add_delays(out, np.random.default_rng([seed, 1]))
    return out


def add_delays(topology: dict[str, Any], rng: np.random.Generator) -> None:
    """Give every link of ``topology`` its ``delay_ms`` from the latency model (module
    docstring); routers placed with ``rng``."""
    model = LatencyModel()
    cities = [(s["lat"], s["lon"]) for s in topology["sites"]]
    nodes = topology["lab"]["nodes"]
    where: dict[str, tuple[float, float]] = {}
    for name, n in nodes.items():
        if n["kind"] == "router":
            lat, lon = cities[int(rng.integers(len(cities)))]
            off = rng.uniform(-SPREAD_DEG, SPREAD_DEG, size=2)
            where[name] = (float(np.clip(lat + off[0], -89.0, 89.0)), float(lon + off[1]))
    for s in topology["sites"]:
        where[s["code"].lower()] = (s["lat"], s["lon"])
    for link in topology["lab"]["links"]:
        a, b = (e.split(":")[0] for e in link["endpoints"])
        client = nodes[a]["kind"] == "client" or nodes[b]["kind"] == "client"
        if client:
            one_way = model.access_ms / 2
        else:
            km = float(great_circle_km(*where[a], *where[b]))
            one_way = float(model.rtt_from_km(km)) / 2 - model.access_ms / 2
        link["delay_ms"] = round(max(one_way, 0.0), 2)
