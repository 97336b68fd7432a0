"""One control loop for every world: the twin and the lab run the same
:meth:`Controller.run`, on a simulated or a real clock; a failed enforcement is retried
by the loop; the twin's Traffic Manager decides with the maximum it has learned.

The fake network of the non-twin tests is ``test_control_journal``'s: site 0 at 90 %
(maximum 88 %) with three receivers, its served CPU time following the state enforced.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from anyedge.adapters import Controller, Journal
from anyedge.adapters import controller as controller_module
from anyedge.adapters.clock import LATE, SimClock, WallClock
from anyedge.adapters.controller import Cycle
from anyedge.control import learn as learn_module
from anyedge.control.core import Config, Failover, Observation, Plan, State
from anyedge.control.core import decide as real_decide
from anyedge.control.learn import LearnedThreshold, learned_config
from anyedge.control.learn import learn_maximum as real_learn
from anyedge.model import World
from anyedge.sim import Twin, engine, parse_scenario
from test_control_journal import NAMES, Crashing, config
from test_control_journal import World as FakeNetwork


def two_hours(world: World, events: str = "[]") -> Any:
    return parse_scenario(f"duration: 2h\ntick: 10s\nevents: {events}\n", world)


@pytest.fixture
def loops(monkeypatch: pytest.MonkeyPatch) -> list[type]:
    """The clock of every call of Controller.run, in order."""
    seen: list[type] = []
    real = Controller.run

    def spy(self: Controller, clock: Any, *args: Any, **kwargs: Any) -> int:
        seen.append(type(clock))
        return real(self, clock, *args, **kwargs)

    monkeypatch.setattr(Controller, "run", spy)
    return seen


# ------------------------------------------------------------------ the clocks


def test_the_simulated_clock_runs_what_is_due_around_the_waiter() -> None:
    clock = SimClock(resolution=0.1)
    log: list[tuple[str, float]] = []
    clock.every(0.1, lambda t: log.append(("tick", t)), until=0.35)
    clock.at(0.2, lambda t: log.append(("late", t)), priority=LATE)
    assert clock.wait_until(0.2)  # 0.1 + 0.1 meets the 0.2 it was given
    assert clock.now() == 0.2
    assert log == [("tick", 0.0), ("tick", 0.1), ("tick", 0.2)]  # "late" waits for us
    clock.wait_until(1.0)
    assert log[3:] == [("late", 0.2), ("tick", 0.30000000000000004)]
    assert clock.now() == 1.0
    with pytest.raises(ValueError, match="already at 1"):
        clock.at(0.5, lambda t: None)


def test_a_stopped_wall_clock_ends_the_loop_at_once() -> None:
    net = FakeNetwork()
    clock = WallClock()
    cycles: list[Cycle] = []
    stepped = threading.Event()

    def stepping(cycle: Cycle) -> None:
        cycles.append(cycle)
        stepped.set()

    def loop() -> None:  # SQLite wants its connection in the thread that uses it
        with Journal.in_memory(NAMES) as j:
            Controller(net, net, config(), j).run(clock, 3600.0, on_cycle=stepping)

    thread = threading.Thread(target=loop)
    thread.start()  # steps at once, then would wait an hour
    assert stepped.wait(60)
    clock.stop()
    thread.join(60)
    assert not thread.is_alive()
    assert len(cycles) == 1
    assert not clock.wait_until(clock.now() + 3600.0)


# ------------------------------------------------------------------ one loop


def test_the_twin_and_the_lab_run_the_same_loop(
    small_world: World, loops: list[type], tmp_path: Any
) -> None:
    """Swap the clock, not the loop: the twin's run goes through Controller.run on a
    simulated clock and journals every decision that says something; the same method on
    the wall clock runs a network for a second."""
    site = small_world.network.sites.code[0]
    sc = two_hours(
        small_world, f"[{{at: 10m, for: 1h, kind: servers_down, site: {site}, fraction: 0.8}}]"
    )
    twin = Twin(small_world, sc)
    with Journal(tmp_path / "twin.sqlite", twin.names) as j:
        result = twin.run("manager", journal=j)
        acts = j.actions()
        decisions = j.decisions()
    assert loops == [SimClock]
    t = result.totals
    assert t.decisions == 2 * 60 - 1  # a minute apart, from the first with 30 s old telemetry
    assert t.actions > 0
    assert 0 < decisions <= t.decisions  # empty plans are not written
    assert sum(a.kind != "hold" for _, a in acts) == t.actions
    assert twin.run("none").totals.decisions == 0  # no controller, no loop
    assert loops == [SimClock]

    net = FakeNetwork()
    clock = WallClock()
    start = clock.now()

    class Since:  # the fake network's times count from the start of the run
        def observe(self, now: float) -> Observation:
            return net.observe(now - start)

    cycles: list[Cycle] = []
    with Journal(tmp_path / "lab.sqlite", NAMES) as j:
        ctl = Controller(Since(), net, replace(config(), min_interval=0.0), j)
        steps = ctl.run(clock, 0.25, until=start + 1.0, on_cycle=cycles.append)
        assert j.decisions() >= 1
    assert loops == [SimClock, WallClock]
    assert steps == len(cycles) >= 1
    assert all(start <= c.time <= clock.now() for c in cycles)
    assert net.enforced  # the network carried out what the loop decided


def test_the_loop_retries_a_failed_enforcement() -> None:
    net = FakeNetwork()
    cycles: list[Cycle] = []
    with Journal.in_memory(NAMES) as j:
        ctl = Controller(net, Crashing(net, 1, OSError("actuator down")), config(), j)
        steps = ctl.run(SimClock(), 10.0, until=40.0, on_cycle=cycles.append)
        latest = j.latest()
    assert steps == 4  # the failure did not end the loop
    assert [c.time for c in cycles] == [0.0, 10.0, 20.0, 30.0]
    first = cycles[0]
    assert isinstance(first.error, OSError)
    assert first.plan.of("forward")  # the decision stands: journaled, then retried
    assert [c.error for c in cycles[1:]] == [None, None, None]
    assert latest is not None
    assert latest[0] == 1
    assert [now for now, _, _ in net.enforced] == [10.0]  # retried once, at the next step
    np.testing.assert_array_equal(net.enforced[0][1].shares(), latest[2].shares())


def test_the_loop_does_not_swallow_other_failures() -> None:
    class Blind:
        def observe(self, now: float) -> Observation:
            raise OSError("no telemetry")

    net = FakeNetwork()
    with Journal.in_memory(NAMES) as j:
        ctl = Controller(Blind(), net, config(), j)
        with pytest.raises(OSError, match="no telemetry"):
            ctl.run(SimClock(), 10.0, until=40.0)


def test_the_loop_can_take_a_new_config_between_steps() -> None:
    net = FakeNetwork()
    high = replace(config(), maximum=np.full(4, 0.95), target=np.full(4, 0.9))
    with Journal.in_memory(NAMES) as j:
        ctl = Controller(net, net, high, j)
        clock = SimClock()
        clock.at(20.0, lambda _: setattr(ctl, "config", config()))  # before the step at 20
        ctl.run(clock, 10.0, until=40.0)
        kinds = [(a.kind, a.reason.code) for _, a in j.actions()]
        assert ("forward", "over_maximum") in kinds
        assert set(kinds) <= {("forward", "over_maximum"), ("hold", "short_cap")}
        assert {j.state(seq)[0] for seq, _ in j.actions()} == {20.0}


# ------------------------------------------------------------------ learned maximum


def test_learned_config_moves_the_thresholds_with_the_maximum() -> None:
    static = Config(
        maximum=np.array([0.9, 0.9, 0.9]),
        target=np.array([0.85, 0.85, 0.85]),
        acceptable=np.array([0.75, 0.75, 0.75]),
        latency_ms=np.zeros((3, 3)),
    )
    cfg = learned_config(static, [0.823, 0.9, 0.95])
    np.testing.assert_allclose(cfg.maximum, [0.823, 0.9, 0.95])
    np.testing.assert_allclose(cfg.target, [0.773, 0.85, 0.85])  # never above static
    np.testing.assert_allclose(cfg.acceptable, [0.673, 0.75, 0.75])
    assert cfg.latency_ms is static.latency_ms
    with pytest.raises(ValueError, match="a maximum per site"):
        learned_config(static, [0.8, 0.8])


def test_the_twin_decides_with_the_learned_maximum_where_it_is_trusted(
    small_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two busy hours of the small world (a dozen sites' users send 1.8 times their
    usual): after the first hour's learning, sites whose fit meets the SLO below the
    static 90 % are managed against that."""
    decided: list[tuple[float, Config]] = []
    learned: list[LearnedThreshold] = []

    def decide(
        obs: Observation, state: State, cfg: Config, now: float, failover: Failover | None = None
    ) -> Plan:
        decided.append((now, cfg))
        return real_decide(obs, state, cfg, now, failover)

    def learn(u: Any, p: Any, **kw: Any) -> LearnedThreshold:
        learned.append(real_learn(u, p, **kw))
        return learned[-1]

    monkeypatch.setattr(controller_module, "decide", decide)
    monkeypatch.setattr(learn_module, "learn_maximum", learn)  # what relearn calls
    busy = ", ".join(
        f"{{at: 0m, for: 2h, kind: surge, site: {c}, factor: 1.8}}"
        for c in small_world.network.sites.code[:12]
    )
    twin = Twin(small_world, two_hours(small_world, f"[{busy}]"))
    twin.run("manager")
    static = small_world.network.sites.thresholds
    before = [cfg for now, cfg in decided if now <= engine.LEARN_S]
    after = [cfg for now, cfg in decided if now > engine.LEARN_S]
    assert before
    assert after
    for cfg in before:
        np.testing.assert_array_equal(cfg.maximum, static[:, 0])
    cfg = after[0]
    assert all(c is cfg for c in after)  # learned once, at the hour
    lower = np.flatnonzero(cfg.maximum < static[:, 0])
    assert lower.size, "no site learned a maximum below the static one"
    trusted = {r.value for r in learned if r.method != "static"}
    for s in lower.tolist():
        assert cfg.maximum[s] in trusted  # a fit's value, not the fallback's
        assert cfg.maximum[s] >= 0.5
        assert cfg.target[s] == pytest.approx(cfg.maximum[s] - (static[s, 0] - static[s, 1]))
        assert cfg.acceptable[s] == pytest.approx(
            min(static[s, 2], cfg.maximum[s] - (static[s, 0] - static[s, 2]))
        )
    assert np.all(cfg.maximum <= static[:, 0])  # a learned maximum only ever lowers it
    keep = cfg.maximum == static[:, 0]
    np.testing.assert_array_equal(cfg.target[keep], static[keep, 1])
    # the withdrawal-only baseline keeps its static thresholds
    decided.clear()
    twin.run("withdraw")
    assert all(np.array_equal(c.maximum, static[:, 0]) for _, c in decided)
