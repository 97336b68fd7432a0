"""The clients' probes: which anycast site answers, for how many flows, and when it changes.

Run inside a client's namespace as ``python -m anyedge.lab.probe MODE ...``; each run
prints one JSON object on stdout.  The other end is :mod:`anyedge.lab.service`, which
answers every request with its site code (``b"CHC"``), echoing requests that start with
``b"seq "`` after the code (``b"CHC seq 17"``).  A *flow* is one source port: routers
hash (source, destination, ports) to pick among equal paths, so different flows of one
client may reach different sites, and one flow always takes the same path.

Modes:

``flows --address A --port P --flows N [--timeout 1.0] [--retries 1] [--tcp] [--per-flow]``
    N flows, each from its own source port (all distinct within the run).  UDP: one
    socket per flow, connected to A:P (the kernel then accepts replies only from A:P),
    one datagram each; datagrams go out with at most :data:`WINDOW` unanswered at a
    time, and replies are collected with a selector; flows unanswered after ``timeout``
    are sent again from the same socket (``retries`` times).  TCP (``--tcp``): one
    connection per flow (at most :data:`WINDOW` at a time), one line sent, the reply line
    read; no retries beyond the kernel's own SYN retransmissions within ``timeout``.
    Output::

        {"answers": {"CHC": 990, "AKL": 10}, "lost": 0, "flows": 1000, "elapsed": 0.21,
         "per_flow": [["CHC", 40123], [null, 40555], ...]}      # per_flow with --per-flow

``load --address A --port P --rate R --duration D [--flows 64] [--timeout 1.0]``
    ``round(R * D)`` datagrams, R per second (paced against the clock: the selector waits
    for replies until the next datagram is due), spread round-robin over F flows with
    fixed source ports; replies are counted per site.  R is at most
    :data:`MAX_RATE`, D at most :data:`MAX_DURATION` seconds.  Output::

        {"sent": 2000, "answers": {"CHC": 1998}, "lost": 2, "flows": 64, "elapsed": 1.0}

``watch --address A --port P [--interval 0.01] --duration D [--timeout 1.0]``
    One flow; one datagram every ``interval`` with payload ``seq <i>``, so each reply
    names the probe it answers.  Output: the timeline (send time relative to ``start``,
    a wall-clock ``time.time()``; the answering site or null if unanswered) and its
    summary (:func:`summarize_timeline`): per-site answers, lost probes, every change of
    answering site with the last answer from the old site and the first from the new one,
    and every outage (run of unanswered probes).  Used to time BGP convergence::

        {"start": 1712345678.9, "interval": 0.01, "timeline": [[0.0, "CHC"], ...],
         "sent": 600, "answered": 580, "lost": 20, "answers": {"CHC": 300, "AKL": 280},
         "changes": [{"from": "CHC", "to": "AKL", "last_old": 2.99, "first_new": 3.2,
                      "gap": 0.21, "lost": 20}],
         "outages": [{"start": 3.0, "end": 3.19, "lost": 20}]}

SIGTERM ends a ``load`` or a ``watch`` before its duration: no more datagrams go out,
the replies still due are waited for (``timeout``), and the output reports what was sent
— how a test or a script keeps a steady probe running across steps of unknown length.

The functions behind the modes (:func:`probe_flows`, :func:`probe_load`,
:func:`probe_watch`) are usable in-process.  Bad arguments exit with status 2 and a
message; a socket error that ends a run exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import ipaddress
import json
import math
import os
import resource
import selectors
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

MAX_FLOWS = 20000
"""Most flows in one ``flows`` run (the ephemeral port range holds about 28,000)."""

MAX_RATE = 20000
"""Most datagrams per second ``load`` sends."""

MAX_DURATION = 600.0
"""Longest ``load`` or ``watch`` run, in seconds."""
WATCHING = "watching"  # what ``watch`` writes to stderr as its first datagram goes

MIN_INTERVAL = 0.001
"""Shortest ``watch`` interval, in seconds."""

WINDOW = 256
"""Most flows in flight at once (sent but unanswered): a burst of thousands of datagrams
would overflow the service's receive buffer and a burst of SYNs its listen queue."""

