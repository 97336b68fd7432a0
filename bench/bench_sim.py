"""Benchmark: the default scenario through the digital twin, all three controllers.

The default world (300 sites), 24 simulated hours at 10 s ticks, under no traffic
management, prefix withdrawal only and the full Traffic Manager.  Prints the time of
each run and simulated seconds per wall-clock second, beside the baseline of the same
day at the same tick with the demand recomputed every tick instead of every minute
(what a straightforward loop does), timed on the first simulated hour and scaled.
Target: all three runs in under 60 s on this 2-core machine.

Run: ``python bench/bench_sim.py``.
"""

from __future__ import annotations

import time

from anyedge.model.worldgen import build_world
from anyedge.sim import MODES, Twin, default_scenario, engine, parse_scenario


def main() -> None:
    world = build_world()
    sc = default_scenario(world)
    t0 = time.perf_counter()
    twin = Twin(world, sc)
    t_setup = time.perf_counter() - t0
    print(f"set-up (routing, predictor's failover shares): {t_setup:.1f} s")
    total = 0.0
    for m in MODES:
        t0 = time.perf_counter()
        twin.run(m)
        dt = time.perf_counter() - t0
        total += dt
        print(f"{m:>9}: {dt:5.1f} s  ({sc.duration / dt:,.0f} simulated s per s)")
    print(f"all three: {total:.1f} s ({3 * sc.duration / total:,.0f} simulated s per s)")

    hour = parse_scenario("duration: 1h\ntick: 10s\nevents: []\n", world)
    fast = Twin(world, hour)
    t0 = time.perf_counter()
    fast.run("manager")
    t_fast = time.perf_counter() - t0
    saved = engine.SAMPLE_S
    engine.SAMPLE_S = hour.tick  # demand (and every sample) recomputed each tick
    try:
        t0 = time.perf_counter()
        Twin(world, hour).run("manager")
        t_naive = time.perf_counter() - t0 - t_setup
    finally:
        engine.SAMPLE_S = saved
    print(
        f"one hour, demand per minute: {t_fast:.2f} s; demand per tick (baseline): "
        f"{max(t_naive, 0.0):.2f} s; ratio {max(t_naive, 0.0) / t_fast:.1f}x"
    )


if __name__ == "__main__":
    main()
