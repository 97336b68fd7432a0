"""The default world's backbone: regional meshes, long-haul routes, transit detours, origins.

* **Regional meshes.**  Within each continent the sites are joined by the minimum
  spanning tree of their great-circle distances (so every site is on the backbone) plus
  a link from each site to its ``nearest`` closest neighbours; terrestrial fibre runs
  ``REGIONAL_ROUTE_FACTOR`` times the great circle.
* **Long-haul routes.**  ``LONG_HAUL`` names the submarine and terrestrial routes between
  continents by their landing cities (each joined to the site nearest to it), with a
  route factor for the cable's detour around coasts: the transatlantic cables, Lisbon to
  Johannesburg down the west coast of Africa, Marseille to Singapore through Suez (the
  AAE-1 corridor), a second Europe-Asia route overland through Russia, the Pacific.
* **Capacity.**  Links between multi-colo sites carry 1.6 Tbps, other regional links
  400 Gbps, long-haul links 800 Gbps.
* **Transit detours.**  Transit from Africa, South America and parts of Asia trombones
  through other regions (the post's reason for building the backbone there), so their
  sites' transit is slower than the great circle by ``TRANSIT_DETOUR``.
* **Origins.**  Customers' servers in the cities where the large clouds run regions.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import minimum_spanning_tree

from ..backbone import Backbone, BackboneLinks, Origins
from ..countries import COUNTRIES
from ..geo import great_circle_km
from ..network import SiteKind, Sites

REGIONAL_ROUTE_FACTOR = 1.25
NEAREST = 2
# (from lat, lon), (to lat, lon), route factor
LONG_HAUL: tuple[tuple[str, tuple[float, float], tuple[float, float], float], ...] = (
    ("London-New York", (51.47, -0.45), (40.64, -73.78), 1.15),
    ("Amsterdam-New York", (52.31, 4.76), (40.64, -73.78), 1.2),
    ("Bilbao-Ashburn", (43.30, -2.91), (38.95, -77.45), 1.15),
    ("Lisbon-Johannesburg", (38.77, -9.13), (-26.14, 28.24), 1.35),
    ("Lisbon-Fortaleza", (38.77, -9.13), (-3.78, -38.53), 1.15),
    ("Lisbon-Lagos", (38.77, -9.13), (6.58, 3.32), 1.3),
    ("Marseille-Cairo", (43.44, 5.22), (30.12, 31.41), 1.2),
    ("Marseille-Mumbai", (43.44, 5.22), (19.09, 72.87), 1.35),
    ("Marseille-Singapore", (43.44, 5.22), (1.36, 103.99), 1.3),
    ("Frankfurt-Hong Kong", (50.03, 8.57), (22.31, 113.92), 1.35),
    ("Mumbai-Singapore", (19.09, 72.87), (1.36, 103.99), 1.3),
    ("Dubai-Mumbai", (25.25, 55.36), (19.09, 72.87), 1.2),
    ("Johannesburg-Mumbai", (-26.14, 28.24), (19.09, 72.87), 1.3),
    ("Mombasa-Dubai", (-4.03, 39.59), (25.25, 55.36), 1.25),
    ("Singapore-Sydney", (1.36, 103.99), (-33.94, 151.18), 1.25),
    ("Tokyo-San Jose", (35.55, 139.78), (37.36, -121.93), 1.15),
    ("Tokyo-Seattle", (35.55, 139.78), (47.45, -122.31), 1.2),
    ("Hong Kong-Los Angeles", (22.31, 113.92), (33.94, -118.41), 1.2),
    ("Sydney-Los Angeles", (-33.94, 151.18), (33.94, -118.41), 1.2),
    ("Miami-Sao Paulo", (25.79, -80.29), (-23.43, -46.47), 1.2),
    ("Miami-Bogota", (25.79, -80.29), (4.70, -74.15), 1.25),
)
CAPACITY_GBPS = {"mcp": 1600.0, "regional": 400.0, "long-haul": 800.0}
TRANSIT_DETOUR = {"AF": 1.3, "SA": 1.2, "AS": 1.1, "OC": 1.05}
# (name, city, country, lat, lon)
DEFAULT_ORIGINS: tuple[tuple[str, str, str, float, float], ...] = (
    ("us-east", "Ashburn", "US", 39.04, -77.49),
    ("us-west", "Portland", "US", 45.52, -122.68),
    ("eu-london", "London", "GB", 51.51, -0.13),
    ("eu-frankfurt", "Frankfurt", "DE", 50.11, 8.68),
    ("eu-amsterdam", "Amsterdam", "NL", 52.37, 4.90),
    ("eu-lisbon", "Lisbon", "PT", 38.72, -9.14),
    ("sa-saopaulo", "Sao Paulo", "BR", -23.55, -46.63),
    ("af-capetown", "Cape Town", "ZA", -33.92, 18.42),
    ("ap-mumbai", "Mumbai", "IN", 19.08, 72.88),
    ("ap-singapore", "Singapore", "SG", 1.29, 103.85),
    ("ap-tokyo", "Tokyo", "JP", 35.68, 139.69),
    ("ap-sydney", "Sydney", "AU", -33.87, 151.21),
)


def default_origins() -> Origins:
    rows = DEFAULT_ORIGINS
    return Origins(
        name=tuple(r[0] for r in rows),
        city=tuple(r[1] for r in rows),
        country=tuple(r[2] for r in rows),
        lat=np.array([r[3] for r in rows]),
        lon=np.array([r[4] for r in rows]),
    )


def build_backbone(sites: Sites) -> Backbone:
    """The default backbone for ``sites`` (see the module docstring)."""
    n = len(sites)
    km = great_circle_km(sites.lat[:, None], sites.lon[:, None], sites.lat, sites.lon)
    continent = np.array([COUNTRIES.get(c, ("", ""))[0] for c in sites.country])
    mcp = sites.kind == SiteKind.MCP
    pairs: dict[tuple[int, int], tuple[float, float]] = {}

    def add(a: int, b: int, factor: float, gbps: float) -> None:
        key = (min(a, b), max(a, b))
        if a != b and key not in pairs:
            pairs[key] = (float(km[a, b]) * factor, gbps)

    for cont in np.unique(continent):
        rows = np.flatnonzero(continent == cont)
        if rows.size < 2:
            continue
        sub = km[np.ix_(rows, rows)]
        tree = minimum_spanning_tree(sub + 1e-6).tocoo()  # + 1e-6: two sites in one city
        edges = list(zip(tree.row.tolist(), tree.col.tolist(), strict=True))
        near = np.argsort(sub, axis=1)[:, 1 : NEAREST + 1]
        edges += [(i, int(j)) for i in range(rows.size) for j in near[i]]
        for i, j in edges:
            a, b = int(rows[i]), int(rows[j])
            gbps = CAPACITY_GBPS["mcp" if mcp[a] and mcp[b] else "regional"]
            add(a, b, REGIONAL_ROUTE_FACTOR, gbps)
    if n:
        for _, (la1, lo1), (la2, lo2), factor in LONG_HAUL:
            a = int(great_circle_km(la1, lo1, sites.lat, sites.lon).argmin())
            b = int(great_circle_km(la2, lo2, sites.lat, sites.lon).argmin())
            add(a, b, factor, CAPACITY_GBPS["long-haul"])
    links = BackboneLinks.from_rows([(a, b, k, g) for (a, b), (k, g) in pairs.items()])
    detour = np.array([TRANSIT_DETOUR.get(str(c), 1.0) for c in continent])
    return Backbone(links=links, transit_detour=detour, origins=default_origins())
