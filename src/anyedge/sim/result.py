"""What one run of the twin produces: totals to compare, and time series to draw.

A :class:`RunResult` is one controller's run of a scenario; a :class:`Comparison` holds
the runs of the same scenario under the three controllers side by side — (a) no traffic
management, (b) prefix withdrawal only, (c) the full Traffic Manager — with what the
report needs to draw the world map and the per-site charts.  Everything is plain arrays
and names, so a report can be written without the world or the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]

MODES = ("none", "withdraw", "manager")
MODE_TITLES = {
    "none": "no traffic management",
    "withdraw": "prefix withdrawal only",
    "manager": "Traffic Manager",
}


@dataclass
class Totals:
    """The metrics of one run (requests are counted, not rates)."""

    requests: float = 0.0  # all requests users sent
    served: float = 0.0  # answered by a site
    failed: float = 0.0  # served by no site: over capacity (5xx) or no route
    unrouted: float = 0.0  # of the failed, those with no route at all
    slo_breach_minutes: dict[str, float] = field(default_factory=dict)  # site -> minutes
    added_latency_mean_ms: float = 0.0  # over what each user had at the start, demand-weighted
    added_latency_p95_ms: float = 0.0
    moved: float = 0.0  # requests served away from where BGP would take them
    forwarded: float = 0.0  # of the moved, those forwarded by Plurimog
    stranded_cpu_hours: float = 0.0  # healthy CPU left idle while requests failed or moved
    routing_changes: int = 0  # announcements withdrawn or restored
    decisions: int = 0
    actions: int = 0

    @property
    def slo_breach_total(self) -> float:
        return float(sum(self.slo_breach_minutes.values()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failed": self.failed,
            "unrouted": self.unrouted,
            "failed_share": self.failed / self.requests if self.requests else 0.0,
            "slo_breach_minutes": self.slo_breach_total,
            "slo_breach_minutes_by_site": {
                k: v
                for k, v in sorted(self.slo_breach_minutes.items(), key=lambda kv: -kv[1])
                if v > 0
            },
            "added_latency_mean_ms": self.added_latency_mean_ms,
            "added_latency_p95_ms": self.added_latency_p95_ms,
            "moved": self.moved,
            "forwarded": self.forwarded,
            "stranded_cpu_hours": self.stranded_cpu_hours,
            "routing_changes": self.routing_changes,
            "decisions": self.decisions,
            "actions": self.actions,
        }


@dataclass
class Series:
    """Per-site time series, one row per sample (every ``step_s`` simulated seconds)."""

    step_s: float
    utilisation: FloatArray  # (T, S)
    p95_ms: FloatArray  # (T, S) processing latency
    failed_rps: FloatArray  # (T, S)
    forwarded_out_rps: FloatArray  # (T, S)
    forwarded_in_rps: FloatArray  # (T, S)


@dataclass
class RunResult:
    mode: str
    totals: Totals
    series: Series
    flows: dict[tuple[str, str], float]  # (from site, to site) -> requests moved
    health: dict[str, float]  # site -> worst utilisation seen (for the map's colours)
    learned: list[dict[str, Any]] = field(default_factory=list)  # see Comparison.learned


@dataclass
class Comparison:
    scenario: str
    duration_s: float
    tick_s: float
    sites: list[str]
    cities: list[str]
    lat: list[float]
    lon: list[float]
    runs: dict[str, RunResult]
    events: list[dict[str, Any]]  # each: at_s, until_s, kind, what (a sentence)
    learned: list[dict[str, Any]]  # per site: learned maximum threshold and its fit
    wall_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "duration_s": self.duration_s,
            "tick_s": self.tick_s,
            "wall_seconds": self.wall_seconds,
            "runs": {m: r.totals.as_dict() for m, r in self.runs.items()},
        }
