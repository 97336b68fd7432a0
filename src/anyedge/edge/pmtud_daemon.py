"""The pmtud daemon: nft rule in, NFLOG read, decision made, frames sent, counters kept.

One process per server and interface (``anyedge pmtud run``):

1. installs ``table inet anyedge_pmtud`` (:func:`ruleset`): on ``IFACE``, every ICMPv4
   frag-needed and ICMPv6 Packet Too Big that arrived as a *unicast* frame is logged to
   NFLOG group ``GROUP`` (and goes on into the stack as usual);
2. reads the group (:class:`~.nflog.NflogSocket`, batching off), asks
   :class:`~.pmtud.Pmtud` what to do with each packet, and sends the packet unchanged
   in a new Ethernet frame (source: the interface's MAC) to each address it names, on an
   ``AF_PACKET`` socket bound to the interface;
3. counts everything in Prometheus counters (``anyedge_pmtud_packets_total{reason}``,
   ``anyedge_pmtud_copies_total``, ``anyedge_pmtud_handling_seconds``,
   ``anyedge_pmtud_overruns_total`` when the socket's buffer overflowed), served on
   ``--metrics`` when given, and prints them as one JSON line on exit;
4. on SIGTERM or SIGINT removes its table and exits 0.

In flow mode the table comes from a source of :mod:`.pmtud_site` — the XDP balancer
running on this server (``--table balancer``) or the site file (``--site``) — polled
before every decision and every 0.2 s when idle, so the daemon follows the balancer's
changes; SIGHUP reads the site file again.  A source that fails to load keeps the old
table (logged on stderr); loads are counted in ``anyedge_pmtud_table_reloads_total``.
"""

from __future__ import annotations

import errno
import json
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from .nflog import NflogSocket
from .pmtud import REASONS, Pmtud, Site
from .pmtud_site import SOURCE_ERRORS, FileSource, Source, describe
from .pmtud_site import interface_mac as interface_mac
from .pmtud_site import load_site as load_site

TABLE = "anyedge_pmtud"
ETH_P_ALL = 0x0003
ETHERTYPE = {4: b"\x08\x00", 6: b"\x86\xdd"}


def ruleset(iface: str, group: int) -> str:
    """The nft table that logs unicast PTBs arriving on ``iface`` to ``group``."""
    on = f'iifname "{iface}"'
    match = f"{on} meta pkttype host"
    return (
        f"table inet {TABLE} {{\n"
        "  counter arrived {}\n"
        "  chain input {\n"
        "    type filter hook input priority -10; policy accept;\n"
        f"    {on} icmp type destination-unreachable icmp code 4 counter name arrived\n"
        f"    {on} icmpv6 type packet-too-big counter name arrived\n"
        f"    {match} icmp type destination-unreachable icmp code 4 log group {group}\n"
        f"    {match} icmpv6 type packet-too-big log group {group}\n"
        "  }\n"
        "}\n"
    )


def arrived() -> int:
    """PTB frames that arrived on the interface, unicast or not (the table's counter)."""
    p = subprocess.run(
        ["nft", "-j", "list", "counter", "inet", TABLE, "arrived"], capture_output=True, text=True
    )
    if p.returncode != 0:
        return 0
    for item in json.loads(p.stdout)["nftables"]:
        if "counter" in item:
            return int(item["counter"]["packets"])
    return 0


def _nft(script: str) -> None:
    p = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"nft: {p.stderr.strip()}")


def install(iface: str, group: int) -> None:
    remove()
    _nft(ruleset(iface, group))


def remove() -> None:
    subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True)


