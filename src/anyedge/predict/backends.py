"""Where scenarios are computed: this process, local worker processes, or a Ray cluster.

Every backend maps :meth:`Predictor.outcome` over scenarios and returns outcomes in the
scenarios' order; since an outcome depends only on the world and its scenario, they all
give the same atlas.

* ``serial`` — in this process (small worlds, tests).
* ``local`` — forked worker processes, one per core by default: each inherits the
  predictor (routing engine and base catchment) already built, so nothing large is
  sent to the workers; scenarios go out in chunks, outcomes come back small.
* ``ray`` — a Ray cluster (``ray.init(address=...)``) or Ray on this machine; the world
  goes to the object store once and each worker builds its predictor once.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..model.world import World
from ..routing import Mode
from .predictor import Outcome, Predictor
from .scenarios import Scenario

Progress = Callable[[int], None]

_SHARED: Predictor | None = None  # set in the parent before forking workers


def _chunks(items: Sequence[Scenario], size: int) -> Iterator[tuple[int, list[Scenario]]]:
    for i in range(0, len(items), size):
        yield i, list(items[i : i + size])


def _run_chunk(arg: tuple[int, list[Scenario]]) -> tuple[int, list[Outcome]]:
    start, chunk = arg
    assert _SHARED is not None, "workers must be forked after the predictor is set"
    return start, [_SHARED.outcome(sc) for sc in chunk]


def run_serial(
    p: Predictor, scenarios: Sequence[Scenario], progress: Progress | None = None
) -> list[Outcome]:
    out = []
    for sc in scenarios:
        out.append(p.outcome(sc))
        if progress:
            progress(1)
    return out


def run_local(
    p: Predictor,
    scenarios: Sequence[Scenario],
    jobs: int | None = None,
    progress: Progress | None = None,
    chunk: int = 16,
) -> list[Outcome]:
    """Forked worker processes (``jobs``, default: the cores this process may use)."""
    jobs = jobs or len(os.sched_getaffinity(0))
    if jobs <= 1 or len(scenarios) <= chunk:
        return run_serial(p, scenarios, progress)
    global _SHARED
    _SHARED = p
    results: list[Outcome | None] = [None] * len(scenarios)
    pool = mp.get_context("fork").Pool(jobs, initializer=_default_signals)
    try:
        for start, outs in pool.imap_unordered(_run_chunk, _chunks(scenarios, chunk)):
            results[start : start + len(outs)] = outs
            if progress:
                progress(len(outs))
        pool.close()  # the workers finish and exit on their own
        pool.join()
    finally:
        pool.terminate()  # on an error; after join(), nothing is left to end
        _SHARED = None
    return [r for r in results if r is not None]


def _default_signals() -> None:
    """In a forked worker: SIGTERM and SIGINT end it again.  A handler the parent set (a
    command's graceful shutdown, run in the same process before) would be inherited, and
    ``Pool.terminate`` could then never end a worker waiting on the task queue — it hung
    a test run once."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class _RayWorker:
    """One per CPU of the Ray cluster: builds its predictor once, then runs chunks."""

    def __init__(self, world: World, prefix: int, mode: Mode) -> None:
        self.p = Predictor(world, prefix, mode)

    def run(self, start: int, chunk: list[Scenario]) -> tuple[int, list[Outcome]]:
        return start, [self.p.outcome(sc) for sc in chunk]


def run_ray(
    world: World,
    prefix: int,
    mode: Mode,
    scenarios: Sequence[Scenario],
    address: str | None = None,
    progress: Progress | None = None,
    chunk: int = 32,
    cpus: int | None = None,
) -> list[Outcome]:
    """On a Ray cluster at ``address``, or (None) on a Ray started here for this run.

    Ray's old ``local_mode`` is gone (Ray 2.x raises on it); the local run is a real
    one-machine Ray cluster, started quietly on loopback with its files in a temporary
    directory, and stopped afterwards.
    """
    import logging
    import shutil
    import tempfile

    import ray

    temp_dir = None
    if not ray.is_initialized():
        if address is None:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # throw-away cluster only
            temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: socket paths
            ray.init(
                address="local",
                num_cpus=cpus or len(os.sched_getaffinity(0)),
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
                _temp_dir=temp_dir,
            )
        else:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        started = True
    else:
        started = False
    try:
        world_ref = ray.put(world)
        remote_worker: Any = ray.remote(num_cpus=1)(_RayWorker)
        resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        n = max(1, int(resources.get("CPU", 1)))
        workers: list[Any] = [remote_worker.remote(world_ref, prefix, mode) for _ in range(n)]
        pending: list[Any] = [
            workers[k % n].run.remote(start, part)
            for k, (start, part) in enumerate(_chunks(scenarios, chunk))
        ]
        results: list[Outcome | None] = [None] * len(scenarios)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            start, outs = ray.get(done[0])
            results[start : start + len(outs)] = outs
            if progress:
                progress(len(outs))
        for w in workers:
            ray.kill(w)
        return [r for r in results if r is not None]
    finally:
        if started:
            ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
