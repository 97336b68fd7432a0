"""Benchmark: how a Traffic Manager decision that withdraws grows with the sites,
beside the core that read every withdrawing site's whole row.

A site that cannot forward withdraws a prefix when the predictor's atlas shows that
its users land where there is room.  The core used to read the atlas's dense row of
the site (as long as the network) several times, count each prefix's announcements
over all sites, and recompute every receiver's room after each withdrawal: work of
the order of sites per withdrawing site.  It now reads a row's non-zero entries once
per atlas (``anyedge.control.landing``), keeps the announcement counts, and recomputes
the room of only the receivers whose load changed.

Synthetic networks of 300, 1,000 and 3,000 sites (as in bench_control_scale.py: sites
on a plane, latency by distance, four plans), a quarter of the sites above their
maximum, half of all sites unable to forward, two prefixes, and an atlas that sends a
site's users to its one to four nearest others.  Per size, three networks (seeds
1-3); per network the median CPU time of a decision (this process's CPU time: the
steadier figure on a shared machine) by the core here and by the core of
``BASE_COMMIT`` taken from git, alternating, on the same inputs; the two cores' actions
are checked to be the same, float for float.  Then the growth from one size to the
next beside n log n's.

Run: ``python bench/bench_control_withdraw.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from anyedge.control import core

ROOT = Path(__file__).resolve().parent.parent
BASE_COMMIT = "a28c54d"  # main before the withdrawal read only where users land
MODULES = ("core", "forwards", "neighbours", "reasons", "split")
SEEDS = (1, 2, 3)
SIZES = (300, 1_000, 3_000)


def base_core() -> ModuleType | None:
    """The control package's core at BASE_COMMIT, as a module of its own (None if git
    cannot give it)."""
    tmp = Path(tempfile.mkdtemp(prefix="anyedge-base-"))
    pkg = tmp / "anyedge_base"
    pkg.mkdir()
    try:
        for name in MODULES:
            r = subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{BASE_COMMIT}:src/anyedge/control/{name}.py"],
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                return None
            (pkg / f"{name}.py").write_text(r.stdout)
        (pkg / "__init__.py").write_text("")
        spec = importlib.util.spec_from_file_location(
            "anyedge_base", pkg / "__init__.py", submodule_search_locations=[str(pkg)]
        )
        assert spec is not None
        assert spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["anyedge_base"] = mod
        spec.loader.exec_module(mod)
        return importlib.import_module("anyedge_base.core")
    finally:
        shutil.rmtree(tmp)  # loaded: nothing is left behind in /tmp


def network(m: ModuleType, n: int, seed: int) -> tuple[Any, Any, Any, Any]:
    """(observation, state, config, failover) built with module ``m``'s classes."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 10_000, (n, 2))  # km
    lat = 2.0 + np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1)) / 100.0
    cap = rng.uniform(5_000, 50_000, n)
    u = rng.uniform(0.2, 0.7, n)
    hot = rng.choice(n, n // 4, replace=False)
    u[hot] = rng.uniform(0.92, 1.3, hot.size)
    cpu = (cap * u)[:, None] * rng.dirichlet(np.ones(4), n)
    share = np.zeros((n, n))
    others = lat + np.diag(np.full(n, np.inf))
    for s in range(n):
        k = int(rng.integers(1, 5))
        share[s, np.argpartition(others[s], k)[:k]] = rng.dirichlet(np.ones(k))
    cfg = m.Config(
        maximum=np.full(n, 0.9),
        target=np.full(n, 0.85),
        acceptable=np.full(n, 0.75),
        latency_ms=lat,
        max_move_share=1.0,
        can_forward=rng.random(n) < 0.5,
        announced=np.ones((2, n), dtype=np.bool_),
    )
    obs = m.Observation(utilisation=u, cpu=cpu, age=np.zeros(n), capacity=cap)
    state = replace(m.State.empty(n, 4), withdrawn=np.zeros((2, n), dtype=np.bool_))
    return obs, state, cfg, m.Failover(share)


def cpu_time(fn: Any) -> float:
    c0 = time.process_time()
    fn()
    return time.process_time() - c0


def one_network(n: int, seed: int, base: ModuleType | None) -> tuple[float, float | None]:
    """Median CPU seconds of a decision here and by the base core; prints a line."""
    obs, state, cfg, fo = network(core, n, seed)
    plan = core.decide(obs, state, cfg, 1_000.0, fo)  # the first: neighbour lists
    here: list[float] = []
    then: list[float] = []
    b_args: tuple[Any, ...] = ()
    if base is not None:
        b_args = network(base, n, seed)
        b_plan = base.decide(*b_args[:3], 1_000.0, b_args[3])
        if repr(b_plan.actions) != repr(plan.actions):
            raise SystemExit(f"{n} sites, seed {seed}: the two cores decided differently")
    for _ in range(7 if n <= 1_000 else 5):  # alternating: both see the same load
        here.append(cpu_time(lambda: core.decide(obs, state, cfg, 1_000.0, fo)))
        if base is not None:
            then.append(cpu_time(lambda: base.decide(*b_args[:3], 1_000.0, b_args[3])))
    kinds = {k: sum(a.kind == k for a in plan.actions) for k in ("withdraw", "forward", "hold")}
    h = statistics.median(here)
    t = statistics.median(then) if then else None
    line = (
        f"{n:>6,} sites (seed {seed}), {kinds['withdraw']} withdrawals, {kinds['forward']} "
        f"forwards, {kinds['hold']} holds: decision CPU {1e3 * h:6.1f} ms"
    )
    if t is not None:
        line += f"; base core {1e3 * t:6.1f} ms, x{t / h:.2f}; the same actions"
    print(line, flush=True)
    return h, t


def main() -> None:
    base = base_core()
    if base is None:
        print(f"(git cannot give {BASE_COMMIT} here: the base core's column is left out)")
    got: dict[int, tuple[float, float | None]] = {}
    for n in SIZES:
        runs = [one_network(n, seed, base) for seed in SEEDS]
        h = statistics.mean(r[0] for r in runs)
        ts = [r[1] for r in runs if r[1] is not None]
        t = statistics.mean(ts) if ts else None
        got[n] = (h, t)
        extra = f", base core {1e3 * t:6.1f} ms (x{t / h:.2f})" if t is not None else ""
        print(f"{n:>6,} sites: decision CPU {1e3 * h:6.1f} ms{extra}", flush=True)
    for a, b in itertools.pairwise(SIZES):
        nlogn = b * math.log(b) / (a * math.log(a))
        (ha, ta), (hb, tb) = got[a], got[b]
        then = f", base core x{tb / ta:.2f}" if ta and tb else ""
        print(
            f"{a:,} -> {b:,} sites: decision CPU x{hb / ha:.2f}{then} "
            f"(sites x{b / a:.2f}, n log n x{nlogn:.2f})"
        )


if __name__ == "__main__":
    main()
