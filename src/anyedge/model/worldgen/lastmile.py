"""The last mile: how long a user's packets take to get out of their access network.

A round trip to a site starts and ends in the user's access network — the Wi-Fi or
cable modem, the DSL or fibre line, the mobile radio and its core — and that often
costs more than the distance to a nearby site.  The calibrated world gives each eyeball
(one access network in one metro) its own access delay:

* each country's demand is split between fixed and mobile access by its continent's
  mobile share of Web traffic (:data:`MOBILE_SHARE`, after StatCounter's
  "Desktop vs Mobile vs Tablet Market Share" by region, 2023);
* an access network is a fixed-line ISP, a mobile carrier or (a country's only ISP)
  both, in proportion;
* the typical delay of each kind depends on how developed the country's Internet is,
  read from its Internet use (:data:`ACCESS_TIERS`, after the medians of Ookla's
  "Speedtest Global Index" and the FCC's "Measuring Broadband America" reports for
  fixed lines, and of Opensignal's "Mobile Network Experience" reports for mobile);
* each (network, metro) draws its own delay around that typical value (log-normal,
  :data:`SPREAD`): two ISPs in one city, or one ISP in two cities, differ.

The figures are rounded model inputs read from those reports, not measurements of any
one network; the calibration report (:mod:`anyedge.sim.calibration`) checks what they
add up to against published figures.
"""

from __future__ import annotations

import numpy as np

from ..countries import COUNTRIES
from ..internet import ASKind, Internet
from ..table import FloatArray

MOBILE_SHARE = {"AF": 0.70, "AS": 0.65, "EU": 0.45, "NA": 0.50, "SA": 0.55, "OC": 0.45, "AN": 0.5}
# (Internet use at least, typical fixed-line round trip ms, typical mobile round trip ms)
ACCESS_TIERS = ((0.85, 5.0, 20.0), (0.60, 9.0, 27.0), (0.0, 15.0, 35.0))
SPREAD = 0.4  # sigma of the log-normal draw per (network, metro)


def typical_ms(use: float) -> tuple[float, float]:
    """(fixed, mobile) typical access round trip for a country with ``use`` online."""
    for floor, fixed, mobile in ACCESS_TIERS:
        if use >= floor:
            return fixed, mobile
    return ACCESS_TIERS[-1][1:]


def mobile_share(country: str) -> float:
    return MOBILE_SHARE[COUNTRIES[country][0]]


def access_delays(
    internet: Internet, mobile: FloatArray, use: dict[str, float], rng: np.random.Generator
) -> FloatArray:
    """Access round trip of every eyeball row, in ms.

    ``mobile`` is each AS's share of mobile access (1 for a carrier, 0 for a fixed-line
    ISP); ``use`` each country's Internet use (countries missing take 0.6).
    """
    e, metros = internet.eyeballs, internet.metros
    fixed = np.empty(len(e))
    radio = np.empty(len(e))
    for i, m in enumerate(e.metro.tolist()):
        fixed[i], radio[i] = typical_ms(use.get(metros.country[m], 0.6))
    f = mobile[e.as_]
    typical = (1.0 - f) * fixed + f * radio
    out = typical * rng.lognormal(0.0, SPREAD, size=len(e))
    out[internet.kind[e.as_] != ASKind.ACCESS] = typical[internet.kind[e.as_] != ASKind.ACCESS]
    return np.asarray(out)
