"""Benchmark: the digital twin's CPU per tick, with and without reusing a tick's
noiseless arithmetic (:mod:`anyedge.sim.tick`).

Two hours of the default world (300 sites) at 10 s ticks with three of the default
day's events squeezed in (a section down, most of a site's servers down, a country's
surge), under each controller: once with ``Twin(..., cache=False)``, where every tick
works everything out afresh as the engine did before the cache (the baseline), and once
as ``anyedge simulate`` runs it, in the same process, alternating, ``--rounds`` times.
Prints CPU (user+sys of this process) per tick for each, their medians and the ratio,
and checks that both give the same totals.  Both sides share the other savings of the
same change (a metro's day factor worked out once for all its users, requests and CPU
through the routing in one product), so the ratio is the cache's alone.

Run: ``python bench/bench_twin_tick.py [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from anyedge.model.worldgen import build_world
from anyedge.sim import MODES, Twin, parse_scenario

SCENARIO = """\
name: two hours of the default day
duration: 2h
tick: 10s
events:
  - {at: 20m, for: 40m, kind: section_down, section: IAD02}
  - {at: 60m, for: 30m, kind: servers_down, site: FRA, fraction: 0.9}
  - {at: 70m, for: 40m, kind: surge, country: BR, factor: 2.5}
"""


def cpu_per_tick(twin: Twin) -> tuple[float, list[float]]:
    """CPU seconds per tick over the three controllers' runs, and their totals."""
    t0 = time.process_time()
    totals = [twin.run(m).totals.failed for m in MODES]
    ticks = len(MODES) * round(twin.sc.duration / twin.sc.tick)
    return (time.process_time() - t0) / ticks, totals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    rounds = ap.parse_args().rounds
    world = build_world()
    sc = parse_scenario(SCENARIO, world)
    plain, cached = Twin(world, sc, cache=False), Twin(world, sc)  # set-up shared
    cached.run("none")  # warm: the first run also plays the origin fetches
    slow: list[float] = []
    fast: list[float] = []
    for r in range(rounds):
        a, ta = cpu_per_tick(plain)
        b, tb = cpu_per_tick(cached)
        assert ta == tb, "the cache changed the outcome"
        slow.append(a)
        fast.append(b)
        print(f"round {r + 1}: every tick afresh {a * 1e3:.3f} ms/tick, reused {b * 1e3:.3f}")
    s, f = statistics.median(slow), statistics.median(fast)
    print(
        f"median CPU per tick over {rounds} rounds: afresh {s * 1e3:.3f} ms, "
        f"reused {f * 1e3:.3f} ms; ratio {s / f:.2f}x"
    )


if __name__ == "__main__":
    main()
