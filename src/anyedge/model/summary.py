"""What a world looks like at a glance: the numbers ``anyedge world`` prints.

* sites by continent, and how many are multi-colo;
* total CPU capacity against peak demand (both in ms/s of CPU time, and demand in
  requests/s), globally and per continent — the sum of each metro's own evening peak,
  an upper bound on the load at any one instant;
* how close users are: the share of the metros' population whose nearest site (by the
  latency model, before any routing) is within 10, 20, 50 and 100 ms of round trip.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .countries import COUNTRIES
from .network import SiteKind
from .world import World

CONTINENTS = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}
RTT_BANDS_MS = (10, 20, 50, 100)


def continent_of(countries: tuple[str, ...]) -> list[str]:
    return [COUNTRIES[c][0] if c in COUNTRIES else "??" for c in countries]


def summarize(world: World) -> dict[str, Any]:
    net, inet = world.network, world.internet
    site_cont = np.array(continent_of(net.sites.country))
    cap = net.site_capacity()
    metro_cont = np.array(continent_of(inet.metros.country)) if len(inet.metros) else np.array([])
    metro_cpu = np.bincount(
        inet.eyeballs.metro, weights=world.eyeball_cpu(), minlength=len(inet.metros)
    )
    metro_rps = inet.eyeball_demand()

    by_cont = []
    for code in sorted(set(site_cont.tolist()) | set(metro_cont.tolist())):
        s = site_cont == code
        m = metro_cont == code
        by_cont.append(
            {
                "continent": code,
                "name": CONTINENTS.get(code, code),
                "sites": int(s.sum()),
                "mcp_sites": int((s & (net.sites.kind == SiteKind.MCP)).sum()),
                "servers": int(net.sections.servers[s[net.sections.site]].sum()),
                "capacity_ms_per_s": float(cap[s].sum()),
                "peak_demand_ms_per_s": float(metro_cpu[m].sum()),
                "peak_demand_rps": float(metro_rps[m].sum()),
            }
        )

    pop = inet.metros.population.astype(np.float64)
    if len(inet.metros) and len(net.sites):
        nearest = world.metro_site_rtt().min(axis=1)
        within = {
            str(b): float(pop[nearest <= b].sum() / max(pop.sum(), 1.0)) for b in RTT_BANDS_MS
        }
        weighted = float(np.average(nearest, weights=pop)) if pop.sum() else 0.0
    else:
        within = {str(b): 0.0 for b in RTT_BANDS_MS}
        weighted = 0.0
    total_cap = float(cap.sum())
    total_cpu = float(metro_cpu.sum())
    return {
        "sites": len(net.sites),
        "mcp_sites": int((net.sites.kind == SiteKind.MCP).sum()),
        "sections": len(net.sections),
        "servers": int(net.sections.servers.sum()),
        "prefixes": len(net.prefixes),
        "ases": len(inet),
        "provider_customer_links": len(inet.p2c),
        "peer_links": len(inet.p2p),
        "sessions": len(net.sessions),
        "metros": len(inet.metros),
        "population": int(pop.sum()),
        "capacity_ms_per_s": total_cap,
        "peak_demand_ms_per_s": total_cpu,
        "peak_demand_rps": float(metro_rps.sum()),
        "capacity_over_peak": total_cap / total_cpu if total_cpu else None,
        "population_within_ms": within,
        "mean_nearest_rtt_ms": weighted,
        "by_continent": by_cont,
    }
