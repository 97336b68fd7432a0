"""Where to put the sites: a lazy-greedy facility location over real cities.

Every city with an airport nearby is a candidate; every city is demand, weighted by its
people online.  The objective is the capped k-median: the online population's round
trip to its nearest site, each capped at ``cap_ms`` (a user 300 ms away is as badly
served as one 100 ms away, and the cap stops empty oceans from pulling sites).  Adding
a site lowers the cost by its *gain*: sum over cities of weight x how much closer the
site is than the nearest chosen so far.

Gains only shrink as sites are added (the objective is submodular), so the lazy greedy
of Minoux (CELF) is exact: keep candidates in a heap by their last known gain, re-evaluate
only the top one, and take it if it stays on top.  One evaluation costs O(cities); most
rounds need a handful, against the thousands a plain greedy needs
(:func:`choose_sites_naive`, kept as the baseline for ``bench/``).

Each chosen city is named by its airport's IATA code (:class:`AirportFinder`); two cities
that share an airport cannot both be sites.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import numpy as np
from scipy.spatial import cKDTree

from ..geo import EARTH_RADIUS_KM, LatencyModel, great_circle_km
from ..table import FloatArray, IntArray
from .geography import HUB_AIRPORT, Airports, Cities

AIRPORT_RADIUS_KM = 60.0


def _unit(lat: FloatArray, lon: FloatArray) -> FloatArray:
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


class AirportFinder:
    """Names a city's site after its airport (a k-d tree over airports on the unit sphere).

    The hub table wins where it names one; otherwise an airport of the same country
    within 60 km, preferring one whose city is the city itself, then an international
    one, then the nearest.
    """

    def __init__(self, airports: Airports) -> None:
        self.airports = airports
        self.tree = cKDTree(_unit(airports.lat, airports.lon))
        self.row = {code: i for i, code in enumerate(airports.iata)}

    def find(self, name: str, country: str, lat: float, lon: float) -> int | None:
        a = self.airports
        hub = HUB_AIRPORT.get((name, country))
        if hub is not None and hub in self.row:
            return self.row[hub]
        chord = 2 * np.sin(AIRPORT_RADIUS_KM / EARTH_RADIUS_KM / 2)
        near = [
            j
            for j in self.tree.query_ball_point(_unit(np.array(lat), np.array(lon)), chord)
            if a.country[j] == country
        ]
        if not near:
            return None
        km = great_circle_km(lat, lon, a.lat[near], a.lon[near])

        def score(k: int) -> tuple[bool, bool, float, str]:
            j = near[k]
            return (
                a.city[j] != name,
                "international" not in a.name[j].lower(),
                float(km[k]),
                a.iata[j],
            )

        return int(near[min(range(len(near)), key=score)])


def candidate_rows(
    cities: Cities, airports: Airports, min_population: int
) -> tuple[IntArray, list[str]]:
    """Cities that may host a site (big enough, or a capital), with their IATA codes."""
    finder = AirportFinder(airports)
    rows: list[int] = []
    codes: list[str] = []
    taken: set[str] = set()
    # Biggest first, so a shared airport goes to the biggest city it serves.
    order = np.argsort(-cities.population, kind="stable")
    ok = (cities.population >= min_population) | cities.capital
    for i in order[ok[order]].tolist():
        a = finder.find(
            cities.name[i], cities.country[i], float(cities.lat[i]), float(cities.lon[i])
        )
        if a is None or airports.iata[a] in taken:
            continue
        taken.add(airports.iata[a])
        rows.append(i)
        codes.append(airports.iata[a])
    return np.array(rows, dtype=np.int64), codes


def _rtt(latency: LatencyModel, cities: Cities, cand: IntArray) -> FloatArray:
    """(candidates, cities) round-trip matrix, float32 to halve the memory."""
    return latency.rtt_matrix(cities.lat[cand], cities.lon[cand], cities.lat, cities.lon).astype(
        np.float32
    )


def choose_sites(
    cities: Cities,
    cand: IntArray,
    k: int,
    latency: LatencyModel,
    cap_ms: float = 50.0,
    initial: IntArray | None = None,
    progress: Callable[[int], None] | None = None,
) -> IntArray:
    """Indices into ``cand`` of ``k`` sites: ``initial`` first, the rest by lazy greedy."""
    w = cities.traffic().astype(np.float32)
    rtt = np.minimum(_rtt(latency, cities, cand), np.float32(cap_ms))
    best = np.full(len(cities), cap_ms, dtype=np.float32)
    chosen: list[int] = []
    for c in [] if initial is None else initial.tolist()[:k]:
        chosen.append(int(c))
        np.minimum(best, rtt[c], out=best)
    gains = np.maximum(best[None, :] - rtt, 0) @ w
    taken = set(chosen)
    heap = [(-float(g), int(c)) for c, g in enumerate(gains) if c not in taken]
    heapq.heapify(heap)
    fresh = np.full(len(cand), len(chosen), dtype=np.int64)  # round each gain is from
    while heap and len(chosen) < k:
        _, c = heapq.heappop(heap)
        rnd = len(chosen)
        if fresh[c] == rnd:
            chosen.append(c)
            np.minimum(best, rtt[c], out=best)
            if progress:
                progress(1)
            continue
        g = float(np.maximum(best - rtt[c], 0) @ w)
        fresh[c] = rnd
        heapq.heappush(heap, (-g, c))
    return np.array(chosen, dtype=np.int64)


def choose_sites_naive(
    cities: Cities,
    cand: IntArray,
    k: int,
    latency: LatencyModel,
    cap_ms: float = 50.0,
    initial: IntArray | None = None,
) -> IntArray:
    """The plain greedy: every gain recomputed every round.  Same answer, for benchmarks."""
    w = cities.traffic().astype(np.float32)
    rtt = np.minimum(_rtt(latency, cities, cand), np.float32(cap_ms))
    best = np.full(len(cities), cap_ms, dtype=np.float32)
    chosen: list[int] = []
    alive = np.ones(len(cand), dtype=np.bool_)
    for c in [] if initial is None else initial.tolist()[:k]:
        chosen.append(int(c))
        alive[c] = False
        np.minimum(best, rtt[c], out=best)
    for _ in range(min(k, len(cand)) - len(chosen)):
        gains = np.maximum(best[None, :] - rtt, 0) @ w
        gains[~alive] = -1.0
        c = int(np.argmax(gains))
        chosen.append(c)
        alive[c] = False
        np.minimum(best, rtt[c], out=best)
    return np.array(chosen, dtype=np.int64)
