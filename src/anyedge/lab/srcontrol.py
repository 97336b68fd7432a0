"""Argo and Orpheus driving the backbone lab's SRv6 paths, with real probes and requests.

:class:`Controller` runs one prober thread in the landing site ``a`` of a
:class:`~anyedge.lab.backbone.BackboneLab`.  Every ``interval`` it sends two UDP probes
along every candidate path at once — from the path's client address, so that the
site's rule for that address puts it on the path's segment list there and the origin's
reply comes back on the path's return list — and waits up to ``timeout`` for the echoes.
The faster of each path's two round trips (a late one is the machine, not the path)
goes to :class:`~anyedge.backbone.Argo` (``measure``), and whether any came back to
:class:`~anyedge.backbone.Orpheus` (as a probe); then the controller decides: Argo's
choice among the paths Orpheus has not taken down, installed with pyroute2 as the site's
route to the origin when it changed (:meth:`BackboneLab.install`).

:class:`Client` sends the requests a site makes to the origin on a cache miss: through
the installed route (an unbound socket, so the route picks the path and its source),
one at a time, each waiting up to ``timeout``.  Its outcomes go to Orpheus too
(:meth:`Controller.outcome`): when errors and timeouts reach Orpheus's share of the
window, the path is down for every request at once, the next best path is installed
without waiting for the prober, and a request that timed out is tried once more over
that path — Orpheus's error self-healing.  ``orpheus=False`` gives Argo alone: it sees
latency, not loss, and a path that drops everything keeps its last estimate.

The same client can send along a path named by the caller (:meth:`Client.along`), which
is how a test measures an oracle that always knows the best path.
"""

from __future__ import annotations

import itertools
import math
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..adapters import netns
from ..backbone import Argo, Orpheus
from .backbone import ECHO_PORT, ORIGIN, PATHS, BackboneLab, SrPath

BY_NAME = {p.name: p for p in PATHS}


