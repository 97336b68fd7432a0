"""Benchmark: one global Traffic Manager decision for the default 300-site world.

The observation is the world at its evening peak with demand half as much again (the
default world is sized so that its own peak overloads nothing): each site's CPU time
per plan from the BGP catchment (4 plans), its utilisation against its capacity, and
the sections of the multi-colo sites.  At that peak a few dozen sites are above their
maximum, so the decision has real work: every one of them forwards to receivers
nearest first.

Prints the time of one decision (median of many) and the ratio against a
straightforward pure-Python version of the same rules (dicts and loops, no arrays),
checking that both make the same moves.  Target: under 20 ms per decision.

Run: ``python bench/bench_control.py``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from anyedge.control.core import Config, Observation, State, decide
from anyedge.model.worldgen import build_world
from anyedge.predict import Predictor

SURGE = 1.5


def peak_observation() -> tuple[Observation, Config]:
    world = build_world()
    p = Predictor(world)
    net = world.network
    e = world.internet.eyeballs
    site = p.base.eyeball_site
    ok = site >= 0
    plans = len(net.plans)
    cpu = np.zeros((len(net.sites), plans))
    for k in range(plans):
        w = e.rps[ok] * e.mix[ok, k] * net.plans.cpu_ms[k]
        cpu[:, k] = np.bincount(site[ok], weights=w, minlength=len(net.sites))
    # the default world is sized for its own peak; a surge of half as much again puts
    # a few dozen sites above their maximum, so that the decision has real work
    cpu *= SURGE
    cap = net.site_capacity()
    util = cpu.sum(axis=1) / cap
    sec = net.sections
    sec_share = sec.capacity / cap[sec.site]
    sec_cpu = cpu.sum(axis=1)[sec.site] * sec_share
    rng = np.random.default_rng(3)
    sec_util = util[sec.site] * rng.uniform(0.8, 1.2, size=len(sec))  # uneven sections
    lat = world.latency.rtt_matrix(net.sites.lat, net.sites.lon, net.sites.lat, net.sites.lon)
    th = net.sites.thresholds
    obs = Observation(
        utilisation=util,
        cpu=cpu,
        age=np.zeros(len(net.sites)),
        section_site=sec.site.astype(np.int64),
        section_utilisation=sec_util,
        section_cpu=sec_cpu,
    )
    cfg = Config(
        maximum=th[:, 0], target=th[:, 1], acceptable=th[:, 2], latency_ms=lat, max_move_share=1.0
    )
    return obs, cfg


def naive_decide(obs: Observation, cfg: Config) -> list[tuple[int, int, int, float]]:
    """The Plurimog rules written plainly: (site, plan, receiver, CPU ms/s) per move."""
    n, plans = obs.cpu.shape
    util = obs.utilisation.tolist()
    cpu = [list(map(float, row)) for row in obs.cpu]
    total = [sum(row) for row in cpu]
    mx, tg, ac = cfg.maximum.tolist(), cfg.target.tolist(), cfg.acceptable.tolist()
    lat = cfg.latency_ms.tolist()
    room = {}
    for s in range(n):
        if util[s] < ac[s] and util[s] > 0:
            room[s] = max(total[s] * ac[s] / util[s] - total[s], 0.0)
    moves = []
    over = sorted((s for s in range(n) if util[s] > mx[s]), key=lambda s: -util[s])
    for s in over:
        need = max(total[s] - total[s] * tg[s] / util[s], 0.0)
        receivers = sorted(
            (r for r in room if r != s and room[r] > 0), key=lambda r: (lat[s][r], r)
        )
        need = min(need, sum(room[r] for r in receivers))
        taken = [0.0] * plans
        left = need
        for p in range(plans - 1):  # enterprise stays
            taken[p] = min(cpu[s][p], left)
            left -= taken[p]
        i = 0
        for p in reversed(range(plans)):
            while taken[p] > 1e-12 and i < len(receivers):
                r = receivers[i]
                give = min(taken[p], room[r])
                if give > 1e-9:
                    moves.append((s, p, r, give))
                taken[p] -= give
                room[r] -= give
                if room[r] <= 1e-12:
                    i += 1
    return moves


def median_time(fn: Callable[[], Any], runs: int) -> tuple[Any, float]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def main() -> None:
    obs, cfg = peak_observation()
    state = State.empty(obs.sites, obs.plans, obs.section_site.size)
    plan, t_core = median_time(lambda: decide(obs, state, cfg, 0.0), 30)
    naive, t_naive = median_time(lambda: naive_decide(obs, cfg), 10)
    ours = sorted((a.site, a.plan, a.to, round(a.cpu, 6)) for a in plan.of("forward"))
    theirs = sorted((s, p, r, round(c, 6)) for s, p, r, c in naive)
    over = int((obs.utilisation > cfg.maximum).sum())
    print(
        f"observation: {obs.sites} sites, {obs.plans} plans, {obs.section_site.size} sections,"
        f" {over} sites above their maximum"
    )
    print(
        f"decision (array core): {1000 * t_core:.2f} ms  "
        f"[{len(plan.of('forward'))} forwards, {len(plan.of('shift'))} section shifts]"
    )
    print(f"decision (pure Python, same rules): {1000 * t_naive:.2f} ms")
    print(f"  ratio pure Python / core: {t_naive / t_core:.1f}x   same moves: {ours == theirs}")


if __name__ == "__main__":
    main()
