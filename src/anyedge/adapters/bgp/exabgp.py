"""ExaBGP as a site's BGP speaker.

One ``exabgp`` per site (``python -m exabgp exabgp.conf``, in the foreground), started
inside the site's namespace with its settings in environment variables
(:func:`exabgp_env`): run as root without dropping privileges (its helper process must
open the FIFO below), log to stdout (the spawn log ``exabgp.out``), no CLI named pipes
(they would be looked up in ``/run`` and shared by every instance), acknowledgements on,
and ``tcp.bind`` on the site's own link addresses, port 179.  Each neighbour is
``passive``: ExaBGP only accepts the router's connection, which the router retries every
``connect_retry`` seconds.  (Connecting actively too, ExaBGP's own retries back off —
1, 2, 3, … up to 60 s after consecutive failures — and once left a CI run's session
down for a minute.)

The configuration (:func:`render_exabgp_conf`) holds one ``neighbor`` block per
neighbour (router id, local address, local and peer AS, ``hold-time``; ExaBGP sends
keepalives every third of it) with ``api { processes [ ctl ]; neighbor-changes; }``, and
the process ``ctl``: :mod:`.exabgp_pipe`, which copies the lines written into the FIFO
``ctl.fifo`` to its stdout — ExaBGP reads API commands from there — and folds what
ExaBGP writes back (acknowledgements, neighbour up/down) into ``ctl.state.json``.
ExaBGP keeps no routes it receives (no ``receive`` section): nothing is learned, nothing
is re-exported.

In a dual-stack lab each neighbour also has the ``ipv6 unicast`` family, and an IPv6
route is announced neighbour by neighbour with the site's IPv6 address on that link as
its next hop (``next-hop self`` would be the IPv4 session's address).

:meth:`ExaBgp.apply` writes ``announce route P next-hop self origin igp as-path [ … ]``
and ``withdraw route P`` lines into the FIFO and waits for ExaBGP to acknowledge each
one.  ExaBGP sends the AS path it is given as is (it only supplies its own ASN when no
path is given), so the path holds the ASN ``1 + prepend`` times.  No MED is sent.  Where
a session has a prepend, MED or communities of its own, each route is announced
neighbour by neighbour (``neighbor A announce route … med M community [ … ]``).
Announced routes stay in ExaBGP's outgoing RIB and are sent again whenever a session
comes up.  The FIFO is opened without blocking and every wait has a deadline: if ExaBGP
or its helper is gone, :class:`~.base.SpeakerError` is raised instead of hanging.
:meth:`ExaBgp.established` counts the neighbours the helper last heard "up" about.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import netns
from .base import Neighbor, Route, SpeakerConfig, SpeakerError, by_prefix

PIPE_MODULE = "anyedge.adapters.bgp.exabgp_pipe"
PROCESS = "ctl"
TIMEOUT = 5.0  # seconds to wait for the helper to take commands and ExaBGP to ack them
# seconds for ExaBGP (a Python program) to start its API process: about a second on an
# idle machine, ten and more on a busy one (seen with the test suite on every core)
START_TIMEOUT = 30.0


def render_exabgp_conf(
    cfg: SpeakerConfig, fifo: Path, state: Path, python: str = sys.executable
) -> str:
    """exabgp.conf for a site speaker (routes are announced through the API)."""
    for p in (python, fifo, state):
        if any(c.isspace() for c in str(p)):
            raise SpeakerError(f"{cfg.node}: ExaBGP cannot run a path with blanks: {p}")
    lines = [
        f"process {PROCESS} {{",
        f"  run {python} -m {PIPE_MODULE} {fifo} {state};",
        "  encoder text;",
        "}",
    ]
    for n in cfg.neighbors:
        lines += [
            "",
            f"neighbor {n.address} {{",
            f'  description "{n.interface}";',
            f"  router-id {cfg.router_id};",
            f"  local-address {n.local_address};",
            f"  local-as {cfg.asn};",
            f"  peer-as {n.asn};",
            f"  hold-time {cfg.timers.hold};",
            # the router connects (every second until it is up); ExaBGP only listens, so
            # no connection collision and no back-off between its own attempts
            "  passive true;",
            "  family {",
            "    ipv4 unicast;",
            *(["    ipv6 unicast;"] if cfg.ipv6 else []),
            "  }",
            "  api {",
            f"    processes [ {PROCESS} ];",
            "    neighbor-changes;",
            "  }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def exabgp_env(cfg: SpeakerConfig) -> dict[str, str]:
    """ExaBGP's settings for a site speaker, as environment variables."""
    return {
        "exabgp_daemon_user": "root",
        "exabgp_daemon_drop": "false",
        "exabgp_daemon_daemonize": "false",
        "exabgp_daemon_pid": str(cfg.workdir / "exabgp.pid"),
        "exabgp_log_destination": "stdout",
        "exabgp_log_level": "INFO",
        "exabgp_api_cli": "false",
        "exabgp_api_ack": "true",
        "exabgp_api_encoder": "text",
        "exabgp_tcp_bind": " ".join(sorted({n.local_address for n in cfg.neighbors})),
        "exabgp_tcp_port": "179",
        "exabgp_tcp_once": "false",
    }


def announce_line(asn: int, route: Route, neighbor: Neighbor | None = None) -> str:
    """The API line announcing ``route`` (to ``neighbor`` alone, with its session's own
    prepend, if given)."""
    extra = neighbor.prepend if neighbor is not None else 0
    path = " ".join([str(asn)] * (1 + route.prepend + extra))
    # over an IPv4 session "self" is the IPv4 address: an IPv6 route names its own
    hop = neighbor.local_address6 if neighbor is not None and ":" in route.prefix else "self"
    line = f"announce route {route.prefix} next-hop {hop} origin igp as-path [ {path} ]"
    if neighbor is None:
        return line
    if neighbor.med:
        line += f" med {neighbor.med}"
    if neighbor.communities:
        line += f" community [ {' '.join(neighbor.communities)} ]"
    return f"neighbor {neighbor.address} {line}"


