"""Running the relay: one process per worker, all on the same listening ports.

Each worker is a process with its own :class:`~.io.TurnService` (its own core, its own
share of this site's relay ports, its metrics on ``metrics.port + worker``), its
listeners opened with ``SO_REUSEPORT`` so the kernel spreads clients over the workers
by their 5-tuple — which keeps each client's 5-tuple, and so its allocation, on one
worker, as the allocation needs.  A peer's datagram goes straight to the worker that
owns the relay port.  uvloop drives the event loop when it is installed.

SIGUSR1 starts draining (new Allocates get 300 Try Alternate, ``drain:`` in the
configuration) and SIGUSR2 stops it; SIGHUP makes each worker read the configuration
again for its users, REST secrets and TLS certificates (``TurnService.reload``); the
supervisor passes all three on to its workers.
SIGTERM or SIGINT ends every worker cleanly (sockets closed, allocations dropped); a
worker that dies ends the others too, since the kernel would hand its clients to workers
that do not hold their allocations.  The per-user allocation quota is counted across
the workers (:class:`~.ledger.SharedLedger`, shared memory made before the fork); the
other limits (bandwidth, the allocation cap, rate limits) are each worker's own.

Only one instance may serve an address: a second ``turn serve`` (or ``lab turn``) on the
same listener would share it through ``SO_REUSEPORT`` and the kernel would hash clients
between processes that do not share allocations.  Before any worker starts, the
supervisor claims every listener by binding an abstract Unix socket named after it
(``anyedge-turn udp 203.0.113.7 3478``; abstract names live per network namespace, as
the addresses do, and vanish with the process); a name already bound means another
instance serves there, and this one refuses to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

from .config import ServiceConfig
from .fastpath import TurnFast, open_fast_path
from .io import TurnService
from .ledger import SharedLedger
from .metrics import serve_metrics

log = logging.getLogger("anyedge.turn")

FORWARDED = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)
"""Signals the supervisor passes on to every worker: SIGUSR1 drains, SIGUSR2 stops it,
SIGHUP re-reads users, REST secrets and certificates."""


def _event_loop_policy() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def _run(
    config: ServiceConfig,
    worker: int,
    workers: int,
    ready: Callable[[], None],
    ledger: SharedLedger | None = None,
    fast: TurnFast | None = None,
) -> None:
    service = TurnService(config, worker, workers, ledger, fast)
    loop = asyncio.get_running_loop()
    # before the listeners open: a signal sent once the relay answers is never missed
    loop.add_signal_handler(signal.SIGUSR1, service.set_draining, True)
    loop.add_signal_handler(signal.SIGUSR2, service.set_draining, False)
    loop.add_signal_handler(signal.SIGHUP, service.reload)
    await service.start()
    m = config.doc.metrics
    if m.port is not None:
        core = service.core
        serve_metrics(
            core.counters,
            worker,
            m.address,
            m.port + worker,
            service,
            lambda: core.sessions(time.time()),
        )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready()
    try:
        await stop.wait()
    finally:
        await service.close()


def run_worker(
    config: ServiceConfig,
    worker: int,
    workers: int,
    ready: Callable[[], None],
    ledger: SharedLedger | None = None,
    fast: TurnFast | None = None,
) -> None:
    loop_kind = _event_loop_policy()
    log.info(
        '{"event": "worker", "worker": %d, "pid": %d, "loop": "%s"}', worker, os.getpid(), loop_kind
    )
    asyncio.run(_run(config, worker, workers, ready, ledger, fast))


def _one_of_many(
    config: ServiceConfig,
    worker: int,
    workers: int,
    barrier: threading.Barrier,
    ledger: SharedLedger,
    fast: TurnFast | None,
) -> None:
    """A worker process: :func:`run_worker`, meeting the others and the parent at
    ``barrier`` once its listeners are open.  A worker that cannot open them (a port
    taken, a certificate that does not load) says why on stderr and breaks the barrier,
    so that nobody waits for it; every worker then exits with status 1, no traceback."""

    def ready() -> None:
        barrier.wait()

    try:
        run_worker(config, worker, workers, ready, ledger, fast)
    except threading.BrokenBarrierError:  # another worker could not start
        sys.exit(1)
    except OSError as e:  # ssl.SSLError is one too
        # say why before the parent, woken by the broken barrier, ends this process
        print(f"anyedge turn: worker {worker} cannot serve: {e}", file=sys.stderr, flush=True)
        barrier.abort()
        sys.exit(1)
    except BaseException:
        barrier.abort()
        raise


def claim_listeners(config: ServiceConfig) -> list[socket.socket]:
    """One abstract Unix socket per listener, held while this instance serves (module
    docstring); OSError(EADDRINUSE) naming the listener if another instance holds it."""
    claims: list[socket.socket] = []
    try:
        listen = [(x.transport, x.address, x.port) for x in config.doc.listen]
        listen += [("udp", a, p) for a, p in config.stun_listeners()]
        for transport, address, port in listen:
            name = f"anyedge-turn {transport} {address} {port}"
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            claims.append(s)
            try:
                s.bind("\0" + name)
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
                where = f"{transport} {address} port {port}"
                raise OSError(
                    errno.EADDRINUSE, f"another anyedge turn instance serves {where}"
                ) from None
    except BaseException:
        for s in claims:
            s.close()
        raise
    return claims


def serve(config: ServiceConfig, on_ready: Callable[[], None] = lambda: None) -> int:
    """Run the relay until SIGTERM/SIGINT; the exit status."""
    claims = claim_listeners(config)
    fp = config.doc.fast_path
    # loaded and attached once, before the workers fork: they share its maps
    fast = open_fast_path(fp.interfaces, fp.mode) if fp is not None else None
    try:
        return _serve(config, on_ready, fast)
    finally:
        if fast is not None:
            fast.close()  # detaches the program: the kernel relays nothing more
        for s in claims:
            s.close()


def _serve(config: ServiceConfig, on_ready: Callable[[], None], fast: TurnFast | None) -> int:
    workers = config.workers
    if workers == 1:
        run_worker(config, 0, 1, on_ready, None, fast)
        return 0
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(workers + 1)
    ledger = SharedLedger()
    procs = [
        ctx.Process(
            target=_one_of_many, args=(config, i, workers, barrier, ledger, fast), daemon=True
        )
        for i in range(workers)
    ]
    stopping = False
    parent = os.getpid()

    def stop(sig: int | None = None, *_: object) -> None:
        if os.getpid() != parent:
            # a worker inherits this handler until its event loop sets its own: the
            # signal ends it as if it had none (and no traceback from is_alive below)
            assert sig is not None
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
            return
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.pid is not None and p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)

    def forward(sig: int, *_: object) -> None:
        if os.getpid() != parent:
            return  # a worker whose event loop has not taken the signal over yet
        for p in procs:
            if p.pid is not None and p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, sig)

    # before the first fork: a SIGTERM now must still reach every worker
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for sig in FORWARDED:
        signal.signal(sig, forward)
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=30)
    except threading.BrokenBarrierError:
        stop()
        for p in procs:
            p.join(5)
        print("anyedge turn: the workers did not all start", file=sys.stderr)
        return 1
    on_ready()
    # the workers share their listening ports: if one dies, the kernel hands its
    # clients to the others, who do not hold their allocations; end them all instead
    while any(p.is_alive() for p in procs):
        for p in procs:
            p.join(0.2)
            if not stopping and p.exitcode is not None:
                print(f"anyedge turn: worker {p.pid} exited with {p.exitcode}", file=sys.stderr)
                stop()
                for q in procs:
                    q.join(5)
                return 1
    return 0
