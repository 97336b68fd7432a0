"""A lab service's counters over HTTP, for Prometheus to scrape directly.

:mod:`.service` counts requests and bytes per port; with ``--metrics ADDRESS:PORT`` it
also answers ``GET /metrics`` there in Prometheus's text format (prometheus-client's
``generate_latest`` over :class:`ServiceMetrics`, read at each scrape):

=====================================================  =================================
``anyedge_lab_requests_total{site, server, plan}``     requests answered (UDP datagrams
                                                       and TCP connections)
``anyedge_lab_received_bytes_total{...}``, ``sent``    bytes of requests and replies
``anyedge_lab_cpu_ms_total{site, server, plan}``       CPU ms the requests cost, at the
                                                       world's cost per plan (``--cpu-ms``)
``anyedge_site_capacity_ms{site, server}``             CPU ms/s this server stands for
                                                       (``--capacity``)
=====================================================  =================================

``server`` is the part after ``/`` in the service's code (``CHC/s0``), empty for a site
without servers; ``plan`` is the port's plan (``--plans``), or the port number.

The lab's services run in the sites' network namespaces and Prometheus outside them, so
the listener can be bound in another namespace (``--metrics-netns``, a path such as
``/proc/PID/ns/net`` of the process that builds the lab): the socket is made there and
keeps belonging to it while the service answers its clients in its own.  With
``--metrics-sd FILE`` the service writes its address as a Prometheus ``file_sd`` target
list once it listens (and removes it when it stops), so a Prometheus watching
``<lab>/prometheus/*.json`` finds every service without being told.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..adapters import netns

if TYPE_CHECKING:
    from .service import Counters

HEAD_LIMIT = 8192  # bytes of request head read before answering


@dataclass(eq=False)  # registered by identity
class ServiceMetrics(Collector):
    """The families of the module doc, from one service's counters."""

    counters: Counters
    code: str  # SITE or SITE/SERVER
    plans: Sequence[str] = ()  # per port, in port order (empty: the port numbers)
    cpu_ms: Sequence[float] = ()  # per port, CPU ms a request costs (empty: not exported)
    capacity: float | None = None  # CPU ms/s (None: not exported)

    def collect(self) -> Iterator[Metric]:
        site, _, server = self.code.partition("/")
        c = self.counters
        ports = list(c.ports)
        names = list(self.plans) or [str(p) for p in ports]
        labels = ["site", "server", "plan"]
        fams = {
            "requests": CounterMetricFamily(
                "anyedge_lab_requests", "Requests answered", labels=labels
            ),
            "bytes_in": CounterMetricFamily(
                "anyedge_lab_received_bytes", "Bytes of requests", labels=labels
            ),
            "bytes_out": CounterMetricFamily(
                "anyedge_lab_sent_bytes", "Bytes of replies", labels=labels
            ),
        }
        cpu = CounterMetricFamily(
            "anyedge_lab_cpu_ms", "CPU ms the requests cost, at the plan's cost", labels=labels
        )
        for i, port in enumerate(ports):
            key = [site, server, names[i]]
            fams["requests"].add_metric(key, c.requests[port])
            fams["bytes_in"].add_metric(key, c.bytes_in[port])
            fams["bytes_out"].add_metric(key, c.bytes_out[port])
            if self.cpu_ms:
                cpu.add_metric(key, c.requests[port] * self.cpu_ms[i])
        yield from fams.values()
        if self.cpu_ms:
            yield cpu
        if self.capacity is not None:
            yield _capacity(site, server, self.capacity)


def _capacity(site: str, server: str, value: float) -> Metric:
    fam = GaugeMetricFamily(
        "anyedge_site_capacity_ms", "CPU ms/s this server stands for", labels=["site", "server"]
    )
    fam.add_metric([site, server], value)
    return fam


def listen(address: str, port: int, namespace: str | None) -> socket.socket:
    """A listening TCP socket on ``address:port``, made in network namespace
    ``namespace`` (a name or a path; None: this one)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with netns.entered(namespace):
        sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve(sock: socket.socket, registry: CollectorRegistry) -> asyncio.Server:
    """Answer ``GET /metrics`` on ``sock`` (one request per connection)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            method, path, *_ = [*head.split(b"\r\n", 1)[0].decode("latin-1").split(" "), ""]
            if method == "GET" and path.split("?")[0] == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(registry)
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"only /metrics here\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}"
                "\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
            pass  # a client that went away or sent no HTTP: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, sock=sock, limit=HEAD_LIMIT)


def read_targets(files: Sequence[Path]) -> list[str]:
    """The ``host:port`` targets the file_sd files list."""
    out = []
    for f in files:
        for group in json.loads(f.read_text()):
            out += [str(t) for t in group["targets"]]
    return out


def scrape(target: str, timeout: float = 2.0) -> dict[str, dict[str, float]]:
    """What a service's ``/metrics`` says now: per family (without ``_total``), the
    samples summed by plan."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{target}/metrics", timeout=timeout) as r:
        text = r.read().decode()
    out: dict[str, dict[str, float]] = {}
    for fam in text_string_to_metric_families(text):
        for x in fam.samples:
            if x.name.endswith("_created"):
                continue
            by_plan = out.setdefault(fam.name, {})
            plan = x.labels.get("plan", "")
            by_plan[plan] = by_plan.get(plan, 0.0) + x.value
    return out


def write_target(path: Path, sock: socket.socket) -> None:
    """``path`` as a Prometheus file_sd list naming the address ``sock`` listens on."""
    host, port = sock.getsockname()[:2]
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps([{"targets": [target], "labels": {}}]) + "\n")
    tmp.replace(path)  # Prometheus never reads half a file
