"""Exchange points and tromboning: where the calibrated world's networks meet.

Most links of the real AS graph are peer links, and most of those are made at Internet
exchange points: a network that joins an exchange's route server peers with every other
member at once.  The calibrated world puts an exchange in each of the big
interconnection cities (:data:`IXP_CITIES`); every network present in that city, but the
tier-1s (which sell transit rather than peer openly), is a member of its route server,
and every two members that are not already customer and provider become peers.

Where a country's networks exchange their traffic abroad (``thin`` in
:mod:`.countrydata`), the carriers are not present in its cities at all: its access
networks meet them at the nearest exchange city abroad (:func:`exchange_abroad`), so
their users' traffic goes there and back — the tromboning the backbone post describes
for India and Turkey — unless it reaches a site over a local peering session.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..geo import great_circle_km
from ..table import IntArray
from .geography import Cities

# The big interconnection cities (where the largest exchanges are), as (city, country)
# of the cities' table.  India's and Turkey's are left out on purpose: their networks
# exchange much of their traffic abroad (thin local peering).
IXP_CITIES = (
    ("Frankfurt am Main", "DE"),
    ("Amsterdam", "NL"),
    ("London", "GB"),
    ("Paris", "FR"),
    ("Marseille", "FR"),
    ("Stockholm", "SE"),
    ("Moscow", "RU"),
    ("Warsaw", "PL"),
    ("Milan", "IT"),
    ("Madrid", "ES"),
    ("Vienna", "AT"),
    ("Zürich", "CH"),
    ("Prague", "CZ"),
    ("Sofia", "BG"),
    ("Washington", "US"),
    ("New York City", "US"),
    ("Chicago", "US"),
    ("Dallas", "US"),
    ("Los Angeles", "US"),
    ("San Jose", "US"),
    ("Seattle", "US"),
    ("Miami", "US"),
    ("Atlanta", "US"),
    ("Toronto", "CA"),
    ("Mexico City", "MX"),
    ("São Paulo", "BR"),
    ("Rio de Janeiro", "BR"),
    ("Buenos Aires", "AR"),
    ("Santiago", "CL"),
    ("Bogotá", "CO"),
    ("Lima", "PE"),
    ("Johannesburg", "ZA"),
    ("Cape Town", "ZA"),
    ("Nairobi", "KE"),
    ("Lagos", "NG"),
    ("Cairo", "EG"),
    ("Dubai", "AE"),
    ("Singapore", "SG"),
    ("Hong Kong", "HK"),
    ("Tokyo", "JP"),
    ("Osaka", "JP"),
    ("Seoul", "KR"),
    ("Taipei", "TW"),
    ("Jakarta", "ID"),
    ("Bangkok", "TH"),
    ("Kuala Lumpur", "MY"),
    ("Manila", "PH"),
    ("Sydney", "AU"),
    ("Melbourne", "AU"),
    ("Auckland", "NZ"),
)


def ixp_metros(cities: Cities) -> IntArray:
    """Rows of the exchange cities present among ``cities`` (in :data:`IXP_CITIES` order)."""
    where = {(n, c): i for i, (n, c) in enumerate(zip(cities.name, cities.country, strict=True))}
    rows = [where[k] for k in IXP_CITIES if k in where]
    return np.array(rows, dtype=np.int64)


def exchange_abroad(cities: Cities, ixps: IntArray, thin: Iterable[str]) -> dict[str, int]:
    """For each thin country among ``cities``, the exchange city abroad nearest to its
    most populous city: where its networks meet their carriers."""
    country = np.array(cities.country)
    out: dict[str, int] = {}
    for cc in sorted(set(thin) & set(cities.country)):
        rows = np.flatnonzero(country == cc)
        big = int(rows[np.argmax(cities.population[rows])])
        abroad = ixps[country[ixps] != cc]
        if not abroad.size:
            continue
        km = great_circle_km(
            cities.lat[big], cities.lon[big], cities.lat[abroad], cities.lon[abroad]
        )
        out[cc] = int(abroad[int(np.argmin(km))])
    return out


def route_server_pairs(
    members: dict[int, list[int]], p2c: Iterable[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Peer pairs made by the route servers: every two members of one exchange, but for
    pairs already customer and provider."""
    related = {(min(a, b), max(a, b)) for a, b in p2c}
    pairs: set[tuple[int, int]] = set()
    for mem in members.values():
        uniq = sorted(set(mem))
        for i, a in enumerate(uniq):
            for b in uniq[i + 1 :]:
                if (a, b) not in related:
                    pairs.add((a, b))
    return sorted(pairs)
