"""Benchmark: how one Traffic Manager decision, and the whole ``control plan`` command,
grow with the number of sites.

Synthetic networks of 300, 3,000 and 10,000 sites: sites scattered over a plane,
latency proportional to distance, four plans, a tenth of the sites above their maximum
and a few hundred forwards already in force (so reverts and hand-backs have work too).
Each size is measured on three networks (seeds 1-3: how many forwards a tenth of the
sites needs varies by a few per cent from one network to the next, which alone would
move a ratio between two sizes), and for each the median time of one decision is
taken, in wall-clock time and in this process's CPU time (on a shared machine the CPU
time is the steadier of the two); the mean over the three networks is printed per
size, with the growth from one size to the next beside n log n's; and the fastest of
the repeats in CPU time (other jobs only ever add time, so on a busy machine the
fastest is the closest to the decision's own work).  The first decision
on a latency table (it finds each overloaded site's nearest neighbours once) is shown
apart.  Beside it, in the same run, the same decision with Python's cyclic garbage
collector left running through it (as ``decide`` was before it paused the collector):
its CPU time and growth, the baseline of that change.  Where the machine can hold it,
the same decision by the dense core that kept a (sites, plans, sites) array of shares
and copied it per decision (the code before the sparse state, taken from git) is timed
on the first network, with the ratio.  Then
``anyedge control plan`` as a whole process on a 3,000-site observation file that gives
every latency pair.

Targets (issue 13): a decision at 3,000 sites under 20 ms; cost growing no faster
than sites × log(sites) for a fixed share of overloaded sites; ``control plan`` for
3,000 sites with every latency pair under 5 s whole.

Run: ``python bench/bench_control_scale.py [--quick]`` (``--quick``: 300 and 3,000
sites, no command).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import math
import resource
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

from anyedge.control import core as core_module
from anyedge.control.core import Config, Observation, State, apply, decide

ROOT = Path(__file__).resolve().parent.parent
DENSE_COMMIT = "a379304"  # main before the sparse state: the dense core


def network(n: int, seed: int = 1) -> tuple[Observation, State, Config]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 10_000, (n, 2))  # km
    lat = 2.0 + np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1)) / 100.0
    cap = rng.uniform(5_000, 50_000, n)
    u = rng.uniform(0.2, 0.7, n)
    hot = rng.choice(n, n // 10, replace=False)
    u[hot] = rng.uniform(0.92, 1.3, hot.size)
    mix = rng.dirichlet(np.ones(4), n)
    cpu = (cap * u)[:, None] * mix
    cfg = Config(
        maximum=np.full(n, 0.9),
        target=np.full(n, 0.85),
        acceptable=np.full(n, 0.75),
        latency_ms=lat,
        max_move_share=1.0,
    )
    obs = Observation(utilisation=u, cpu=cpu, age=np.zeros(n), capacity=cap)
    # a few hundred forwards in force, from calm sites to their neighbours
    state = State.empty(n, 4)
    first = decide(obs, state, cfg, 0.0)
    state = apply(state, first, 0.0)
    return obs, state, cfg


def timed(fn: Any, repeat: int) -> tuple[float, float]:
    """Median wall-clock and median CPU seconds of ``repeat`` calls."""
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    return statistics.median(wall), statistics.median(cpu)


def dense_core() -> ModuleType | None:
    """The dense core, from git, as a module of its own (None if git cannot give it)."""
    tmp = Path(tempfile.mkdtemp(prefix="anyedge-dense-"))
    pkg = tmp / "anyedge_dense"
    pkg.mkdir()
    for name in ("core", "split", "reasons"):
        r = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{DENSE_COMMIT}:src/anyedge/control/{name}.py"],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            return None
        (pkg / f"{name}.py").write_text(r.stdout)
    (pkg / "__init__.py").write_text("")
    spec = importlib.util.spec_from_file_location(
        "anyedge_dense", pkg / "__init__.py", submodule_search_locations=[str(pkg)]
    )
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["anyedge_dense"] = mod
    spec.loader.exec_module(mod)
    core = importlib.import_module("anyedge_dense.core")
    shutil.rmtree(tmp)  # the modules are loaded: nothing is left behind in /tmp
    return core


SEEDS = (1, 2, 3)


def one_network(n: int, seed: int, dense: ModuleType | None) -> tuple[float, ...]:
    """Decisions on one network: median (wall, CPU, CPU with the collector on) and
    fastest (CPU, CPU with the collector on) seconds; prints a line."""
    obs, state, cfg = network(n, seed)
    # a copy of the latency table: nothing is known of its neighbours yet
    cfg = replace(cfg, latency_ms=cfg.latency_ms.copy())
    t0 = time.perf_counter()
    decide(obs, state, cfg, 1_000.0)
    first = time.perf_counter() - t0
    repeat = 9 if n <= 3_000 else 5
    paused = core_module._collector_paused
    on: list[float] = []
    wall_l: list[float] = []
    cpu_l: list[float] = []
    # alternating, so that both see the same load; each timed decision follows an
    # untimed one of its own kind, so that it pays for what that one left to collect
    for _ in range(repeat):
        decide(obs, state, cfg, 1_000.0)
        w, c = timed(lambda: decide(obs, state, cfg, 1_000.0), 1)
        wall_l.append(w)
        cpu_l.append(c)
        core_module._collector_paused = contextlib.nullcontext  # type: ignore[assignment]
        try:
            decide(obs, state, cfg, 1_000.0)
            on.append(timed(lambda: decide(obs, state, cfg, 1_000.0), 1)[1])
        finally:
            core_module._collector_paused = paused
    wall, cpu, cpu_on = statistics.median(wall_l), statistics.median(cpu_l), statistics.median(on)
    line = (
        f"{n:>6,} sites (seed {seed}), {len(state.forward):>4} forwards in force: decision "
        f"{1e3 * wall:6.1f} ms, CPU {1e3 * cpu:6.1f} ms, fastest {1e3 * min(cpu_l):6.1f} ms "
        f"(first {1e3 * first:6.1f} ms); collector on: CPU {1e3 * cpu_on:6.1f} ms, "
        f"fastest {1e3 * min(on):6.1f} ms"
    )
    if dense is not None and n <= 3_000 and seed == SEEDS[0]:
        dstate = dense.State(state.shares(), state.shift, state.withdrawn, state.last_change)
        dcfg = dense.Config(
            maximum=cfg.maximum,
            target=cfg.target,
            acceptable=cfg.acceptable,
            latency_ms=cfg.latency_ms,
            max_move_share=1.0,
        )
        td = timed(lambda: dense.decide(obs, dstate, dcfg, 1_000.0), 3)[0]
        line += f"; dense core {1e3 * td:6.1f} ms, x{td / wall:.1f}"
    print(line, flush=True)
    return wall, cpu, cpu_on, min(cpu_l), min(on)


def one_size(n: int, dense: ModuleType | None) -> tuple[float, ...]:
    """Means over the networks: (wall, CPU, CPU with the collector on, fastest CPU,
    fastest CPU with the collector on) seconds."""
    got = [one_network(n, seed, dense) for seed in SEEDS]
    wall, cpu, on, fast, fast_on = (statistics.mean(g[k] for g in got) for k in range(5))
    print(
        f"{n:>6,} sites: decision {1e3 * wall:6.1f} ms, CPU {1e3 * cpu:6.1f} ms, fastest "
        f"{1e3 * fast:6.1f} ms (collector on: {1e3 * on:6.1f} ms, fastest {1e3 * fast_on:6.1f} ms)",
        flush=True,
    )
    return wall, cpu, on, fast, fast_on


def plan_file(n: int, path: Path) -> None:
    obs, _, cfg = network(n)
    names = [f"S{i:05d}" for i in range(n)]
    plans = ["free", "pro", "business", "enterprise"]
    lat = cfg.latency_ms
    doc = {
        "now": 1_000.0,
        "plans": plans,
        "sites": [
            {
                "site": names[i],
                "utilisation": float(obs.utilisation[i]),
                "cpu": {p: float(obs.cpu[i, k]) for k, p in enumerate(plans)},
                "capacity": float(obs.site_capacity()[i]),
            }
            for i in range(n)
        ],
        "latency_ms": {
            names[i]: {names[j]: round(float(lat[i, j]), 2) for j in range(i + 1, n)}
            for i in range(n - 1)
        },
        "settings": {"max_move_share": 1.0},
    }
    path.write_text(json.dumps(doc, separators=(",", ":")))


def command(n: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "obs.json"
        plan_file(n, f)
        pairs = n * (n - 1) // 2
        size = f.stat().st_size / 1e6
        argv = [sys.executable, "-m", "anyedge", "control", "plan", "--input", str(f), "--json"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, text=True)
        took = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        if r.returncode != 0:
            print(r.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"control plan failed with status {r.returncode}")
        moves = sum(a["kind"] == "forward" for a in json.loads(r.stdout)["actions"])
        print(
            f"anyedge control plan, {n:,} sites, {pairs:,} latency pairs ({size:.0f} MB): "
            f"{took:.2f} s whole (CPU {cpu:.2f} s), {moves} forwards",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="300 and 3,000 sites, no command")
    args = ap.parse_args()
    dense = dense_core()
    if dense is None:
        print("(no git history here: the dense core's column is left out)")
    sizes = [300, 3_000] if args.quick else [300, 3_000, 10_000]
    got = {n: one_size(n, dense) for n in sizes}
    for a, b in itertools.pairwise(sizes):
        nlogn = b * math.log(b) / (a * math.log(a))
        (wa, ca, oa, fa, foa), (wb, cb, ob, fb, fob) = got[a], got[b]
        print(
            f"{a:,} -> {b:,} sites: decision x{wb / wa:.2f}, CPU x{cb / ca:.2f}, fastest "
            f"x{fb / fa:.2f} (collector on: CPU x{ob / oa:.2f}, fastest x{fob / foa:.2f}; "
            f"sites x{b / a:.2f}, n log n x{nlogn:.2f})"
        )
    if not args.quick:
        command(3_000)


if __name__ == "__main__":
    main()
