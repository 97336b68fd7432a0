"""The Traffic Manager against the lab: telemetry from the sites' services, actions
through the real forwarding.

The same :class:`~anyedge.adapters.controller.Controller` that runs against the twin runs
here, journal included; only its two interfaces differ:

* :class:`LabTelemetry` reads each site service's counters (cumulative requests per
  plan, from the ``/metrics`` each service serves and registers in the lab directory,
  :mod:`.service_metrics`; summed over a site's servers), turns the
  requests per second since the last reading into CPU time with the topology's cost
  model (``cpu_ms_per_request`` of each plan) and reports utilisation against the
  site's capacity (its sections' servers × CPU per server).  Traffic a site receives
  from another site over the backbone is served — and so counted — where it lands.
* :class:`LabActuator` makes the lab forward what the state says (Plurimog): per site,
  per plan, a share of flows to a neighbouring site over a backbone link, through
  nftables (:mod:`.forward`).  Sites without a backbone link between them cannot
  forward to each other; the Traffic Manager is told so by an infinite latency between
  them.  Each lab site has one section, so there is nothing for Duomog to shift, and
  withdrawals (which need the predictor's atlas) are left to ``anyedge lab withdraw``.

:func:`lab_config` sets the Traffic Manager up for a lab: the sites' thresholds, the
backbone latencies, and lab-sized intervals (seconds rather than minutes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..adapters import nft
from ..adapters.clock import WallClock
from ..adapters.controller import Controller, Cycle
from ..adapters.journal import Journal
from ..control.core import Action, Config, Observation, Plan, State, flows
from ..control.reasons import Names, render
from ..model.geo import LatencyModel
from ..model.world import World
from .build import LabError
from .forward import Forwarder
from .plan import LabPlan, lab_world
from .service_metrics import read_targets, scrape

FloatArray = npt.NDArray[np.float64]


def capacity_of(world: World, plan: LabPlan) -> FloatArray:
    """CPU ms/s of each lab site (plan.sites order)."""
    net = world.network
    cap = net.site_capacity()
    return np.array([cap[net.sites.index(str(n.site))] for n in plan.sites])


def lab_config(world: World, plan: LabPlan, min_interval: float = 2.0) -> Config:
    net = world.network
    rows = [net.sites.index(str(n.site)) for n in plan.sites]
    th = net.sites.thresholds[rows]
    model = lab_world(world)
    s = model.network.sites
    lat = LatencyModel().rtt_matrix(s.lat, s.lon, s.lat, s.lon)
    joined = np.zeros_like(lat, dtype=np.bool_)
    index = {n.name: i for i, n in enumerate(plan.sites)}
    for i, n in enumerate(plan.sites):
        for p in n.backbone:
            joined[i, index[p.peer]] = True
    return Config(
        maximum=th[:, 0].copy(),
        target=th[:, 1].copy(),
        acceptable=th[:, 2].copy(),
        latency_ms=np.where(joined, lat, np.inf),
        plans=tuple(net.plans.names),
        can_forward=np.asarray(joined.any(axis=1)),
        stale_after=10.0,
        max_move_share=1.0,
        min_interval=min_interval,
    )


@dataclass
class LabTelemetry:
    world: World
    plan: LabPlan
    directory: Path
    _last: dict[str, tuple[float, dict[str, int]]] = field(default_factory=dict)
    last: Observation | None = None

    def observe(self, now: float) -> Observation:
        sites = self.plan.sites
        ports = [str(p) for p in self.plan.ports]
        cost = np.asarray(self.world.network.plans.cpu_ms, dtype=np.float64)
        rps = np.zeros((len(sites), len(ports)))
        age = np.zeros(len(sites))
        for i, n in enumerate(sites):
            counts: dict[str, int] = {}
            files = sorted((self.directory / "prometheus").glob(f"{n.name}-*.json"))
            try:
                if not files:
                    raise OSError("no service has registered its /metrics")
                for target in read_targets(files):
                    got = scrape(target).get("anyedge_lab_requests", {})
                    for name, port in zip(self.plan.plans, ports, strict=True):
                        counts[port] = counts.get(port, 0) + int(got.get(name, 0))
            except (OSError, ValueError) as e:
                raise LabError(f"{n.site}: no telemetry from its service: {e}") from None
            t = time.time()
            last = self._last.get(n.name)
            if last is not None and t > last[0]:
                dt = t - last[0]
                # a server removed takes its count with it: never below 0
                rps[i] = [max(0, counts.get(p, 0) - last[1].get(p, 0)) / dt for p in ports]
            self._last[n.name] = (t, counts)
            age[i] = max(0.0, time.time() - t)
        cpu = rps * cost[None, :]
        cap = capacity_of(self.world, self.plan)
        self.last = Observation(utilisation=cpu.sum(axis=1) / cap, cpu=cpu, age=age, capacity=cap)
        return self.last


@dataclass
class LabActuator:
    plan: LabPlan
    directory: Path
    enforced: list[float] = field(default_factory=list)  # times of each enforcement

    def enforce(self, state: State, plan: Plan, now: float) -> None:
        fwd = Forwarder(self.plan, self.directory)
        sites = self.plan.sites
        ports = self.plan.ports
        for i, n in enumerate(sites):
            f = state.forward
            shares = [
                nft.Share(ports[int(p)], str(sites[int(d)].site), float(sh))
                for p, d, sh in zip(
                    f.plan[f.src == i], f.dst[f.src == i], f.share[f.src == i], strict=True
                )
                if sh > 1e-9
            ]
            fwd.set(str(n.site), shares)
        self.enforced.append(now)


@dataclass(frozen=True)
class Step:
    """One step of the loop, for the log and the tests."""

    time: float
    utilisation: dict[str, float]
    forwarding: dict[str, float]  # site -> share of its traffic forwarded (all plans)
    actions: list[str]


def run(
    world: World,
    plan: LabPlan,
    directory: Path,
    duration: float,
    interval: float = 1.0,
    on_step: Callable[[Step], None] = lambda _: None,
    stop: Callable[[], bool] = lambda: False,
    clock: WallClock | None = None,
) -> list[Step]:
    """Run the Traffic Manager against the lab for ``duration`` seconds, one decision
    every ``interval`` — the loop of :meth:`Controller.run` on the wall clock (``clock``:
    stop it from another thread to end the run at once); journal in
    ``<lab dir>/control.sqlite``.  Ends with the state it reached in force (stopping the
    loop does not undo the moves).  An enforcement that fails is retried at the next
    step; its step's actions say so."""
    codes = [str(n.site) for n in plan.sites]
    telemetry = LabTelemetry(world, plan, directory)
    actuator = LabActuator(plan, directory)
    clock = WallClock() if clock is None else clock
    steps: list[Step] = []
    names = Names(tuple(codes), tuple(plan.plans))
    with Journal(directory / "control.sqlite", names) as journal:
        ctl = Controller(telemetry, actuator, lab_config(world, plan), journal)
        t0 = clock.now()
        telemetry.observe(t0)  # the first reading only sets the counters

        def record(cycle: Cycle) -> None:
            obs = telemetry.last
            state = ctl.state
            share = np.zeros(len(codes))
            if state is not None and obs is not None:
                fl = flows(obs, state)  # what each site forwards, of its own users' traffic
                out = np.bincount(fl.src, weights=fl.cpu, minlength=len(codes))
                share = out / np.maximum(fl.arriving.sum(axis=1), 1e-9)
            actions = [_describe(a, names) for a in cycle.plan.actions]
            if cycle.error is not None:
                actions.append(f"enforcing failed, retried at the next step: {cycle.error}")
            step = Step(
                time=cycle.time,
                utilisation={
                    c: float(obs.utilisation[i]) if obs is not None else 0.0
                    for i, c in enumerate(codes)
                },
                forwarding={c: float(share[i]) for i, c in enumerate(codes)},
                actions=actions,
            )
            steps.append(step)
            on_step(step)

        ctl.run(
            clock, interval, start=t0 + interval, until=t0 + duration, stop=stop, on_cycle=record
        )
    return steps


def _describe(a: Action, names: Names) -> str:
    where = names.sites[a.site] if a.site >= 0 else "network"
    why = render(a.reason, names)
    if a.kind in ("forward", "revert", "handback"):
        plan, to = names.plans[a.plan], names.sites[a.to]
        return f"{a.kind} {where} {plan} {100 * a.share:+.1f} % -> {to}: {why}"
    return f"{a.kind} {where}: {why}"