@dataclass
class Metrics:
    registry: CollectorRegistry
    packets: Counter
    copies: Counter
    handling: Histogram
    overruns: Counter
    reloads: Counter

    @classmethod
    def create(cls, mode: str, iface: str) -> Metrics:
        r = CollectorRegistry()
        labels = ["mode", "iface"]
        m = cls(
            r,
            Counter(
                "anyedge_pmtud_packets",
                "PTBs logged, by what was done",
                [*labels, "reason"],
                registry=r,
            ),
            Counter("anyedge_pmtud_copies", "Frames sent (one per target)", labels, registry=r),
            Histogram(
                "anyedge_pmtud_handling_seconds",
                "From reading a PTB to its frames sent",
                labels,
                registry=r,
                buckets=(1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 0.1),
            ),
            Counter(
                "anyedge_pmtud_overruns",
                "Times the NFLOG socket overflowed (PTBs lost)",
                labels,
                registry=r,
            ),
            Counter(
                "anyedge_pmtud_table_reloads",
                "Times a changed table was loaded (ok) or failed to load, old one kept",
                [*labels, "source", "result"],
                registry=r,
            ),
        )
        for reason in REASONS:
            m.packets.labels(mode, iface, reason)
        m.copies.labels(mode, iface)
        m.overruns.labels(mode, iface)
        return m


def run(
    iface: str,
    group: int,
    mode: str,
    site: Site,
    *,
    src_rate: float,
    iface_rate: float,
    source: Source | None = None,
    metrics_port: int | None = None,
    on_ready: Any = None,
) -> dict[str, int]:
    """Serve until SIGTERM/SIGINT; returns the counts by reason (and ``copies``,
    ``overruns``, ``reloads``, ``reload_failures``).  With a ``source``, ``site`` is
    replaced whenever the source has a new table."""
    core = Pmtud(mode, site, src_rate=src_rate, iface_rate=iface_rate)
    metrics = Metrics.create(mode, iface)
    counts = dict.fromkeys(REASONS, 0) | {
        "copies": 0,
        "overruns": 0,
        "reloads": 0,
        "reload_failures": 0,
    }
    if source is not None:
        for result in ("ok", "failed"):
            metrics.reloads.labels(mode, iface, source.name, result)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    def _follow(now: float) -> None:
        if source is None:
            return
        try:
            new = source.poll(now)
            if new is None:
                return
            core.replace_site(new)  # ValueError: no servers in it (the old site stays)
        except (*SOURCE_ERRORS, ValueError) as e:
            counts["reload_failures"] += 1
            metrics.reloads.labels(mode, iface, source.name, "failed").inc()
            print(f"anyedge pmtud: {describe(e)}; keeping the table in force", file=sys.stderr)
            return
        counts["reloads"] += 1
        metrics.reloads.labels(mode, iface, source.name, "ok").inc()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if isinstance(source, FileSource):
        signal.signal(signal.SIGHUP, lambda *_: source.hangup())
    if metrics_port is not None:
        start_http_server(metrics_port, registry=metrics.registry)
    out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    out.bind((iface, 0))
    src = site.own_mac
    try:
        with NflogSocket(group) as log:
            install(iface, group)
            try:
                if on_ready:
                    on_ready()
                while not stop:
                    ready, _, _ = select.select([log], [], [], 0.2)
                    if not ready:
                        _follow(time.monotonic())
                        continue
                    try:
                        packets = log.receive()
                    except OSError as e:  # ENOBUFS: the kernel dropped what we were slow for
                        if e.errno != errno.ENOBUFS:
                            raise
                        counts["overruns"] += 1
                        metrics.overruns.labels(mode, iface).inc()
                        continue
                    for pkt in packets:
                        t0 = time.monotonic()
                        _follow(t0)
                        d = core.decide(pkt.payload, t0, pkt.source_mac)
                        if d.reason == "sent" and d.ptb is not None:
                            for mac in d.macs:
                                out.send(mac + src + ETHERTYPE[d.ptb.family] + pkt.payload)
                            counts["copies"] += len(d.macs)
                            metrics.copies.labels(mode, iface).inc(len(d.macs))
                            metrics.handling.labels(mode, iface).observe(time.monotonic() - t0)
                        counts[d.reason] += 1
                        metrics.packets.labels(mode, iface, d.reason).inc()
            finally:
                remove()
    finally:
        out.close()
    return counts