@dataclass
class Controller:
    lab: BackboneLab
    interval: float = 0.2
    timeout: float = 0.1
    orpheus_on: bool = True
    per_round: int = 2  # probes per path per round; the fastest counts
    clock: Callable[[], float] = time.monotonic
    argo: Argo = field(init=False)
    orpheus: Orpheus = field(init=False)
    events: list[tuple[int, float, str, str]] = field(default_factory=list)
    """Each change of path: (probe round, time, path, "probe" or "orpheus")."""
    probes: dict[str, int] = field(default_factory=dict)  # sent, per path
    rounds: int = 0  # probe rounds finished

    def __post_init__(self) -> None:
        names = [p.name for p in PATHS]
        # no hold and a new sample weighing half, so a path three times slower is left
        # after one or two probe rounds; the fastest of two probes and a margin of 4 ms
        # keep the machine's scheduling (late probes, a busier moment) from moving it
        self.argo = Argo(names, alpha=0.5, min_gain_ms=4.0, min_gain=0.05, hold_s=0.0)
        self.orpheus = Orpheus(
            window_s=self.interval, min_samples=2, error_share=0.5, heal_successes=3, hold_s=1.0
        )
        self.probes = dict.fromkeys(names, 0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread: threading.Thread | None = None
        self._socks: dict[str, socket.socket] = {}
        if self.lab.installed is not None:
            self.argo.current = self.lab.installed.name

    # ------------------------------------------------------------------ probing

    def start(self) -> None:
        with netns.entered(self.lab.ns("a")):
            for p in PATHS:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((p.source, 0))
                s.setblocking(False)
                self._socks[p.name] = s
        self._thread = threading.Thread(target=self._run, name="argo-prober", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for s in self._socks.values():
            s.close()

    def pause(self, paused: bool) -> None:
        """Stop (or resume) sending probes; the installed path stays."""
        if paused:
            self._paused.set()
        else:
            self._paused.clear()

    def _run(self) -> None:
        seq = itertools.count()
        next_round = self.clock()
        while not self._stop.is_set():
            if not self._paused.is_set():
                self._round(next(seq))
            next_round += self.interval
            self._stop.wait(max(0.0, next_round - self.clock()))

    def _round(self, seq: int) -> None:
        sent: dict[tuple[str, bytes], float] = {}  # (path, probe) -> when sent
        for name, s in self._socks.items():
            for k in range(self.per_round):
                probe = b"probe" + (seq * self.per_round + k).to_bytes(8, "big")
                sent[(name, probe)] = self.clock()
                s.sendto(probe, (ORIGIN, ECHO_PORT))
                self.probes[name] += 1
        rtt: dict[str, float] = {}  # the fastest of each path's probes
        end = max(sent.values()) + self.timeout
        by_fd = {s.fileno(): name for name, s in self._socks.items()}
        while sent and (left := end - self.clock()) > 0:
            ready, _, _ = select.select(list(by_fd), [], [], left)
            now = self.clock()
            for fd in ready:
                name = by_fd[fd]
                try:
                    data = self._socks[name].recv(64)
                except BlockingIOError:
                    continue
                t = sent.pop((name, data), None)
                if t is not None:
                    rtt[name] = min(rtt.get(name, math.inf), (now - t) * 1e3)
        now = self.clock()
        with self._lock:
            for name in self._socks:
                if name in rtt:
                    self.argo.measure(name, rtt[name], now)
                if self.orpheus_on:
                    self.orpheus.record(name, name in rtt, now, probe=True)
            self._decide(now, "probe")
            self.rounds += 1

    # ------------------------------------------------------------------ deciding

    def _decide(self, now: float, why: str) -> SrPath:
        down = self.orpheus.down() if self.orpheus_on else []
        choice = self.argo.choose(now, exclude=down)
        installed = self.lab.installed
        if choice is not None and (installed is None or choice != installed.name):
            self.lab.install(BY_NAME[str(choice)])
            self.events.append((self.rounds, now, str(choice), why))
        assert self.lab.installed is not None
        return self.lab.installed

    def outcome(self, path: str, ok: bool) -> str | None:
        """A request over ``path`` succeeded or not; returns the path to retry it on
        (Orpheus's choice) when it failed and Orpheus is on, else None."""
        if not self.orpheus_on:
            return None
        with self._lock:
            now = self.clock()
            self.orpheus.record(path, ok, now)
            if ok:
                return None
            best = self._decide(now, "orpheus")
            if best.name != path:
                return best.name
            live = self.argo.fresh(now)
            others = [p for p in live if p != path and self.orpheus.is_up(p)]
            return str(min(others, key=live.__getitem__)) if others else None

    @property
    def installed(self) -> str:
        assert self.lab.installed is not None
        return self.lab.installed.name


@dataclass
class Result:
    path: str  # the path the request was sent on first
    ok: bool
    rtt_ms: float | None
    retried: bool = False


class Client:
    """Requests from site ``a`` to the origin, one at a time (see the module doc)."""

    def __init__(self, lab: BackboneLab, controller: Controller, timeout: float = 0.1):
        self.controller = controller
        self.timeout = timeout
        self._seq = itertools.count()
        with netns.entered(lab.ns("a")):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("0.0.0.0", 0))
            self.along_socks = {}
            for p in PATHS:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((p.source, 0))
                self.along_socks[p.name] = s

    def close(self) -> None:
        self.sock.close()
        for s in self.along_socks.values():
            s.close()

    def _exchange(self, sock: socket.socket) -> float | None:
        tag = next(self._seq).to_bytes(8, "big")
        t0 = time.perf_counter()
        sock.sendto(b"req" + tag, (ORIGIN, ECHO_PORT))
        end = t0 + self.timeout
        while (left := end - time.perf_counter()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(64)
            except TimeoutError:
                break
            if data == b"req" + tag:
                return (time.perf_counter() - t0) * 1e3
        return None

    def request(self) -> Result:
        """One request through the installed route; retried once if Orpheus says so."""
        path = self.controller.installed
        rtt = self._exchange(self.sock)
        retry = self.controller.outcome(path, rtt is not None)
        if rtt is not None or retry is None:
            return Result(path, rtt is not None, rtt)
        rtt = self._exchange(self.along_socks[retry])
        return Result(path, rtt is not None, rtt, retried=True)

    def along(self, path: str) -> Result:
        """One request along ``path`` whatever is installed (the oracle's way)."""
        rtt = self._exchange(self.along_socks[path])
        return Result(path, rtt is not None, rtt)
