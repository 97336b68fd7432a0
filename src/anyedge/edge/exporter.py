"""Prometheus metrics of the edge's BPF programs, read from their maps at scrape time:
no polling thread, nothing counted twice, and the packet path pays nothing for metrics
(the programs count per CPU anyway; a scrape sums the CPUs).

Exported (every one a counter, ``_total`` in the text format):

- ``anyedge_l4drop_packets_total``, ``anyedge_l4drop_bytes_total`` by ``rule`` and
  ``action`` (drop, pass): what each L4Drop rule in force matched.  A rule set
  counts from zero when it comes into force (``L4Drop.replace``); Prometheus reads the
  fall as a counter reset.
- ``anyedge_balancer_packets_total``, ``anyedge_balancer_bytes_total`` by ``server``
  and ``kind`` (first_hop, second_hop, local, no_mac): the balancer's decisions.
- ``anyedge_balancer_second_hop_passes_total``: packets sent on to a second hop (the
  ``second_hop`` kind over all servers), the number to watch while tables change.
- ``anyedge_kernel_drops_total`` by ``reason``: packets the kernel dropped, per
  ``enum skb_drop_reason`` (dropwatch, the ``kfree_skb`` raw tracepoint), named from
  the running kernel's BTF.
- ``anyedge_udp_ratelimited_total`` is reserved for the UDP rate limiter (not built
  yet): it will be one more source, an object with a ``collect()`` that yields metric
  families, passed in ``sources`` — the collector needs no change.

::

    from anyedge.edge.exporter import EdgeCollector, serve

    collector = EdgeCollector(l4drop=l4, balancer=lb, dropwatch=dw)
    server = serve(collector, port=9650)        # http://127.0.0.1:9650/metrics
    ...
    server.close()

``python -m anyedge.edge.exporter`` serves dropwatch's drop reasons and, given a rules
file and an interface, an L4Drop of its own (the maps are not pinned yet, so an
exporter process sees only the programs it loaded itself).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from .balancer import KINDS, Balancer
from .dropwatch import Dropwatch
from .l4drop import L4Drop
from .libbpf import BpfError

DEFAULT_PORT = 9650


class Source(Protocol):
    """Anything else that has metrics to add (the UDP rate limiter, later)."""

    def collect(self) -> Iterable[Metric]: ...


class EdgeCollector(Collector):
    """Reads the given programs' maps each time it is collected; any may be ``None``."""

    def __init__(
        self,
        l4drop: L4Drop | None = None,
        balancer: Balancer | None = None,
        dropwatch: Dropwatch | None = None,
        sources: Iterable[Source] = (),
    ) -> None:
        self.l4drop = l4drop
        self.balancer = balancer
        self.dropwatch = dropwatch
        self.sources = list(sources)

    def collect(self) -> Iterator[Metric]:
        if self.l4drop is not None:
            yield from _l4drop(self.l4drop)
        if self.balancer is not None:
            yield from _balancer(self.balancer)
        if self.dropwatch is not None:
            yield _drops(self.dropwatch)
        for source in self.sources:
            yield from source.collect()


def _l4drop(l4: L4Drop) -> Iterator[Metric]:
    labels = ["rule", "action"]
    packets = CounterMetricFamily(
        "anyedge_l4drop_packets", "packets matched by an L4Drop rule in force", labels=labels
    )
    octets = CounterMetricFamily(
        "anyedge_l4drop_bytes", "frame bytes matched by an L4Drop rule in force", labels=labels
    )
    for c in l4.counters():
        packets.add_metric([c.name, c.action], c.packets)
        octets.add_metric([c.name, c.action], c.bytes)
    yield packets
    yield octets


def _balancer(lb: Balancer) -> Iterator[Metric]:
    labels = ["server", "kind"]
    packets = CounterMetricFamily(
        "anyedge_balancer_packets", "service packets by the balancer's decision", labels=labels
    )
    octets = CounterMetricFamily(
        "anyedge_balancer_bytes", "service frame bytes by the balancer's decision", labels=labels
    )
    second = 0
    for c in lb.counters():  # only non-zero ones: 4 kinds x 256 servers would be noise
        packets.add_metric([str(c.server), c.kind], c.packets)
        octets.add_metric([str(c.server), c.kind], c.bytes)
        if c.kind == "second_hop":
            second += c.packets
    yield packets
    yield octets
    passes = CounterMetricFamily(
        "anyedge_balancer_second_hop_passes",
        f"packets sent on to a bucket's second hop (kinds: {', '.join(KINDS)})",
    )
    passes.add_metric([], second)
    yield passes


def _drops(dw: Dropwatch) -> Metric:
    drops = CounterMetricFamily(
        "anyedge_kernel_drops",
        "packets the kernel dropped, by enum skb_drop_reason (kfree_skb tracepoint)",
        labels=["reason"],
    )
    for reason, n in sorted(dw.drops().items()):
        drops.add_metric([reason], n)
    return drops


class Server:
    """An HTTP endpoint serving a registry, on a thread of this process."""

    def __init__(self, registry: CollectorRegistry, address: str, port: int) -> None:
        self.registry = registry
        self._httpd, self._thread = start_http_server(port, address, registry)
        host, port_ = self._httpd.server_address[:2]
        self.address = host.decode() if isinstance(host, bytes) else str(host)
        self.port = int(port_)

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve(collector: Collector, address: str = "127.0.0.1", port: int = DEFAULT_PORT) -> Server:
    """Serve ``collector`` (alone, in a registry of its own) on
    http://address:port/metrics; ``port=0`` picks a free one (``Server.port``)."""
    registry = CollectorRegistry()
    registry.register(collector)
    return Server(registry, address, port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m anyedge.edge.exporter",
        description="Serve the edge's BPF counters and the kernel's drop reasons to Prometheus.",
    )
    ap.add_argument("--address", default="127.0.0.1", help="listen address (default %(default)s)")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT, help="(default %(default)s)")
    ap.add_argument("--rules", help="an L4Drop rules file to load and put in force")
    ap.add_argument("--interface", help="attach that L4Drop here (needs --rules)")
    ap.add_argument("--mode", default="generic", choices=["generic", "native"])
    ap.add_argument("--no-dropwatch", action="store_true", help="no kernel drop reasons")
    args = ap.parse_args(argv)
    if args.interface and not args.rules:
        ap.error("--interface needs --rules")
    from ..errors import InputError
    from .rules import load_rules

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    l4 = dw = None
    try:
        if args.rules:
            l4 = L4Drop()
            l4.replace(load_rules(args.rules))
            if args.interface:
                l4.attach(args.interface, mode=args.mode)
        if not args.no_dropwatch:
            dw = Dropwatch()
        server = serve(EdgeCollector(l4drop=l4, dropwatch=dw), args.address, args.port)
        print(f"serving {server.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        server.close()
    except (BpfError, InputError, OSError) as e:
        print(f"anyedge.edge.exporter: {e}", file=sys.stderr)
        return 1
    finally:
        for prog in (l4, dw):
            if prog is not None:
                prog.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
