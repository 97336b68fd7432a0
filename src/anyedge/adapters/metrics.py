"""Prometheus metrics of a running Traffic Manager.

An operator watches the controller the way they watch everything else: with
Prometheus.  :class:`ControllerMetrics` is a prometheus-client collector over one
:class:`~.controller.Controller`; hand its :meth:`~ControllerMetrics.record` to
:meth:`Controller.run` as ``on_cycle`` (it counts what each step did), register it in a
registry and serve that registry (``prometheus_client.start_http_server``).  Everything
else is read from the controller when Prometheus scrapes, so a scrape shows the state
in force at that moment:

==============================================  =======================================
``anyedge_controller_steps_total``              steps taken
``anyedge_controller_actions_total{kind}``      actions decided, by kind (forward,
                                                revert, handback, shift, withdraw,
                                                announce)
``anyedge_controller_holds_total{reason}``      holds (what could not be done), by
                                                reason code
``anyedge_controller_moved_cpu_ms_total``       CPU ms/s moved by the actions, summed
``anyedge_controller_enforce_failures_total``   steps whose enforcement failed, by
``{actuator, error}``                           actuator (its ``kind``, or ``balancer``
                                                for the server weights) and error (the
                                                exception's class)
``anyedge_controller_journal_lag_seconds``      from the commit of the last decision
                                                that changed the state to the end of
                                                its enforcement; while it is not done,
                                                the time since its commit (growing:
                                                alert on it)
``anyedge_controller_decisions``                decisions in the journal (its last
                                                sequence number)
``anyedge_controller_last_decision_time``       unix time of the last journaled decision
``anyedge_controller_forwards``                 forwards in force
``anyedge_controller_telemetry_up``             1 if the telemetry answered the last
                                                step (an alert when 0: the controller is
                                                failing static)
``anyedge_controller_stale_sites``              sites left out of the last decision
``anyedge_site_utilisation{site}``              as last observed
``anyedge_site_threshold{site, threshold}``     maximum, target and acceptable in force
==============================================  =======================================
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .controller import Controller, Cycle

MOVES = ("forward", "revert", "handback", "shift", "withdraw", "announce")


class ControllerMetrics(Collector):
    """The metrics of ``controller``, whose sites are ``sites`` (by row)."""

    def __init__(
        self, controller: Controller, sites: Sequence[str], actuator: str = "actuator"
    ) -> None:
        self.controller = controller
        self.sites = tuple(sites)
        self.actuator = actuator  # the failures' label
        self._lock = threading.Lock()
        self.steps = 0
        self.actions: Counter[str] = Counter()
        self.holds: Counter[str] = Counter()
        self.moved = 0.0
        self.failures: Counter[tuple[str, str]] = Counter()

    def failed(self, actuator: str, error: BaseException) -> None:
        """Count a failed enforcement of ``actuator`` (the loop's own are counted by
        :meth:`record`)."""
        with self._lock:
            self.failures[actuator, type(error).__name__] += 1

    def record(self, cycle: Cycle) -> None:
        """Count one step (pass this as ``on_cycle``)."""
        with self._lock:
            self.steps += 1
            for a in cycle.plan.actions:
                if a.kind == "hold":
                    self.holds[a.reason.code] += 1
                else:
                    self.actions[a.kind] += 1
                    self.moved += abs(a.cpu)
            if cycle.error is not None:
                self.failures[self.actuator, type(cycle.error).__name__] += 1

    def collect(self) -> Iterator[Metric]:
        c = self.controller
        with self._lock:
            steps, moved, failures = self.steps, self.moved, dict(self.failures)
            actions, holds = dict(self.actions), dict(self.holds)
        yield CounterMetricFamily("anyedge_controller_steps", "Steps taken", value=steps)
        fam = CounterMetricFamily(
            "anyedge_controller_actions", "Actions decided, by kind", labels=["kind"]
        )
        for kind in MOVES:
            fam.add_metric([kind], actions.get(kind, 0))
        yield fam
        fam = CounterMetricFamily(
            "anyedge_controller_holds", "Holds, by reason code", labels=["reason"]
        )
        for code, n in sorted(holds.items()):
            fam.add_metric([code], n)
        yield fam
        yield CounterMetricFamily(
            "anyedge_controller_moved_cpu_ms", "CPU ms/s moved by the actions", value=moved
        )
        fam = CounterMetricFamily(
            "anyedge_controller_enforce_failures",
            "Steps whose enforcement failed, by actuator and error",
            labels=["actuator", "error"],
        )
        for (actuator, error), n in sorted(failures.items()):
            fam.add_metric([actuator, error], n)
        yield fam
        yield GaugeMetricFamily(
            "anyedge_controller_journal_lag_seconds",
            "From the commit of the last decision that changed the state to the end of its "
            "enforcement (growing while it is not done; NaN: none yet)",
            value=c.journal_lag(),
        )
        yield GaugeMetricFamily(
            "anyedge_controller_decisions", "Decisions in the journal", value=c.seq
        )
        yield GaugeMetricFamily(
            "anyedge_controller_last_decision_time",
            "Unix time of the last journaled decision (NaN: none yet)",
            value=math.nan if c.last_time is None else c.last_time,
        )
        forwards = 0 if c.state is None else len(c.state.forward)
        yield GaugeMetricFamily("anyedge_controller_forwards", "Forwards in force", forwards)
        up = getattr(c.telemetry, "up", True)
        yield GaugeMetricFamily(
            "anyedge_controller_telemetry_up",
            "1 if the telemetry answered the last step",
            value=1.0 if up else 0.0,
        )
        obs = c.observation
        stale = 0 if obs is None else int((obs.age > c.config.stale_after).sum())
        yield GaugeMetricFamily(
            "anyedge_controller_stale_sites", "Sites left out of the last decision", stale
        )
        util = GaugeMetricFamily(
            "anyedge_site_utilisation", "CPU utilisation as last observed", labels=["site"]
        )
        if obs is not None:
            for site, u in zip(self.sites, obs.utilisation.tolist(), strict=False):
                util.add_metric([site], u)
        yield util
        thr = GaugeMetricFamily(
            "anyedge_site_threshold",
            "Utilisation thresholds in force",
            labels=["site", "threshold"],
        )
        cfg = c.config
        for name, values in (
            ("maximum", cfg.maximum),
            ("target", cfg.target),
            ("acceptable", cfg.acceptable),
        ):
            for site, v in zip(self.sites, values.tolist(), strict=False):
                thr.add_metric([site, name], v)
        yield thr
