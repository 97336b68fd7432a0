"""Benchmark: what origin fetches add to a day of the twin.

On the default world and the default scenario, times (CPU seconds, median of
``--runs``):

* the origin-fetch paths of the whole day (:func:`anyedge.sim.fetch.simulate`: every
  (site, origin) pair's candidates, Argo's choice and Orpheus, a step a minute), which
  ``anyedge simulate`` computes once per scenario;
* one run's tally of them (:func:`anyedge.sim.fetch.tally`), paid by each of its runs;
* the baseline, measured in the same process: one run of the day without a controller
  (``Twin.run("none")``), which now includes its tally.

It prints each and their ratios to the baseline.  ``anyedge simulate`` with no argument
plays six runs (three controllers, each with and without events) and the paths once.

Run: ``python bench/bench_fetch.py`` (``--runs N``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from anyedge.model.worldgen import build_world
from anyedge.sim import Twin, default_scenario
from anyedge.sim.fetch import simulate, tally


def cpu(fn: Callable[[], Any], runs: int) -> tuple[Any, float]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.process_time()
        out = fn()
        times.append(time.process_time() - t0)
    return out, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    world = build_world()
    sc = default_scenario(world)
    twin = Twin(world, sc)
    steps = round(sc.duration / 60.0)
    paths, t_paths = cpu(lambda: simulate(world, (), sc.seed, 60.0, steps), args.runs)
    misses = np.random.default_rng(0).random((steps, len(world.network.sites)))
    _, t_tally = cpu(lambda: tally(paths, misses), args.runs)
    twin.fetches()  # the paths of the run below, computed once as the command does
    _, t_run = cpu(lambda: twin.run("none"), 1)
    print(f"baseline: one run of the default day, no controller: {t_run:.2f} s CPU")
    print(
        f"origin-fetch paths of the day (once): {t_paths:.2f} s CPU, {t_paths / t_run:.3f} of a run"
    )
    print(f"tally of one run: {t_tally:.3f} s CPU, {t_tally / t_run:.4f} of a run")
    print(
        f"anyedge simulate (paths once, six tallies): {t_paths + 6 * t_tally:.2f} s CPU, "
        f"{(t_paths + 6 * t_tally) / t_run:.3f} of one run"
    )


if __name__ == "__main__":
    main()