STALL = 0.05
"""Seconds to wait for room in a full window before sending anyway."""

FD_RESERVE = 64
"""File descriptors left for everything else when sizing a batch of UDP sockets."""

FLOW_PAYLOAD = b"probe"
LOAD_PAYLOAD = b"load"
SEQ_PREFIX = b"seq "
RECV_SIZE = 2048


class ProbeError(RuntimeError):
    """A probe could not run (no unused source port left)."""


# -- shared helpers ------------------------------------------------------------------------


def _family(address: str) -> socket.AddressFamily:
    ip = ipaddress.ip_address(address)  # ValueError for a name or garbage
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def _wildcard(family: socket.AddressFamily) -> str:
    return "::" if family == socket.AF_INET6 else "0.0.0.0"


def code_of(reply: bytes) -> str | None:
    """The site code in a reply: its first word (None for an empty reply)."""
    word = reply.strip().split(b" ", 1)[0]
    return word.decode("ascii", errors="replace") if word else None


def _sorted_answers(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def raise_nofile_limit() -> int:
    """Raise the soft open-file limit to the hard one; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def _fd_budget() -> int:
    """File descriptors this process may still open, less :data:`FD_RESERVE`."""
    soft = raise_nofile_limit()
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        used = FD_RESERVE
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, soft - used - FD_RESERVE)


def _bind_distinct(
    family: socket.AddressFamily, kind: socket.SocketKind, used: set[int]
) -> tuple[socket.socket, int]:
    """A non-blocking socket bound to an ephemeral port not in ``used`` (then added to it).

    Ports handed out again by the kernel (after an earlier socket of this run closed) are
    refused: the rejected sockets stay open until a new port comes, so it cannot repeat.
    """
    rejected: list[socket.socket] = []
    try:
        for _ in range(64):
            s = socket.socket(family, kind)
            try:
                s.setblocking(False)
                s.bind((_wildcard(family), 0))
                port = int(s.getsockname()[1])
            except BaseException:
                s.close()
                raise
            if port not in used:
                used.add(port)
                return s, port
            rejected.append(s)
        raise ProbeError("no unused ephemeral source port after 64 tries")
    finally:
        for r in rejected:
            r.close()


def _send(sock: socket.socket, payload: bytes) -> bool:
    """Send on a connected socket; a pending error from an earlier ICMP message is
    reported by the first call, so try twice.  False if the datagram did not go out."""
    for _ in range(2):
        try:
            sock.send(payload)
            return True
        except BlockingIOError:
            return False
        except OSError:
            continue
    return False


def _drain(sock: socket.socket) -> Iterator[bytes]:
    """Every datagram waiting on ``sock`` (errors from ICMP messages are skipped)."""
    while True:
        try:
            yield sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return
            continue  # ECONNREFUSED, EHOSTUNREACH...: consumed, look again


def _udp_socket(address: str, port: int, used: set[int]) -> tuple[socket.socket, int]:
    s, sport = _bind_distinct(_family(address), socket.SOCK_DGRAM, used)
    try:
        s.connect((address, port))
    except OSError:
        s.close()
        raise
    return s, sport


# -- flows -----------------------------------------------------------------------------------


def probe_flows(
    address: str,
    port: int,
    flows: int,
    timeout: float = 1.0,
    tcp: bool = False,
    retries: int = 1,
    per_flow: bool = False,
    share: int = 1,
) -> dict[str, Any]:
    """Probe ``address:port`` with ``flows`` flows (distinct source ports); which site
    answered how many.  See the module's docstring for the output.  ``share``: how many
    probes run at once in this process (threads), each taking that share of the file
    descriptors it may still open."""
    _family(address)
    if not 1 <= flows <= MAX_FLOWS:
        raise ValueError(f"flows must be within 1..{MAX_FLOWS}: {flows}")
    if timeout <= 0:
        raise ValueError(f"timeout must be positive: {timeout}")
    if retries < 0:
        raise ValueError(f"retries must not be negative: {retries}")
    t0 = time.monotonic()
    results: list[tuple[str | None, int]] = []
    used: set[int] = set()
    budget = _fd_budget() // max(1, share)
    if tcp:
        results = _tcp_flows(address, port, flows, timeout, used, max(1, min(WINDOW, budget)))
    else:
        batch = max(FD_RESERVE, budget)
        for start in range(0, flows, batch):
            n = min(batch, flows - start)
            results += _udp_flows(address, port, n, timeout, retries, used)
    counts = Counter(code for code, _ in results if code is not None)
    out: dict[str, Any] = {
        "answers": _sorted_answers(counts),
        "lost": sum(1 for code, _ in results if code is None),
        "flows": flows,
        "elapsed": round(time.monotonic() - t0, 3),
    }
    if per_flow:
        out["per_flow"] = [[code, sport] for code, sport in results]
    return out


def _udp_flows(
    address: str, port: int, n: int, timeout: float, retries: int, used: set[int]
) -> list[tuple[str | None, int]]:
    """One batch of UDP flows, all sockets open at once (so their ports differ)."""
    socks: list[socket.socket] = []
    sports: list[int] = []
    answers: list[str | None] = [None] * n
    try:
        for _ in range(n):
            s, sport = _bind_distinct(_family(address), socket.SOCK_DGRAM, used)
            socks.append(s)
            sports.append(sport)
        with selectors.DefaultSelector() as sel:
            waiting: set[int] = set()
            for i, s in enumerate(socks):
                try:
                    s.connect((address, port))
                except OSError:
                    continue  # no route: this flow is lost
                sel.register(s, selectors.EVENT_READ, i)
                waiting.add(i)
            in_flight: set[int] = set()

            def collect(wait: float) -> None:
                for key, _ in sel.select(max(0.0, wait)):
                    i = int(key.data)
                    for reply in _drain(socks[i]):
                        code = code_of(reply)
                        if code is not None and answers[i] is None:
                            answers[i] = code
                    if answers[i] is not None:
                        sel.unregister(socks[i])
                        waiting.discard(i)
                        in_flight.discard(i)

            for _attempt in range(retries + 1):
                if not waiting:
                    break
                for i in sorted(waiting):
                    if len(in_flight) >= WINDOW:
                        end = time.monotonic() + STALL
                        while len(in_flight) >= WINDOW and (left := end - time.monotonic()) > 0:
                            collect(left)
                        if len(in_flight) >= WINDOW:
                            in_flight.clear()  # slow answers: stop waiting for room
                    if i in waiting and _send(socks[i], FLOW_PAYLOAD):
                        in_flight.add(i)
                    collect(0.0)
                end = time.monotonic() + timeout
                while waiting and (left := end - time.monotonic()) > 0:
                    collect(left)
                in_flight.clear()
    finally:
        for s in socks:
            s.close()
    return list(zip(answers, sports, strict=True))


@dataclass
class _TcpFlow:
    index: int
    sock: socket.socket
    deadline: float
    buf: bytes = b""
    connected: bool = False


def _tcp_flows(
    address: str, port: int, n: int, timeout: float, used: set[int], window: int = WINDOW
) -> list[tuple[str | None, int]]:
    """TCP flows, at most ``window`` connections open at once."""
    family = _family(address)
    answers: list[str | None] = [None] * n
    sports = [0] * n
    active: dict[int, _TcpFlow] = {}
    next_index = 0

    with selectors.DefaultSelector() as sel:

        def finish(flow: _TcpFlow) -> None:
            if flow.buf:
                answers[flow.index] = code_of(flow.buf.split(b"\n", 1)[0])
            sel.unregister(flow.sock)
            flow.sock.close()
            del active[flow.index]

        try:
            while next_index < n or active:
                while next_index < n and len(active) < window:
                    i = next_index
                    next_index += 1
                    s, sports[i] = _bind_distinct(family, socket.SOCK_STREAM, used)
                    err = s.connect_ex((address, port))
                    if err not in (0, errno.EINPROGRESS):
                        s.close()
                        continue
                    active[i] = _TcpFlow(i, s, time.monotonic() + timeout)
                    sel.register(s, selectors.EVENT_WRITE, active[i])
                if not active:
                    continue  # every connect of this window failed at once: next window
                wait = min(f.deadline for f in active.values()) - time.monotonic()
                for key, _ in sel.select(max(0.0, wait)):
                    flow: _TcpFlow = key.data
                    if flow.index not in active:
                        continue
                    if not flow.connected:
                        if flow.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                            finish(flow)
                            continue
                        flow.connected = True
                        try:
                            flow.sock.send(FLOW_PAYLOAD + b"\n")
                        except OSError:
                            finish(flow)
                            continue
                        sel.modify(flow.sock, selectors.EVENT_READ, flow)
                        continue
                    try:
                        data = flow.sock.recv(RECV_SIZE)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    flow.buf += data
                    if not data or len(flow.buf) > RECV_SIZE:
                        finish(flow)
                now = time.monotonic()
                for flow in [f for f in active.values() if f.deadline <= now]:
                    finish(flow)
        finally:
            for flow in active.values():
                flow.sock.close()
    return list(zip(answers, sports, strict=True))


# -- paced datagrams (load, watch) ---------------------------------------------------------


def _paced(
    socks: Sequence[socket.socket],
    count: int,
    interval: float,
    payload: Callable[[int], bytes],
    on_reply: Callable[[bytes], None],
    timeout: float,
    pending: Callable[[int], bool],
    stopped: Callable[[], bool] = lambda: False,
) -> list[float]:
    """Send ``count`` datagrams, the ``i``-th ``i * interval`` after the start on
    ``socks[i % len(socks)]`` with ``payload(i)``, handing every reply to ``on_reply``
    while waiting for the next one; then wait up to ``timeout`` for the last replies, as
    long as ``pending(datagrams that went out)``.  Sending ends early once ``stopped()``
    says so (checked before each batch of datagrams due).

    Returns each datagram's send time relative to the start (NaN if it did not go out),
    for the datagrams sent: fewer than ``count`` if it was stopped.
    No busy loop: between datagrams the selector waits for replies until the next is due.
    """
    sent_at: list[float] = []
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)

        def collect(wait: float) -> None:
            for key, _ in sel.select(max(0.0, wait)):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                for reply in _drain(sock):
                    on_reply(reply)

        start = time.monotonic()
        while len(sent_at) < count and not stopped():
            due = min(count, math.floor((time.monotonic() - start) / interval) + 1)
            while len(sent_at) < due:
                i = len(sent_at)
                t = time.monotonic() - start
                sent_at.append(t if _send(socks[i % len(socks)], payload(i)) else math.nan)
            if len(sent_at) < count and not stopped():
                collect(start + len(sent_at) * interval - time.monotonic())
        went_out = sum(1 for t in sent_at if not math.isnan(t))
        end = time.monotonic() + timeout
        while pending(went_out) and (left := end - time.monotonic()) > 0:
            collect(left)
    return sent_at


def probe_load(
    address: str,
    port: int,
    rate: float,
    duration: float,
    flows: int = 64,
    timeout: float = 1.0,
    stopped: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Send ``rate`` datagrams per second for ``duration`` seconds over ``flows`` flows,
    or until ``stopped()`` says so."""
    _family(address)
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"rate must be within (0, {MAX_RATE}] per second: {rate:g}")
    if not 0 < duration <= MAX_DURATION:
        raise ValueError(f"duration must be within (0, {MAX_DURATION:g}] seconds: {duration:g}")
    if not 1 <= flows <= 1024:
        raise ValueError(f"flows must be within 1..1024: {flows}")
    count = max(1, round(rate * duration))
    counts: Counter[str] = Counter()
    socks: list[socket.socket] = []
    try:
        used: set[int] = set()
        for _ in range(flows):
            socks.append(_udp_socket(address, port, used)[0])

        def on_reply(reply: bytes) -> None:
            code = code_of(reply)
            if code is not None:
                counts[code] += 1

        sent_at = _paced(
            socks,
            count,
            1.0 / rate,
            lambda _i: LOAD_PAYLOAD,
            on_reply,
            timeout,
            lambda went_out: counts.total() < went_out,
            stopped,
        )
    finally:
        for s in socks:
            s.close()
    answered = counts.total()
    return {
        "sent": len(sent_at),
        "answers": _sorted_answers(counts),
        "lost": max(0, len(sent_at) - answered),
        "flows": flows,
        "elapsed": round(max((t for t in sent_at if not math.isnan(t)), default=0.0), 3),
    }


