"""The Traffic Manager's Prometheus metrics, scraped over HTTP from a controller that
runs many steps on a network whose load changes, whose telemetry goes away and whose
actuator fails once: every number is checked against the journal and the loop."""

from __future__ import annotations

import math
import socket
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from anyedge.adapters import Controller, Journal
from anyedge.adapters.clock import SimClock
from anyedge.adapters.metrics import ControllerMetrics
from anyedge.control.core import Config, Observation, Plan, State
from anyedge.control.reasons import Names

SITES = ("CHC", "AKL", "SYD", "MEL")
PLANS = ("free", "pro", "business", "enterprise")
CAP = np.array([1_000.0, 2_000.0, 2_000.0, 4_000.0])


@dataclass
class Network:
    """A network whose first site is overloaded for the first hour, whose telemetry
    is down from 90 to 100 minutes, and which follows the state it is given."""

    up: bool = True
    state: State | None = None

    def observe(self, now: float) -> Observation:
        self.up = not 5_400 <= now < 6_000
        hot = 1.3 if now < 3_600 else 0.5
        u = np.array([hot, 0.3, 0.4, 0.2])
        cpu = (u * CAP)[:, None] * np.array([0.4, 0.3, 0.2, 0.1])[None, :]
        if self.state is not None:  # what is forwarded is served elsewhere
            f = self.state.forward
            moved = np.zeros_like(cpu)
            np.add.at(moved, (f.src, f.plan), cpu[f.src, f.plan] * f.share)
            got = np.zeros(len(SITES))
            np.add.at(got, f.dst, cpu[f.src, f.plan] * f.share)
            cpu = cpu - moved
            cpu[:, 0] += got
        age = np.zeros(len(SITES)) if self.up else np.full(len(SITES), math.inf)
        return Observation(utilisation=cpu.sum(axis=1) / CAP, cpu=cpu, age=age, capacity=CAP.copy())


@dataclass
class Actuator:
    network: Network
    fail_at: set[float] = field(default_factory=set)

    def enforce(self, state: State, plan: Plan, now: float) -> None:
        if now in self.fail_at:
            self.fail_at.discard(now)
            raise OSError("the speaker did not answer")
        self.network.state = state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served() -> Iterator[tuple[Controller, ControllerMetrics, str, list[Plan]]]:
    net = Network()
    lat = np.array([[0, 10, 25, 30], [10, 0, 30, 35], [25, 30, 0, 12], [30, 35, 12, 0.0]])
    cfg = Config(
        maximum=np.full(4, 0.9), target=np.full(4, 0.85), acceptable=np.full(4, 0.75),
        latency_ms=lat, max_move_share=1.0,
    )  # fmt: skip
    journal = Journal.in_memory(Names(SITES, PLANS))
    c = Controller(net, Actuator(net, fail_at={0.0}), cfg, journal)
    metrics = ControllerMetrics(c, SITES)
    reg = CollectorRegistry()
    reg.register(metrics)
    plans: list[Plan] = []

    def on_cycle(cycle: object) -> None:
        metrics.record(cycle)  # type: ignore[arg-type]
        plans.append(cycle.plan)  # type: ignore[attr-defined]

    c.run(SimClock(), 60.0, until=5_700.0, on_cycle=on_cycle)  # ends with telemetry down
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=reg)
    try:
        yield c, metrics, f"http://127.0.0.1:{port}/metrics", plans
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        journal.close()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_the_metrics_say_what_the_controller_did(
    served: tuple[Controller, ControllerMetrics, str, list[Plan]],
) -> None:
    c, _, url, plans = served
    got = scrape(url)
    kinds = Counter(a.kind for p in plans for a in p.actions if a.kind != "hold")
    holds = Counter(a.reason.code for p in plans for a in p.actions if a.kind == "hold")
    assert kinds["forward"] > 0  # the hot hour was relieved ...
    assert kinds["revert"] > 0  # ... and taken back after it
    assert got[("anyedge_controller_steps_total", ())] == len(plans) == 95
    for kind in ("forward", "revert", "handback", "shift", "withdraw", "announce"):
        assert got[("anyedge_controller_actions_total", (("kind", kind),))] == kinds[kind]
    for code, n in holds.items():
        assert got[("anyedge_controller_holds_total", (("reason", code),))] == n
    assert holds["no_fresh_telemetry"] == 5  # 90 to 95 minutes, a step a minute
    moved = sum(abs(a.cpu) for p in plans for a in p.actions if a.kind != "hold")
    assert got[("anyedge_controller_moved_cpu_ms_total", ())] == pytest.approx(moved)
    failed = (("actuator", "actuator"), ("error", "OSError"))
    assert got[("anyedge_controller_enforce_failures_total", failed)] == 1
    # the last decision that changed anything was enforced at once, after its commit
    lag = got[("anyedge_controller_journal_lag_seconds", ())]
    assert math.isfinite(lag)
    assert lag >= 0
    # what the journal holds
    journaled = c.journal.actions()
    assert got[("anyedge_controller_decisions", ())] == c.journal.decisions() == c.seq
    assert Counter(a.kind for _, a in journaled if a.kind != "hold") == kinds
    assert got[("anyedge_controller_last_decision_time", ())] == c.last_time
    assert got[("anyedge_controller_forwards", ())] == len(c.state.forward)  # type: ignore[union-attr]
    # the last step had no telemetry: the alert, and every site left out
    assert got[("anyedge_controller_telemetry_up", ())] == 0
    assert got[("anyedge_controller_stale_sites", ())] == len(SITES)
    for i, site in enumerate(SITES):
        key = ("anyedge_site_utilisation", (("site", site),))
        assert got[key] == pytest.approx(c.observation.utilisation[i])  # type: ignore[union-attr]
        for name in ("maximum", "target", "acceptable"):
            labels = (("site", site), ("threshold", name))
            want = float(getattr(c.config, name)[i])
            assert got[("anyedge_site_threshold", labels)] == want


def test_the_journal_lag_grows_until_the_decision_is_enforced() -> None:
    """A decision whose enforcement fails: its lag is the time since its commit, growing,
    until the retry at the next step carries it out; then it stays what it was."""
    net = Network()
    lat = np.array([[0, 10, 25, 30], [10, 0, 30, 35], [25, 30, 0, 12], [30, 35, 12, 0.0]])
    cfg = Config(
        maximum=np.full(4, 0.9), target=np.full(4, 0.85), acceptable=np.full(4, 0.75),
        latency_ms=lat, max_move_share=1.0,
    )  # fmt: skip
    with Journal.in_memory(Names(SITES, PLANS)) as journal:
        c = Controller(net, Actuator(net, fail_at={0.0}), cfg, journal)
        assert math.isnan(c.journal_lag())  # nothing decided yet
        assert c.cycle(0.0).error is not None  # journaled, not enforced
        first = c.journal_lag()
        assert c.journal_lag() > first > 0  # still waiting for the network
        assert net.state is None
        assert c.cycle(60.0).error is None  # the retry carries it out
        assert net.state is not None
        done = c.journal_lag()
        assert done > first
        assert c.journal_lag() == done  # enforced: it no longer grows
