"""Benchmark: the failover atlas of the default 300-site world.

Builds the whole atlas — every site alone, with each of its 5 nearest, with all of them
at once, and each section of the multi-colo sites — on the local cores, and prints its
time beside the baseline of recomputing every scenario from scratch (a fresh catchment
per scenario, one process).  The baseline is timed on a sample of scenarios spread over
the atlas and scaled to the whole; ``--full-baseline`` times all of them.

Run: ``python bench/bench_predict.py``.  The target: the atlas in under 60 s here.
"""

from __future__ import annotations

import argparse
import time

from anyedge.model.worldgen import build_world
from anyedge.predict import Predictor, atlas_scenarios, build_atlas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--full-baseline", action="store_true")
    args = ap.parse_args()

    world = build_world()
    t0 = time.perf_counter()
    p = Predictor(world)
    atlas = build_atlas(world, k=args.k, jobs=args.jobs, predictor=p)
    t_atlas = time.perf_counter() - t0
    n = len(atlas.scenarios)
    print(
        f"atlas: {n} scenarios in {t_atlas:.1f} s "
        f"({1000 * t_atlas / n:.1f} ms each, incremental, local cores)"
    )

    scenarios = [s for s in atlas_scenarios(world, args.k) if s.failed]
    sample = scenarios if args.full_baseline else scenarios[:: max(1, len(scenarios) // 150)]
    t0 = time.perf_counter()
    for sc in sample:
        p.router.catchment(p.announcement.withdraw(*sc.failed))
    per = (time.perf_counter() - t0) / len(sample)
    t_scratch = per * len(scenarios)
    how = "all" if args.full_baseline else f"{len(sample)} sampled, scaled"
    print(
        f"from scratch (baseline, one process, {how}): {t_scratch:.1f} s ({1000 * per:.1f} ms each)"
    )
    print(f"  ratio scratch / atlas: {t_scratch / t_atlas:.1f}x")


if __name__ == "__main__":
    main()