def summarize_timeline(timeline: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """What a watch timeline (``[t, site or None]`` in send order) shows.

    ``changes``: each change of answering site, with the send times of the last probe
    the old site answered and the first the new one answered, and the probes lost between
    them.  ``outages``: each run of unanswered probes (first and last send time, count).
    """
    counts: Counter[str] = Counter()
    changes: list[dict[str, Any]] = []
    outages: list[dict[str, Any]] = []
    prev: tuple[float, str] | None = None
    lost_since = 0
    outage: dict[str, Any] | None = None
    for t_raw, who in timeline:
        t = float(t_raw)
        if who is None:
            lost_since += 1
            if outage is None:
                outage = {"start": t, "end": t, "lost": 0}
                outages.append(outage)
            outage["end"] = t
            outage["lost"] += 1
            continue
        outage = None
        counts[str(who)] += 1
        if prev is not None and who != prev[1]:
            changes.append(
                {
                    "from": prev[1],
                    "to": who,
                    "last_old": prev[0],
                    "first_new": t,
                    "gap": round(t - prev[0], 6),
                    "lost": lost_since,
                }
            )
        prev = (t, str(who))
        lost_since = 0
    answered = counts.total()
    return {
        "sent": len(timeline),
        "answered": answered,
        "lost": len(timeline) - answered,
        "answers": _sorted_answers(counts),
        "changes": changes,
        "outages": outages,
    }


def probe_watch(
    address: str,
    port: int,
    duration: float,
    interval: float = 0.01,
    timeout: float = 1.0,
    on_start: Callable[[], None] | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """One flow, one tagged datagram every ``interval``: who answered each, and when.
    ``on_start`` is called just before the first datagram goes; once ``stopped()`` says
    so, no more go out and the timeline ends with the last that did."""
    _family(address)
    if not 0 < duration <= MAX_DURATION:
        raise ValueError(f"duration must be within (0, {MAX_DURATION:g}] seconds: {duration:g}")
    if not MIN_INTERVAL <= interval <= duration:
        raise ValueError(f"interval must be within [{MIN_INTERVAL:g}, duration]: {interval:g}")
    count = max(1, round(duration / interval))
    answers: list[str | None] = [None] * count
    unanswered = count

    def on_reply(reply: bytes) -> None:
        nonlocal unanswered
        code, _, tag = reply.partition(b" ")
        if not tag.startswith(SEQ_PREFIX):
            return
        try:
            i = int(tag[len(SEQ_PREFIX) :])
        except ValueError:
            return
        if 0 <= i < count and answers[i] is None and code:
            answers[i] = code.decode("ascii", errors="replace")
            unanswered -= 1

    wall = time.time()
    s, _ = _udp_socket(address, port, set())
    if on_start is not None:
        on_start()
    with s:
        sent_at = _paced(
            [s],
            count,
            interval,
            lambda i: SEQ_PREFIX + str(i).encode(),
            on_reply,
            timeout,
            lambda went_out: count - unanswered < went_out,
            stopped,
        )
    timeline: list[list[Any]] = [
        [round(i * interval if math.isnan(t) else t, 6), who]
        for i, (t, who) in enumerate(zip(sent_at, answers[: len(sent_at)], strict=True))
    ]
    return {"start": wall, "interval": interval, "timeline": timeline} | summarize_timeline(
        timeline
    )


# -- command line ----------------------------------------------------------------------------


def _ip(text: str) -> str:
    try:
        _family(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None
    return text


def _bounded(
    kind: type[int] | type[float], low: float, high: float, what: str, above: bool = False
) -> Callable[[str], int | float]:
    """An argparse type: a number at least ``low`` (more than ``low`` if ``above``) and at
    most ``high``."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: not a number: {text!r}") from None
        if not (low < value if above else low <= value) or not value <= high:
            floor = f"more than {low:g}" if above else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"{what} must be {floor} and at most {high:g}: {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m anyedge.lab.probe",
        description="Probe an anycast address: which site answers which flow.",
    )
    modes = p.add_subparsers(dest="mode", required=True, metavar="MODE")

    def common(sp: argparse.ArgumentParser, timeout_help: str) -> None:
        sp.add_argument("--address", required=True, type=_ip, help="address to probe")
        sp.add_argument(
            "--port", required=True, type=_bounded(int, 1, 65535, "port"), help="service port"
        )
        sp.add_argument(
            "--timeout",
            type=_bounded(float, 0.001, 60, "timeout"),
            default=1.0,
            help=timeout_help,
        )

    f = modes.add_parser("flows", help="one request per flow, many flows")
    common(f, "seconds to wait for the replies of each round (default 1)")
    f.add_argument(
        "--flows", required=True, type=_bounded(int, 1, MAX_FLOWS, "flows"), help="flows"
    )
    f.add_argument(
        "--retries",
        type=_bounded(int, 0, 5, "retries"),
        default=1,
        help="UDP: rounds resent to unanswered flows (default 1)",
    )
    f.add_argument("--tcp", action="store_true", help="one TCP connection per flow")
    f.add_argument("--per-flow", action="store_true", help="list each flow's site and port")

    ld = modes.add_parser("load", help="a steady rate of datagrams over a few flows")
    common(ld, "seconds to wait for the last replies (default 1)")
    ld.add_argument(
        "--rate",
        required=True,
        type=_bounded(float, 0, MAX_RATE, "rate", above=True),
        help="per second",
    )
    ld.add_argument(
        "--duration",
        required=True,
        type=_bounded(float, 0, MAX_DURATION, "duration", above=True),
        help="seconds",
    )
    ld.add_argument(
        "--flows", type=_bounded(int, 1, 1024, "flows"), default=64, help="flows (default 64)"
    )

    w = modes.add_parser("watch", help="one flow, tagged datagrams at a fixed interval")
    common(w, "seconds to wait for the last replies (default 1)")
    w.add_argument(
        "--interval",
        type=_bounded(float, MIN_INTERVAL, MAX_DURATION, "interval"),
        default=0.01,
        help="seconds between datagrams (default 0.01)",
    )
    w.add_argument(
        "--duration",
        required=True,
        type=_bounded(float, 0, MAX_DURATION, "duration", above=True),
        help="seconds",
    )
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.mode == "flows":
        return probe_flows(
            args.address,
            args.port,
            args.flows,
            timeout=args.timeout,
            tcp=args.tcp,
            retries=args.retries,
            per_flow=args.per_flow,
        )
    # SIGTERM ends a load or a watch early: what was sent so far is reported
    term = threading.Event()
    signal.signal(signal.SIGTERM, lambda _sig, _frame: term.set())
    if args.mode == "load":
        return probe_load(
            args.address, args.port, args.rate, args.duration, args.flows, args.timeout, term.is_set
        )
    # the line on stderr tells whoever started this that datagrams are going out now
    started = functools.partial(print, WATCHING, file=sys.stderr, flush=True)
    return probe_watch(
        args.address, args.port, args.duration, args.interval, args.timeout, started, term.is_set
    )


def main(argv: Iterable[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        result = run(args)
    except ValueError as e:
        parser.error(str(e))  # exits with status 2
    except (OSError, ProbeError) as e:
        print(f"anyedge.lab.probe: {e}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
