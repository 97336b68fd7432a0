"""The Traffic Manager as a long-running service: ``anyedge control run``.

One process holds one :class:`~anyedge.adapters.controller.Controller` and runs its loop
on the wall clock, every ``interval`` seconds, in the main thread:

1. read the operator's overrides in force (:mod:`anyedge.adapters.overrides`, in the
   journal's file); frozen, it observes (for the dashboard) but decides nothing;
2. otherwise the controller steps with the configuration the overrides make —
   observe (:class:`~anyedge.adapters.prometheus.PromTelemetry`), decide, journal,
   enforce (the actuator of :mod:`.actuators`);
3. with ``actuator.balancer``, each site's server weights follow its servers' CPU
   (Unimog, :mod:`.unimog`), not while frozen;
   with ``learn`` (and a p95 query), each fresh site's utilisation and p95 latency are
   kept, and every ``learn.every`` seconds the maximum thresholds are learnt again
   (:func:`anyedge.control.learn.relearn`, the twin's rule) and decide from then on;
4. what happened is logged on stderr, one line per action or change of health, and
   counted for Prometheus (:class:`~anyedge.adapters.metrics.ControllerMetrics`, plus
   ``anyedge_controller_frozen`` and ``anyedge_controller_overrides{kind}``).

Failing static needs nothing here: when Prometheus is down or answers garbage every site
is stale, the core holds with ``no_fresh_telemetry``, ``anyedge_controller_telemetry_up``
is 0, and the next step that gets answers decides again.  A query that leaves a site
without numbers leaves that site out, and its reason is logged and shown by the API.

``SIGTERM`` (or ``SIGINT``) ends the wait for the next step; the step under way, if
any, finishes (journal, then enforcement), the journal is closed and the process exits
0 — the network keeps the state of the last decision, nothing is undone.  ``kill -9``
leaves the journal whole (each decision is one committed transaction, made before the
enforcement); the next start resumes from it and enforces that state once, so no action
is repeated or lost (see :mod:`anyedge.adapters.controller`).

The HTTP API and the dashboard (:mod:`.http`) run in a second thread, reading the
controller's attributes (each replaced whole, never mutated in place) and writing
overrides through their own SQLite connection.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..adapters.clock import WallClock
from ..adapters.controller import Controller, Cycle
from ..adapters.journal import Journal
from ..adapters.metrics import ControllerMetrics
from ..adapters.overrides import KINDS, InForce, Overrides, effective
from ..adapters.prometheus import PromTelemetry, Queries
from ..control.codec import action_to, plan_to, state_to
from ..control.core import Config, Failover, Plan, hold
from ..control.learn import learned_config, relearn
from ..control.reasons import Names, render
from .actuators import build
from .config import ControllerIn, beside, core_config, names_of
from .unimog import ServerWeights


class Service:
    """Everything ``anyedge control run`` holds: journal, overrides, telemetry,
    controller, metrics."""

    def __init__(
        self,
        doc: ControllerIn,
        path: str | Path,
        failover: Failover | None = None,
        log: Any = None,
    ) -> None:
        self.doc, self.path, self.failover = doc, Path(path), failover
        self.out = log if log is not None else sys.stderr
        self.names: Names = names_of(doc)
        self.base: Config = core_config(doc)
        self.journal = Journal(beside(path, doc.journal), self.names)
        try:
            self.overrides = Overrides(self.journal.path, self.names.sites)
            q = doc.prometheus.queries
            self.telemetry = PromTelemetry(
                doc.prometheus.url,
                self.names.sites,
                self.names.plans,
                Queries(
                    q.cpu, q.capacity, q.utilisation, q.scraped, q.site_label, q.plan_label, q.p95
                ),
                doc.prometheus.timeout,
            )
            self.actuator = build(doc, path, self.names, lambda: self.controller.seq)
            self.in_force = self.overrides.in_force()
            # resuming enforces the last journaled state at once (the actuator reads seq)
            self.controller: Controller = _Resuming(self.journal)  # type: ignore[assignment]
            self.controller = Controller(
                self.telemetry,
                self.actuator,
                effective(self.base, self.names.sites, self.in_force),
                self.journal,
                failover,
            )
        except BaseException:
            self.journal.close()
            raise
        self.metrics = ControllerMetrics(self.controller, self.names.sites, doc.actuator.kind)
        bal = doc.actuator.balancer
        self.balancer = (
            None
            if bal is None
            else ServerWeights.of(doc.prometheus.url, bal, path, doc.prometheus.timeout)
        )
        self._balancer_failed: dict[str, str] = {}
        self.registry = CollectorRegistry()
        self.registry.register(self.metrics)
        self.registry.register(_OverrideMetrics(self))
        if self.balancer is not None:
            self.registry.register(_BalancerMetrics(self.balancer))
        self.clock = WallClock()
        self.started = time.time()
        self.steps = 0
        self.last_error: str | None = None
        self.problems: list[str] = []
        self._up = True
        self._holds: set[tuple[int, str]] = set()  # of the last journaled decision
        self.stop_reason: str | None = None
        # learned maxima: (time, utilisation, p95) samples of fresh sites, the static
        # configuration with the learned maxima in it, and when it was learnt last
        self.samples: list[tuple[float, np.ndarray, np.ndarray]] = []
        self.learned: Config = self.base
        self.learnt_at = self.started
        self.learned_why: dict[str, str] = {}

    # ------------------------------------------------------------------ logging

    def say(self, line: str) -> None:
        print(f"anyedge control run: {line}", file=self.out, flush=True)

    # ------------------------------------------------------------------ one step

    def step(self, now: float) -> Cycle:
        self.in_force = self.overrides.in_force()
        c = self.controller
        if self.in_force.frozen:
            c.observation = self.telemetry.observe(now)
            c.plan = Plan((hold(-1, "frozen"),))
            cycle = Cycle(now, c.plan)
        else:
            c.config = effective(self.learned, self.names.sites, self.in_force)
            seq = c.seq
            cycle = c.cycle(now)
            if c.seq != seq:
                # moves are logged each time; a hold only when it is new (a site that
                # stays stale or short of room would otherwise say so every step)
                holds = {(a.site, a.reason.code) for a in cycle.plan.actions if a.kind == "hold"}
                for a in cycle.plan.actions:
                    if a.kind != "hold" or (a.site, a.reason.code) not in self._holds:
                        self.say(f"decision {c.seq}: {_line(a, self.names)}")
                self._holds = holds
        if self.balancer is not None and not self.in_force.frozen:
            self._balance()
        if self.doc.learn is not None:
            self._learn(now)
        self.steps += 1
        self._health(cycle)
        return cycle

    def _learn(self, now: float) -> None:
        """Keep each fresh site's (utilisation, p95) sample; every ``learn.every``
        seconds learn the maxima again from the last ``learn.window`` (the decisions use
        them from the next step)."""
        learn, obs = self.doc.learn, self.controller.observation
        assert learn is not None
        p95 = self.telemetry.p95
        if obs is not None and p95.size:
            fresh = obs.age <= self.base.stale_after
            u = np.where(fresh, obs.utilisation, np.nan)
            self.samples.append((now, u, np.where(fresh, p95, np.nan)))
        if now - self.learnt_at < learn.every:
            return
        self.learnt_at = now
        self.samples = [x for x in self.samples if x[0] >= now - learn.window]
        if not self.samples:
            return
        u_all = np.array([x[1] for x in self.samples])
        p_all = np.array([x[2] for x in self.samples])
        maximum, results = relearn(self.base, u_all, p_all, learn_from=learn.learn_from,
                                   slo_ms=learn.slo_ms, min_points=learn.min_points)  # fmt: skip
        before = self.learned.maximum
        self.learned = learned_config(self.base, maximum)
        for s, r in results.items():
            name = self.names.sites[s]
            why = f"{r.method}, {r.reason}" if r.method != "static" else r.reason
            self.learned_why[name] = why
            if abs(maximum[s] - before[s]) > 1e-9:
                self.say(f"learned maximum for {name}: {maximum[s]:.3f} ({why})")

    def _balance(self) -> None:
        """Unimog: each site's server weights from its servers' CPU (:mod:`.unimog`)."""
        assert self.balancer is not None
        done, failed = self.balancer.step()
        for r in done:
            w = ", ".join(f"{n} {x:.3f}" for n, x in r.weights.items())
            self.say(f"balancer {r.site}: weights {w} ({r.moved} buckets moved)")
        errors = {}
        for site, e in failed:
            self.metrics.failed("balancer", e)
            errors[site] = f"{type(e).__name__}: {e}"
            if self._balancer_failed.get(site) != errors[site]:
                self.say(f"balancer {site} failed (its table stays; retried next step): {e}")
        self._balancer_failed = errors

    def _health(self, cycle: Cycle) -> None:
        t = self.telemetry
        if t.up != self._up:
            self._up = t.up
            if t.up:
                self.say("Prometheus answers again: deciding again")
            else:
                self.say(f"Prometheus is down, failing static: {'; '.join(t.problems)}")
        if t.up and t.problems != self.problems:
            for p in t.problems:
                if p not in self.problems:
                    self.say(f"left out of the decision: {p}")
        self.problems = list(t.problems)
        err = None if cycle.error is None else f"{type(cycle.error).__name__}: {cycle.error}"
        if err is not None and err != self.last_error:
            self.say(f"enforcing decision {self.controller.seq} failed (retried next step): {err}")
        self.last_error = err

    # ------------------------------------------------------------------ the loop

    def run(self, until: float | None = None) -> int:
        """The loop, until stopped (a signal, :meth:`stop`) or ``until``."""

        def record(cycle: Cycle) -> None:
            self.metrics.record(cycle)

        steps = 0
        clock = self.clock
        first = clock.now()
        n = 0
        interval = self.doc.interval
        while not clock.stopped:
            t = first + n * interval
            if until is not None and t >= until:
                break
            if not clock.wait_until(t):
                break
            record(self.step(clock.now()))
            steps += 1
            n = max(n + 1, int((clock.now() - first) // interval) + 1)
        return steps

    def stop(self, why: str) -> None:
        self.stop_reason = why
        self.clock.stop()

    def install_signals(self) -> None:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.stop(signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def close(self) -> None:
        self.journal.close()

    # ------------------------------------------------------------------ for the API

    def state(self) -> dict[str, Any]:
        """What the controller sees and has in force, by site."""
        c = self.controller
        obs = c.observation
        cfg = c.config
        st = (
            state_to(c.state, self.names)
            if c.state is not None
            else {"forward": [], "shift": [], "withdrawn": [], "last_change": {}}
        )
        sites = []
        loc = [x.location for x in self.doc.sites]
        for i, s in enumerate(self.names.sites):
            row: dict[str, Any] = {
                "site": s,
                "maximum": float(self.base.maximum[i]),
                "target": float(self.base.target[i]),
                "acceptable": float(self.base.acceptable[i]),
                "in_force": {
                    "maximum": float(cfg.maximum[i]),
                    "target": float(cfg.target[i]),
                    "acceptable": float(cfg.acceptable[i]),
                },
                "utilisation": None,
                "cpu_ms": None,
                "capacity_ms": None,
                "fresh": False,
                "pinned": s in self.in_force.pinned,
                "forbidden": s in self.in_force.forbidden,
                "drained": s in self.in_force.drained,
                "location": _listed(loc[i]),
                "learned": (
                    None
                    if s not in self.learned_why
                    else {"maximum": float(self.learned.maximum[i]), "why": self.learned_why[s]}
                ),
            }
            if obs is not None:
                age = float(obs.age[i])
                row["fresh"] = bool(age <= cfg.stale_after)
                if np.isfinite(age):
                    row["utilisation"] = float(obs.utilisation[i])
                    row["cpu_ms"] = float(obs.cpu[i].sum())
                    row["capacity_ms"] = None if obs.capacity is None else float(obs.capacity[i])
            sites.append(row)
        return {
            "now": time.time(),
            "started": self.started,
            "pid": os.getpid(),
            "steps": self.steps,
            "telemetry_up": self.telemetry.up,
            "problems": list(self.problems),
            "frozen": self.in_force.frozen,
            "overrides": self.in_force.as_dict(),
            "decisions": c.seq,
            "last_decision_time": c.last_time,
            "enforce_error": self.last_error,
            "actuator": self.doc.actuator.kind,
            "balancer": None if self.balancer is None else self._balancer_state(),
            "sites": sites,
            "moves": st,
        }

    def _balancer_state(self) -> dict[str, Any]:
        """Per site: its servers' weights as last set or read, what was left out, and
        the last failure."""
        b = self.balancer
        assert b is not None
        return {
            site: {
                "weights": {n: w for (s, n), w in sorted(b.weights.items()) if s == site},
                "problems": b.problems.get(site, []),
                "error": self._balancer_failed.get(site),
            }
            for site in b.agents
        }

    def plan(self) -> list[dict[str, Any]]:
        return plan_to(self.controller.plan, self.names)

    def journal_rows(self, since: int = 0, limit: int = 200) -> list[dict[str, Any]]:
        """Journaled actions after decision ``since``, the newest ``limit`` of them."""
        # only the last ``limit`` decisions are read: the journal grows for as long
        # as the service runs
        since = max(since, self.controller.seq - limit)
        with Journal(self.journal.path) as j:  # a reader's own connection
            rows = j.actions(since)
            times = {seq: j.state(seq)[0] for seq in {s for s, _ in rows[-limit:]}}
        return [
            {"seq": seq, "time": times[seq], **action_to(a, self.names)} for seq, a in rows[-limit:]
        ]

    def atlas(self, site: str) -> dict[str, Any] | None:
        """What the predictor's atlas says if ``site`` withdrew its prefix: where its
        users would land (None without an atlas)."""
        fo = self.failover
        if fo is None:
            return None
        i = self.names.sites.index(site)
        known = True if fo.known is None else bool(fo.known[i])
        lands = {self.names.sites[j]: float(x) for j, x in enumerate(fo.share[i].tolist()) if x > 0}
        lost = max(0.0, 1.0 - sum(lands.values())) if known else None
        return {"site": site, "known": known, "lands": lands, "lost": lost}

    def set_override(
        self, kind: str, site: str | None, active: bool, who: str, note: str = ""
    ) -> dict[str, object]:
        o = self.overrides.set(kind, site, active, who, time.time(), note)
        self.in_force = self.overrides.in_force()  # shown at once; decided on next step
        self.say(
            f"override {o.id} by {who}: {kind} {o.site or ''} {'on' if active else 'off'}".replace(
                "  ", " "
            )
        )
        return o.as_dict()


def _listed(location: tuple[float, float] | None) -> list[float] | None:
    return None if location is None else [location[0], location[1]]


class _Resuming:
    """Stands for the controller while it is made (it enforces its resumed state from
    its constructor, and the dry-run actuator asks for the decision's number)."""

    def __init__(self, journal: Journal) -> None:
        latest = journal.latest()
        self.seq = 0 if latest is None else latest[0]


def _line(a: Any, names: Names) -> str:
    d = action_to(a, names)
    what = [d["kind"]]
    for k in ("site", "plan", "section", "prefix"):
        if d.get(k):
            what.append(str(d[k]))
    if d.get("to"):
        what.append(f"-> {d['to']}")
    if "share" in d:
        what.append(f"{d['share']:.0%}")
    return f"{' '.join(what)}: {render(a.reason, names)}"


class _BalancerMetrics(Collector):
    def __init__(self, balancer: ServerWeights) -> None:
        self.balancer = balancer

    def collect(self) -> Iterator[Metric]:
        fam = GaugeMetricFamily(
            "anyedge_server_weight",
            "Each server's weight in its site's balancer, as last set or read",
            labels=["site", "server"],
        )
        for (site, server), w in sorted(self.balancer.weights.items()):
            fam.add_metric([site, server], w)
        yield fam
        yield CounterMetricFamily(
            "anyedge_controller_balancer_moved_buckets",
            "Buckets the balancer's new weights moved to another server",
            value=self.balancer.moved,
        )


class _OverrideMetrics(Collector):
    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        now: InForce = self.service.in_force
        yield GaugeMetricFamily(
            "anyedge_controller_frozen",
            "1 while an operator has frozen the controller",
            value=1.0 if now.frozen else 0.0,
        )
        fam = GaugeMetricFamily(
            "anyedge_controller_overrides",
            "Sites with an override in force, by kind",
            labels=["kind"],
        )
        sizes = {
            "freeze": int(now.frozen),
            "pin": len(now.pinned),
            "forbid": len(now.forbidden),
            "drain": len(now.drained),
        }
        for k in KINDS:
            fam.add_metric([k], sizes[k])
        yield fam
