"""Telemetry from Prometheus: the Traffic Manager's observation read with PromQL.

A production network already has its servers' CPU time in Prometheus.  This adapter
asks Prometheus's HTTP API (``/api/v1/query``, instant queries) for what the decision
core needs and builds an :class:`~anyedge.control.core.Observation` from the answers:

* **CPU time per site and plan** — a query whose series carry a site label and a plan
  label (names configurable), in CPU ms per second of wall time (the unit the core
  uses: ``rate(cpu_seconds_total[1m]) * 1000`` summed by site and plan, say);
* **capacity per site** — CPU ms/s the site's healthy servers can give (one series per
  site);
* optionally **utilisation per site**; without it, CPU over capacity;
* optionally **p95 latency per site** (ms), kept beside the observation
  (:attr:`PromTelemetry.p95`) for the learned maximum thresholds
  (:mod:`anyedge.control.learn`); a site without it is left out of learning only.

The age of each site's telemetry is ``now`` minus the time of its newest scraped sample
(a ``timestamp()`` query: an instant query's own samples carry the evaluation time, not
the scrape's), so a site whose exporters stopped shows as stale and the core leaves it
out (it never acts on stale data); a target Prometheus can no longer scrape loses its
series at the next scrape, and its site has none.  A site with no series, no capacity,
or a value that is not a finite non-negative number is marked stale too (age infinite)
and the problem is kept in :attr:`PromTelemetry.problems` with the site's name — it
never raises into the control loop.  When Prometheus itself cannot be reached or
answers garbage, every site is stale (the core then holds with ``no_fresh_telemetry``:
fail static) and :attr:`PromTelemetry.up` is False, for an alert metric.

Only the standard library speaks HTTP here (``urllib``): one short request per query.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..control.core import Observation


class PromError(Exception):
    """Prometheus could not be asked, or did not answer a vector."""


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    time: float  # unix seconds of the sample
    value: float


def query(url: str, expr: str, at: float | None = None, timeout: float = 5.0) -> list[Sample]:
    """An instant query: the samples of the vector ``expr`` evaluates to."""
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    req = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as e:  # Prometheus says why in the body
        with e:
            try:
                why = json.loads(e.read()).get("error", e.reason)
            except ValueError:
                why = e.reason
        raise PromError(f"{expr}: {why}") from None
    except (OSError, ValueError) as e:
        raise PromError(f"{url}: {e}") from None
    data = body.get("data") if isinstance(body, dict) else None
    if body.get("status") != "success" or not isinstance(data, dict):
        raise PromError(f"{expr}: {body.get('error', 'no data in the answer')}")
    if data.get("resultType") != "vector":
        raise PromError(f"{expr}: a {data.get('resultType')}, not an instant vector")
    out = []
    for r in data.get("result", []):
        t, v = r["value"]
        out.append(Sample(dict(r.get("metric", {})), float(t), _number(v)))
    return out


def _number(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


@dataclass(frozen=True)
class Queries:
    """The PromQL of each input, and the labels that name sites and plans."""

    cpu: str = "sum by (site, plan) (anyedge_site_cpu_ms)"
    capacity: str = "sum by (site) (anyedge_site_capacity_ms)"
    utilisation: str | None = None  # default: CPU over capacity
    # when each site was last scraped (unix seconds); None: the queries' own time
    scraped: str | None = "max by (site) (timestamp(anyedge_site_cpu_ms))"
    site_label: str = "site"
    plan_label: str = "plan"
    # each site's p95 latency in ms (its service-level indicator), for learned maxima
    p95: str | None = None


@dataclass
class PromTelemetry:
    """The Traffic Manager's :class:`~anyedge.control.interfaces.Telemetry` over
    Prometheus, for the sites and plans given (in the core's order)."""

    url: str
    sites: Sequence[str]
    plans: Sequence[str]
    queries: Queries = field(default_factory=Queries)
    timeout: float = 5.0
    problems: list[str] = field(default_factory=list)  # of the last observation
    up: bool = True  # Prometheus answered the last observation
    # (S,) p95 latency in ms at the last observation (NaN: none; no p95 query: empty)
    p95: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def observe(self, now: float) -> Observation:
        n, k = len(self.sites), len(self.plans)
        site_row = {s: i for i, s in enumerate(self.sites)}
        plan_col = {p: j for j, p in enumerate(self.plans)}
        q = self.queries
        cpu = np.zeros((n, k))
        newest = np.full(n, -math.inf)
        bad = np.zeros(n, dtype=np.bool_)
        problems: list[str] = []
        try:
            cpu_s = query(self.url, q.cpu, now, self.timeout)
            cap_s = query(self.url, q.capacity, now, self.timeout)
            u_s = query(self.url, q.utilisation, now, self.timeout) if q.utilisation else None
            t_s = query(self.url, q.scraped, now, self.timeout) if q.scraped else None
            p_s = query(self.url, q.p95, now, self.timeout) if q.p95 else None
        except PromError as e:
            self.up, self.problems = False, [f"prometheus: {e}"]
            self.p95 = np.full(n, math.nan) if q.p95 else np.zeros(0)
            return Observation(
                utilisation=np.zeros(n), cpu=cpu, age=np.full(n, math.inf), capacity=np.zeros(n)
            )
        self.up = True

        def row(x: Sample, what: str) -> int:
            i = site_row.get(x.labels.get(q.site_label, ""), -1)
            if i >= 0 and not (math.isfinite(x.value) and x.value >= 0):
                bad[i] = True
                problems.append(f"{self.sites[i]}: {what} is {x.value!r}, not a number >= 0")
                return -1
            if i >= 0 and t_s is None:
                newest[i] = max(newest[i], x.time)
            return i

        for x in t_s or ():
            i = site_row.get(x.labels.get(q.site_label, ""), -1)
            if i >= 0 and math.isfinite(x.value):
                newest[i] = max(newest[i], x.value)

        for x in cpu_s:
            i = row(x, "CPU time")
            j = plan_col.get(x.labels.get(q.plan_label, ""), -1)
            if i >= 0 and j >= 0:
                cpu[i, j] += x.value
        cap = np.zeros(n)
        for x in cap_s:
            i = row(x, "capacity")
            if i >= 0:
                cap[i] += x.value
        with np.errstate(divide="ignore", invalid="ignore"):
            util = np.where(cap > 0, cpu.sum(axis=1) / cap, 0.0)
        if u_s is not None:
            util = np.zeros(n)
            for x in u_s:
                i = row(x, "utilisation")
                if i >= 0:
                    util[i] = x.value
        age = np.maximum(now - newest, 0.0)
        for i, s in enumerate(self.sites):
            if not np.isfinite(newest[i]):
                bad[i] = True
                problems.append(f"{s}: no series in Prometheus")
            elif cap[i] <= 0 and not bad[i]:
                bad[i] = True
                problems.append(f"{s}: no capacity")
        age[bad] = math.inf
        self.problems = problems
        if p_s is not None:
            p95 = np.full(n, math.nan)
            for x in p_s:  # a missing or odd p95 only leaves that sample out of learning
                i = site_row.get(x.labels.get(q.site_label, ""), -1)
                if i >= 0 and math.isfinite(x.value) and x.value > 0:
                    p95[i] = x.value
            p95[bad] = math.nan
            self.p95 = p95
        return Observation(utilisation=util, cpu=cpu, age=age, capacity=cap)
