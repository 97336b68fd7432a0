"""Benchmark: how long ``anyedge`` commands take as whole processes, start-up included.

The command line imports each subcommand, and what a subcommand needs, when it runs
(issue 13): ``anyedge --help`` loads no subcommand, and ``catchment --as-rel`` loads
the routing engine and the as-rel reader but not the world builder (scipy) or the
topology schema (pydantic).  This script times, each as a fresh ``python`` process
(median of several runs):

* ``anyedge --help``;
* ``anyedge catchment --as-rel FILE --origin ...`` on a generated CAIDA-like graph of
  20,000 ASes (as bench/bench_routing.py makes them), with five origins;

and the same two commands with every subcommand module, and what those modules imported
at module level before, imported first, as the command line did, as the baseline.  The
targets: ``--help`` under 0.3 s and the catchment under 1 s.

Run: ``python bench/bench_cli.py`` (``--ases N``, ``--runs N``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from anyedge.cli.main import COMMANDS
from anyedge.model.files import write_as_rel
from anyedge.model.worldgen.asgraph import caida_like

SRC = Path(__file__).resolve().parent.parent / "src"
LAZY = "from anyedge.cli.main import run; run()"
# the baseline: every subcommand module, and what they imported at module level before
# they loaded it per command (the world builder, the predictor, the twin, rich's tables)
EAGER_MODULES = [
    *(m for m, _ in COMMANDS.values()),
    "anyedge.model.files.topology",
    "anyedge.model.worldgen",
    "anyedge.model.summary",
    "anyedge.predict",
    "anyedge.sim",
    "anyedge.routing",
    "rich.progress",
    "rich.table",
]
EAGER = (
    "import importlib; from anyedge.cli.main import run; "
    f"[importlib.import_module(m) for m in {EAGER_MODULES!r}]; run()"
)


def timed(code: str, args: list[str], runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``python -c CODE ARGS`` (which must exit 0); on a
    shared machine the CPU time is the steadier of the two."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    times, cpus = [], []
    for _ in range(runs):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", code, *args],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        times.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    return statistics.median(times), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ases", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    assert len(COMMANDS) >= 7

    g = caida_like(args.ases, seed=1)
    rng = np.random.default_rng(7)
    origins = rng.choice(g.asn[g.asn.size // 2 :], 5, replace=False).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "graph.as-rel"
        write_as_rel(path, g.internet())
        print(f"graph: {g.asn.size:,} ASes, {len(g.p2c):,} p2c and {len(g.p2p):,} p2p links")
        catch = ["catchment", "--as-rel", str(path)]
        for o in origins:
            catch += ["--origin", str(o)]
        cases = [
            ("anyedge --help", ["--help"], 0.3),
            (f"anyedge {' '.join(catch[:2])} ...", catch, 1.0),
        ]
        for name, argv, target in cases:
            eager, eager_cpu = timed(EAGER, argv, args.runs)
            lazy, lazy_cpu = timed(LAZY, argv, args.runs)
            verdict = "met" if lazy < target else "MISSED"
            print(
                f"{name}: {lazy:.3f} s wall, {lazy_cpu:.3f} s CPU (every module first: "
                f"{eager:.3f} s wall, {eager_cpu:.3f} s CPU); ratio {eager / lazy:.1f}x wall, "
                f"{eager_cpu / lazy_cpu:.1f}x CPU; target {target} s wall {verdict}"
            )


if __name__ == "__main__":
    main()