def announce_lines(cfg: SpeakerConfig, route: Route) -> list[str]:
    """One line to every neighbour, or one per neighbour where a session prepends or
    where the route is IPv6 (its next hop is the site's address on each link)."""
    if not any(n.shaped for n in cfg.neighbors) and ":" not in route.prefix:
        return [announce_line(cfg.asn, route)]
    return [announce_line(cfg.asn, route, n) for n in cfg.neighbors]


def withdraw_line(prefix: str) -> str:
    return f"withdraw route {prefix}"


@dataclass
class ExaBgp:
    """One ``exabgp`` (and its API helper) in a site's namespace."""

    config: SpeakerConfig
    _routes: dict[str, Route] = field(default_factory=dict)
    _pid: int | None = None

    @property
    def fifo(self) -> Path:
        return self.config.workdir / "ctl.fifo"

    @property
    def state_file(self) -> Path:
        return self.config.workdir / "ctl.state.json"

    def _state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def _alive(self) -> bool:
        pid = self._pid
        if pid is None:  # not started by this object: ExaBGP's own pid file
            try:
                pid = int((self.config.workdir / "exabgp.pid").read_text())
            except (OSError, ValueError):
                return False
        return netns.alive(pid)

    def _dead(self, what: str) -> SpeakerError:
        log = self.config.workdir / "exabgp.out"
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
        return SpeakerError(f"{self.config.node}: {what}\n" + "\n".join(tail))

    def start(self, routes: Iterable[Route] = ()) -> list[int]:
        cfg = self.config
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        want = dict(by_prefix(routes))
        conf = cfg.workdir / "exabgp.conf"
        conf.write_text(render_exabgp_conf(cfg, self.fifo, self.state_file))
        for p in (self.fifo, self.state_file, cfg.workdir / "exabgp.pid"):
            p.unlink(missing_ok=True)
        os.mkfifo(self.fifo, 0o600)
        argv = [sys.executable, "-m", "exabgp", str(conf)]
        self._pid = netns.spawn(cfg.namespace, argv, cfg.workdir / "exabgp.out", exabgp_env(cfg))
        end = time.monotonic() + START_TIMEOUT
        while not self._state().get("running"):
            if not self._alive():
                raise self._dead("exabgp exited")
            if time.monotonic() > end:
                netns.stop([self._pid])
                raise self._dead(f"exabgp did not start its API process in {START_TIMEOUT:g} s")
            time.sleep(0.05)
        self._routes = {}
        try:
            self.apply(want.values())
        except SpeakerError:
            netns.stop([self._pid])
            raise
        return [self._pid]

    def assume(self, routes: Iterable[Route]) -> None:
        """What the running daemon announces now (a driver made afresh does not know)."""
        self._routes = dict(by_prefix(routes))

    def apply(self, routes: Iterable[Route]) -> None:
        want = by_prefix(routes)
        lines = [withdraw_line(p) for p in self._routes if p not in want]
        for p, r in want.items():
            if self._routes.get(p) != r:
                lines += announce_lines(self.config, r)
        if lines:
            self._send(lines)
        self._routes = dict(want)

    def _send(self, lines: Sequence[str], timeout: float = TIMEOUT) -> None:
        """Write ``lines`` into the FIFO and wait until ExaBGP acknowledged all of them."""
        end = time.monotonic() + timeout
        before = self._state()
        acks = before.get("done", 0) + before.get("error", 0)
        payload = "".join(line + "\n" for line in lines).encode()
        fd = self._open_fifo(end)
        try:
            while payload:
                try:
                    payload = payload[os.write(fd, payload) :]
                except BlockingIOError:
                    self._check(end, "the API helper does not read its FIFO")
                    time.sleep(0.02)
        finally:
            os.close(fd)
        while True:
            st = self._state()
            if st.get("pid") != before.get("pid"):  # ExaBGP respawned its helper: count anew
                before, acks = {}, 0
            if st.get("done", 0) + st.get("error", 0) >= acks + len(lines):
                break
            self._check(end, f"exabgp did not acknowledge {list(lines)}")
            time.sleep(0.02)
        if st.get("error", 0) > before.get("error", 0):
            raise self._dead(f"exabgp rejected one of {list(lines)}")

    def _open_fifo(self, end: float) -> int:
        while True:
            try:
                return os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO:  # ENXIO: nobody has the FIFO open for reading
                    raise SpeakerError(f"{self.config.node}: {self.fifo}: {e}") from e
                self._check(end, "no API helper reads the FIFO")
                time.sleep(0.02)

    def _check(self, end: float, what: str) -> None:
        if not self._alive():
            raise self._dead(f"exabgp is not running ({what})")
        if time.monotonic() > end:
            raise self._dead(what)

    def established(self) -> int:
        """Neighbours ExaBGP last reported up to its API process."""
        if not self._alive():
            raise self._dead("exabgp is not running")
        return sum(self.sessions().values())

    def sessions(self) -> dict[str, bool]:
        """Per neighbour address: did ExaBGP last report it up to its API process."""
        if not self._alive():
            raise self._dead("exabgp is not running")
        st = self._state()
        up = set(st.get("up", [])) if st.get("running") else set()
        return {n.address: n.address in up for n in self.config.neighbors}
