"""The digital twin: a whole anycast network through a day, under each controller.

``Twin(world, scenario).compare()`` runs the scenario three times — no traffic
management, prefix withdrawal only, the full Traffic Manager — and returns a
:class:`~.result.Comparison` for the report.  See :mod:`.engine` for what one tick does
and :mod:`.scenario` for the scenario file.
"""

from .engine import Twin
from .result import MODE_TITLES, MODES, Comparison, RunResult, Series, Totals
from .scenario import DEFAULT_SCENARIO, Scenario, default_scenario, load_scenario, parse_scenario

__all__ = [
    "DEFAULT_SCENARIO",
    "MODES",
    "MODE_TITLES",
    "Comparison",
    "RunResult",
    "Scenario",
    "Series",
    "Totals",
    "Twin",
    "default_scenario",
    "load_scenario",
    "parse_scenario",
]
