"""Benchmark: build the default world, save it, load it back.

Prints the time of each step and two ratios against baselines run in the same process:

* site selection by lazy greedy (CELF) against the plain greedy that recomputes every
  gain every round — the same sites, chosen faster;
* loading the saved world (YAML plus as-rel and CSV tables) against loading the same
  world written as one inline YAML file.

Run: ``python bench/bench_world.py`` (add ``--sites N`` to change the size).
The target for the 300-site world is a build under 10 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from anyedge.model.files import load_world, parse_world, save_world
from anyedge.model.files.topology import dump_yaml, world_to_dict
from anyedge.model.geo import LatencyModel
from anyedge.model.worldgen import WorldOptions, build_world
from anyedge.model.worldgen.geography import load_airports, load_cities
from anyedge.model.worldgen.sites import candidate_rows, choose_sites, choose_sites_naive

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=300)
    args = ap.parse_args()
    opts = WorldOptions(sites=args.sites, mcp=min(30, args.sites))

    world, t_cold = timed(lambda: build_world(opts))
    _, t_warm = timed(lambda: build_world(opts))
    print(f"build world ({args.sites} sites), first in process: {t_cold:6.2f} s")
    print(f"build world again (city data cached):     {t_warm:6.2f} s")

    cities = load_cities(opts.min_city_population)
    cand, _ = candidate_rows(cities, load_airports(), opts.min_site_population)
    lat = LatencyModel()
    lazy, t_lazy = timed(lambda: choose_sites(cities, cand, args.sites, lat, opts.cap_ms))
    naive, t_naive = timed(lambda: choose_sites_naive(cities, cand, args.sites, lat, opts.cap_ms))
    same = bool(np.array_equal(lazy, naive))
    print(f"site selection, lazy greedy:              {t_lazy:6.2f} s")
    print(f"site selection, plain greedy (baseline):  {t_naive:6.2f} s")
    print(f"  ratio plain / lazy: {t_naive / t_lazy:5.1f}x   same sites: {same}")

    with tempfile.TemporaryDirectory() as d:
        _, t_save = timed(lambda: save_world(world, d))
        loaded, t_load = timed(lambda: load_world(d))
        inline = Path(d) / "inline.yaml"
        inline.write_text(dump_yaml(world_to_dict(world, inline=True)), encoding="utf-8")
        loaded_inline, t_inline = timed(lambda: parse_world(inline.read_text(), inline))
    print(f"save world (yaml + as-rel + csv):         {t_save:6.2f} s")
    print(f"load world (yaml + as-rel + csv):         {t_load:6.2f} s")
    print(f"load world, all inline yaml (baseline):   {t_inline:6.2f} s")
    print(f"  ratio inline / tables: {t_inline / t_load:5.1f}x")
    print(f"  round trips equal: {loaded == world and loaded_inline == world}")


if __name__ == "__main__":
    main()
