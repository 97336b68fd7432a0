"""The per-country table the calibrated world reads: Internet use and local peering.

``data/countries.csv`` ships with the package; its header names its sources.  Each row
gives a country's share of people online (the ITU's estimates, rounded to 5 %) and
whether its networks exchange traffic at home (``dense``) or largely abroad (``thin``:
the tromboning the backbone post describes for India and Turkey).  Countries the table
does not list take their continent's Internet share and count as ``dense``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ..countries import COUNTRIES

TABLE = "countries.csv"


@dataclass(frozen=True)
class CountryTable:
    use: dict[str, float]  # share of the population online
    thin: frozenset[str]  # countries exchanging their traffic abroad


def parse(text: str, where: str = TABLE) -> CountryTable:
    """The table from its CSV text (``#`` lines are its header notes)."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    use: dict[str, float] = {}
    thin: set[str] = set()
    for n, row in enumerate(csv.DictReader(lines), start=2):
        cc = row["country"]
        share = float(row["internet_use"])
        if cc not in COUNTRIES or not 0.0 < share <= 1.0 or cc in use:
            raise ValueError(f"{where}: row {n}: bad country or share: {row}")
        if row["local_peering"] not in ("dense", "thin"):
            raise ValueError(f"{where}: row {n}: local_peering must be dense or thin")
        use[cc] = share
        if row["local_peering"] == "thin":
            thin.add(cc)
    return CountryTable(use=use, thin=frozenset(thin))


@lru_cache(maxsize=1)
def country_table() -> CountryTable:
    text = resources.files(__package__).joinpath("data", TABLE).read_text(encoding="utf-8")
    return parse(text)
