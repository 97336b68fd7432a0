"""Prometheus metrics of a TURN relay process, read from the core's counters at scrape
time (nothing is counted twice and the packet paths pay nothing for metrics).

Exported: ``anyedge_turn_allocations``, ``_permissions``, ``_channels`` and
``_draining`` (1 while new allocations are sent to alternates) (gauges);
``anyedge_turn_packets_total`` and ``_bytes_total`` by ``direction`` (to_peer,
to_client); ``anyedge_turn_requests_total``; ``anyedge_turn_auth_failures_total`` by
``kind`` (challenge, wrong, stale_nonce); ``anyedge_turn_refusals_total`` and
``anyedge_turn_dropped_total`` by ``reason`` (refusals' ``draining``: Allocates sent
elsewhere; the IO layer's too: ``backlog``, relayed data
dropped for a TCP/TLS client that does not read, and ``relay_opening``);
``anyedge_turn_input_errors_total`` (inputs the core raised on, see ``io._guarded``) and
``anyedge_turn_rate_limiter_evictions_total`` (buckets pushed out of the full
unauthenticated-answer limiter: a sign of a spoofed flood).  With the kernel fast path
(:mod:`.fastpath`): ``anyedge_turn_fast_path_packets_total`` and ``_bytes_total`` by
``direction`` (the part of the relayed totals above that XDP relayed),
``anyedge_turn_fast_path_channels`` and ``_permissions`` (gauges: channels, and
permissions for Send and Data indications, in the kernel's maps),
``anyedge_turn_fast_path_paused_total`` (allocations sent back to user space over their
bandwidth) and, from worker 0 alone since the workers share one program,
``anyedge_turn_fast_path_frames_total`` by ``outcome`` (to_peer, to_client, passed,
expired: past an entry's deadline, no_route: no next hop from the FIB, send_to_peer
and data_to_client: Send indications relayed, Data indications sent).  Each series
carries the ``worker`` label.

The same HTTP server answers ``/sessions`` with the worker's allocations as JSON
(:mod:`anyedge.proto.turn.sessions`; ``anyedge turn sessions`` reads it from every
worker).  It lists clients' addresses and usernames: keep ``metrics.address`` on a
private or loopback address.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from ...proto.turn import Counters


class IoCounts(Protocol):
    """What the IO layer counts itself (:class:`~.io.TurnService` has these)."""

    errors: int
    dropped_backlog: int
    dropped_opening: int

    @property
    def dropped_send(self) -> int: ...


class TurnCollector(Collector):
    def __init__(self, counters: Counters, worker: int, io: IoCounts | None = None) -> None:
        self.c = counters
        self.worker = str(worker)
        self.io = io

    def collect(self) -> Iterator[Metric]:
        c, w = self.c, self.worker
        for name in ("allocations", "permissions", "channels", "draining"):
            g = GaugeMetricFamily(f"anyedge_turn_{name}", f"{name} now", labels=["worker"])
            g.add_metric([w], getattr(c, name))
            yield g
        packets = CounterMetricFamily(
            "anyedge_turn_packets", "packets relayed", labels=["worker", "direction"]
        )
        octets = CounterMetricFamily(
            "anyedge_turn_bytes", "payload bytes relayed", labels=["worker", "direction"]
        )
        for d in ("to_peer", "to_client"):
            packets.add_metric([w, d], getattr(c, f"packets_{d}"))
            octets.add_metric([w, d], getattr(c, f"bytes_{d}"))
        yield packets
        yield octets
        req = CounterMetricFamily("anyedge_turn_requests", "STUN requests", labels=["worker"])
        req.add_metric([w], c.requests)
        yield req
        created = CounterMetricFamily(
            "anyedge_turn_allocations_created", "allocations made", labels=["worker"]
        )
        created.add_metric([w], c.allocations_created)
        yield created
        auth = CounterMetricFamily(
            "anyedge_turn_auth_failures",
            "requests refused for credentials",
            labels=["worker", "kind"],
        )
        for kind, v in (
            ("challenge", c.challenges),
            ("wrong", c.auth_failures),
            ("stale_nonce", c.stale_nonces),
        ):
            auth.add_metric([w, kind], v)
        yield auth
        ref = CounterMetricFamily(
            "anyedge_turn_refusals", "error responses", labels=["worker", "reason"]
        )
        for reason, v in (
            ("forbidden_peer", c.refused_peer),
            ("user_quota", c.refused_user_quota),
            ("capacity", c.refused_capacity),
            ("other", c.refused_other),
            ("draining", c.redirected),
        ):
            ref.add_metric([w, reason], v)
        yield ref
        drop = CounterMetricFamily(
            "anyedge_turn_dropped", "packets dropped", labels=["worker", "reason"]
        )
        for reason, v in (
            ("malformed", c.dropped_malformed),
            ("rate_limited", c.dropped_rate_limited),
            ("no_permission", c.dropped_no_permission),
            ("no_allocation", c.dropped_no_allocation),
            ("bandwidth", c.dropped_bandwidth),
            ("backlog", self.io.dropped_backlog if self.io else 0),
            ("relay_opening", self.io.dropped_opening if self.io else 0),
            ("send", self.io.dropped_send if self.io else 0),
        ):
            drop.add_metric([w, reason], v)
        yield drop
        errors = CounterMetricFamily(
            "anyedge_turn_input_errors", "inputs the core failed on, dropped", labels=["worker"]
        )
        errors.add_metric([w], self.io.errors if self.io else 0)
        yield errors
        evicted = CounterMetricFamily(
            "anyedge_turn_rate_limiter_evictions",
            "client buckets evicted from the full unauthenticated-answer limiter",
            labels=["worker"],
        )
        evicted.add_metric([w], c.rate_limiter_evictions)
        yield evicted
        fast = getattr(self.io, "fast", None)
        if fast is not None:
            yield from _fast_path(fast, w)


def _fast_path(fast: Any, w: str) -> Iterator[Metric]:
    if w == "0":  # one program for every worker: its own counters come from worker 0
        frames = CounterMetricFamily(
            "anyedge_turn_fast_path_frames",
            "frames the XDP program saw, by what it did with them",
            labels=["worker", "outcome"],
        )
        for outcome, v in fast.kernel.counters().items():
            frames.add_metric([w, outcome], v)
        yield frames
    packets = CounterMetricFamily(
        "anyedge_turn_fast_path_packets", "packets relayed in XDP", labels=["worker", "direction"]
    )
    octets = CounterMetricFamily(
        "anyedge_turn_fast_path_bytes",
        "payload bytes relayed in XDP",
        labels=["worker", "direction"],
    )
    for d in ("to_peer", "to_client"):
        packets.add_metric([w, d], fast.packets[d])
        octets.add_metric([w, d], fast.bytes[d])
    yield packets
    yield octets
    g = GaugeMetricFamily(
        "anyedge_turn_fast_path_channels", "channels in the kernel's maps", labels=["worker"]
    )
    g.add_metric([w], len(fast.installed))
    yield g
    g = GaugeMetricFamily(
        "anyedge_turn_fast_path_permissions",
        "permissions in the kernel's maps (Send and Data indications)",
        labels=["worker"],
    )
    g.add_metric([w], len(fast.permitted))
    yield g
    paused = CounterMetricFamily(
        "anyedge_turn_fast_path_paused",
        "allocations sent back to user space over their bandwidth",
        labels=["worker"],
    )
    paused.add_metric([w], fast.paused)
    yield paused


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # no line on stderr per scrape


def serve_metrics(
    counters: Counters,
    worker: int,
    address: str,
    port: int,
    io: IoCounts | None = None,
    sessions: Callable[[], list[dict[str, object]]] | None = None,
) -> CollectorRegistry:
    """Expose ``counters`` (and ``io``'s) on http://address:port/metrics and, given
    ``sessions``, the allocations on http://address:port/sessions (JSON: ``worker`` and
    ``sessions``); a thread of this process serves both."""
    registry = CollectorRegistry()
    registry.register(TurnCollector(counters, worker, io))
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/sessions" and sessions is not None:
            body = json.dumps({"worker": worker, "sessions": sessions()}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        return cast(Iterable[bytes], metrics_app(environ, start_response))

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    server_class = type("Server", (ThreadingWSGIServer,), {"address_family": family})
    httpd: WSGIServer = make_server(address, port, app, server_class, handler_class=_Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True, name="metrics").start()
    return registry
