"""What one run of the twin produces: totals to compare, and time series to draw.

A :class:`RunResult` is one controller's run of a scenario; a :class:`Comparison` holds
the runs of the same scenario under the three controllers side by side — (a) no traffic
management, (b) prefix withdrawal only, (c) the full Traffic Manager — with what the
report needs to draw the world map and the per-site charts.  Everything is plain arrays
and names, so a report can be written without the world or the engine.

What each event cost (:func:`attribute`): each controller also runs the same day
without events, the *reference*.  An event's cost is what its run lost beyond the
reference — failed requests and SLO site-minutes, minute by minute and site by site —
summed over the event's window plus a tail of :data:`TAIL_S` (recovery and reverts
take a while) and over the event's sites: the site(s) it hits, the sites BGP moved its
users to, and the sites the controller moved their traffic to during the window.
Requests with no route count in every window they fall in.  Events whose windows and
sites overlap share those minutes, and each counts them; what no event's window and
sites cover is reported as *elsewhere*.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]

MODES = ("none", "withdraw", "manager")
TAIL_S = 1800.0  # an event's window runs this long past its end
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
    # cache misses fetched from origins: fetches, failed (with and without Orpheus),
    # backbone_share, rtt_ms per path choice (median, p90): see anyedge.sim.fetch.tally
    origin_fetch: dict[str, Any] = field(default_factory=dict)

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
            "origin_fetch": self.origin_fetch,
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
    # every tick of each sample's interval added up, not sampled
    failed_requests: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))  # (T, S)
    slo_minutes: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))  # (T, S)
    unrouted_requests: FloatArray = field(default_factory=lambda: np.zeros(0))  # (T,)
    withdrawn: FloatArray = field(default_factory=lambda: np.zeros(0))  # (T,) (prefix, site)s


# the columns of an action in RunResult.actions (and of the report's CSV), in order
ACTION_FIELDS = (
    "time_s", "kind", "site", "plan", "to", "section", "prefix", "share", "cpu", "code", "reason"
)  # fmt: skip
# the network-wide series of network_series() (and of the report's CSV), in order
NETWORK_FIELDS = ("time_s", "failed_rps", "forwarded_rps", "sites_forwarding", "withdrawn")
FLOW_BIN_S = 3600.0  # RunResult.flow_bins: requests moved per hour


@dataclass
class RunResult:
    mode: str
    totals: Totals
    series: Series
    flows: dict[tuple[str, str], float]  # (from site, to site) -> requests moved
    health: dict[str, float]  # site -> worst utilisation seen (for the map's colours)
    learned: list[dict[str, Any]] = field(default_factory=list)  # see Comparison.learned
    # per event of the scenario: the sites the controller moved traffic to from the
    # event's sites during its window (and tail)
    moved_to: list[list[str]] = field(default_factory=list)
    # what the controller did, from its journal, in order: one dict per action with the
    # keys of ACTION_FIELDS (time_s from the start; site, plan, to, section and prefix
    # by name or None; share of the plan or section moved; cpu in ms/s; the reason's
    # code and words).
    # A hold (something the controller could not do) is kept when it starts: not again
    # while the same site holds for the same reason decision after decision.
    actions: list[dict[str, Any]] = field(default_factory=list)
    # (from site, to site) -> requests moved in each FLOW_BIN_S of the run
    flow_bins: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    # servers inside sections that server events touched (anyedge.sim.servers): the
    # table changes and each server's utilisation; empty without such events
    servers: dict[str, Any] = field(default_factory=dict)


def network_series(run: RunResult) -> dict[str, list[Any]]:
    """The whole network over the run, a value per sample (keys: NETWORK_FIELDS):
    failed requests/s (over capacity or unrouted, averaged over the sample's interval),
    forwarded requests/s, sites forwarding and prefix announcements withdrawn (at the
    sample)."""
    s = run.series
    n = int(s.utilisation.shape[0])
    failed = np.zeros(n)
    if s.failed_requests.shape[:1] == (n,):
        failed += s.failed_requests.reshape(n, -1).sum(axis=1)
    if s.unrouted_requests.shape == (n,):
        failed += s.unrouted_requests
    out_rps = np.nan_to_num(np.asarray(s.forwarded_out_rps, dtype=np.float64).reshape(n, -1))
    withdrawn = s.withdrawn if s.withdrawn.shape == (n,) else np.zeros(n)
    return {  # requests/s to a tenth: enough to read, and the CSV stays small
        "time_s": (np.arange(n) * s.step_s).tolist(),
        "failed_rps": np.round(failed / s.step_s, 1).tolist(),
        "forwarded_rps": np.round(out_rps.sum(axis=1), 1).tolist(),
        "sites_forwarding": (out_rps > 0).sum(axis=1).astype(np.int64).tolist(),
        "withdrawn": np.rint(withdrawn).astype(np.int64).tolist(),
    }


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
    # each: at_s, until_s, kind, what (a sentence); from the engine also sites (what it
    # hits) and receivers (where BGP moves its users)
    events: list[dict[str, Any]]
    learned: list[dict[str, Any]]  # per site: learned maximum threshold and its fit
    wall_seconds: float = 0.0
    reference: dict[str, RunResult] = field(default_factory=dict)  # same day, no events
    attribution: dict[str, dict[str, Any]] = field(default_factory=dict)  # see attribute()
    start_utc_hour: float = 0.0  # the UTC hour of the run's time 0

    def summary(self) -> dict[str, Any]:
        """Everything ``anyedge simulate --json`` prints: per run its totals, what the
        controller did (``actions``) and the network over the day (``series``)."""
        out: dict[str, Any] = {
            "scenario": self.scenario,
            "duration_s": self.duration_s,
            "tick_s": self.tick_s,
            "start_utc_hour": self.start_utc_hour,
            "wall_seconds": self.wall_seconds,
            "runs": {m: r.totals.as_dict() for m, r in self.runs.items()},
            "actions": {m: r.actions for m, r in self.runs.items()},
            "series": {m: network_series(r) for m, r in self.runs.items()},
        }
        if self.events:
            out["events"] = self.events
        if self.reference:
            out["reference"] = {m: r.totals.as_dict() for m, r in self.reference.items()}
        if self.attribution:
            out["attribution"] = self.attribution
        if any(r.servers for r in self.runs.values()):
            out["servers"] = {m: r.servers for m, r in self.runs.items()}
        return out


def attribute(
    run: RunResult,
    reference: RunResult,
    events: list[dict[str, Any]],
    sites: list[str],
    duration_s: float,
    tail_s: float = TAIL_S,
) -> dict[str, Any]:
    """What each event cost ``run`` beyond ``reference`` (the module doc has the method)."""
    index = {code: i for i, code in enumerate(sites)}
    a, b = run.series, reference.series
    step = a.step_s
    shape = (a.utilisation.shape[0], len(sites))

    def per_sample(x: FloatArray, shape: tuple[int, ...]) -> FloatArray:
        return x if x.shape == shape else np.zeros(shape)  # a series made without them

    failed = per_sample(a.failed_requests, shape) - per_sample(b.failed_requests, shape)
    slo = per_sample(a.slo_minutes, shape) - per_sample(b.slo_minutes, shape)
    unrouted = per_sample(a.unrouted_requests, shape[:1]) - per_sample(
        b.unrouted_requests, shape[:1]
    )
    excess_failed = run.totals.failed - reference.totals.failed
    excess_slo = run.totals.slo_breach_total - reference.totals.slo_breach_total
    rows = []
    for i, ev in enumerate(events):
        start = float(ev.get("at_s", 0.0))
        stop = min(float(ev.get("until_s", start)) + tail_s, duration_s)
        lo, hi = int(start // step), min(int(np.ceil(stop / step - 1e-9)), failed.shape[0])
        names = [*ev.get("sites", []), *ev.get("receivers", [])]
        if i < len(run.moved_to):
            names += run.moved_to[i]
        cols = sorted({index[n] for n in names if n in index})
        f = float(failed[lo:hi][:, cols].sum() + unrouted[lo:hi].sum()) if hi > lo else 0.0
        m = float(slo[lo:hi][:, cols].sum()) if hi > lo else 0.0
        rows.append(
            {
                "event": i,
                "what": ev.get("what", ""),
                "from_s": start,
                "to_s": stop,
                "sites": [sites[j] for j in cols],
                "failed": f,
                "slo_minutes": m,
                "failed_share": f / excess_failed if excess_failed > 0 else None,
                "slo_share": m / excess_slo if excess_slo > 0 else None,
            }
        )

    def rest(total: float, parts: float) -> float:
        left = total - parts
        return 0.0 if abs(left) <= 1e-9 * max(1.0, abs(total)) else left  # round-off

    return {
        "tail_s": tail_s,
        "reference_failed": reference.totals.failed,
        "reference_slo_minutes": reference.totals.slo_breach_total,
        "excess_failed": excess_failed,
        "excess_slo_minutes": excess_slo,
        "events": rows,
        "elsewhere_failed": rest(excess_failed, sum(r["failed"] for r in rows)),
        "elsewhere_slo_minutes": rest(excess_slo, sum(r["slo_minutes"] for r in rows)),
    }
