"""Choosing the edge's IPv6 MTU from the MSS clients advertise (the IPv6 MTU post).

Each client's SYN advertises an MSS; the MTU it believes in is ``MSS + 60`` over IPv6
(40 bytes of IPv6 header, 20 of TCP) or ``MSS + 40`` over IPv4.  A server whose route
MTU is ``m`` never needs Path MTU Discovery for a client that believes in at least
``m`` (and is right), so the **coverage** of ``m`` is the share of samples with
``MSS + overhead >= m``.  :func:`recommend` gives the largest MTU whose coverage meets a
target; the post chose 1,400, covering 93.2 % of its IPv6 connections.

Samples come as :class:`Samples` (distinct MSS values and their counts), read from CSV
(``mss`` and optional ``count`` columns; :func:`read_csv`) or from the SYNs in a pcap
(:func:`read_pcap`, through dpkt).  :func:`set_route_mtu` puts the chosen value on a
route in a namespace with pyroute2 (the route replaced with an ``mtu`` metric, its
gateway, device and metric kept).
"""

from __future__ import annotations

import csv
import ipaddress
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..errors import InputError

OVERHEAD = {4: 40, 6: 60}
MIN_MTU = {4: 576, 6: 1280}
MAIN_TABLE = 254


@dataclass(frozen=True)
class Samples:
    """Distinct advertised MSS values (ascending) and how many samples had each."""

    mss: npt.NDArray[np.int64]
    count: npt.NDArray[np.float64]

    @classmethod
    def of(cls, pairs: dict[int, float]) -> Samples:
        keys = sorted(k for k, v in pairs.items() if v > 0)
        return cls(np.array(keys, dtype=np.int64), np.array([pairs[k] for k in keys]))

    @property
    def total(self) -> float:
        return float(self.count.sum())

    def share(self, mss: int) -> float:
        """The share of samples advertising exactly ``mss``."""
        return float(self.count[self.mss == mss].sum() / self.total)

    def coverage(self, mtu: int, overhead: int = 60) -> float:
        """The share of samples whose advertised MTU (MSS + overhead) is ``>= mtu``."""
        return float(self.count[self.mss + overhead >= mtu].sum() / self.total)

    def curve(self, overhead: int = 60) -> list[tuple[int, float]]:
        """``(mtu, coverage)`` at each distinct advertised MTU, ascending."""
        return [(int(m) + overhead, self.coverage(int(m) + overhead, overhead)) for m in self.mss]


def recommend(samples: Samples, target: float, family: int = 6, ceiling: int = 1500) -> int:
    """The largest MTU (at most ``ceiling``, at least the family's minimum) whose coverage
    is at least ``target``; the minimum when none is."""
    overhead = OVERHEAD[family]
    best = MIN_MTU[family]
    for mtu in (int(m) + overhead for m in samples.mss):
        if best < mtu <= ceiling and samples.coverage(mtu, overhead) >= target:
            best = mtu
    if ceiling > best and samples.coverage(ceiling, overhead) >= target:
        best = ceiling
    return best


def read_csv(path: Path) -> Samples:
    """``mss[,count]`` rows with a header line; ``#`` lines are comments."""
    try:
        lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
    except OSError as e:
        raise InputError.one(path, "", f"cannot read: {e.strerror}") from e
    rows = list(csv.DictReader(lines))
    if not rows or "mss" not in rows[0]:
        raise InputError.one(path, "header", "a CSV with an 'mss' column is needed")
    pairs: dict[int, float] = {}
    for i, row in enumerate(rows):
        try:
            mss = int(row["mss"])
            count = float(row.get("count") or 1)
        except (TypeError, ValueError):
            msg = "mss must be an integer, count a number"
            raise InputError.one(path, f"row {i + 1}", msg) from None
        if not 0 < mss < 65536 or count < 0:
            raise InputError.one(path, f"row {i + 1}", "mss must be 1-65535, count >= 0")
        pairs[mss] = pairs.get(mss, 0.0) + count
    if not any(v > 0 for v in pairs.values()):
        raise InputError.one(path, "", "no samples")
    return Samples.of(pairs)


def _syn_mss(tcp: object) -> int | None:
    import dpkt

    if not isinstance(tcp, dpkt.tcp.TCP) or not tcp.flags & dpkt.tcp.TH_SYN:
        return None
    for kind, data in dpkt.tcp.parse_opts(tcp.opts):
        if kind == dpkt.tcp.TCP_OPT_MSS and len(data) == 2:
            return int.from_bytes(data, "big")
    return None


def read_pcap(path: Path, family: int = 6) -> Samples:
    """The MSS of every client SYN (SYN without ACK) of ``family`` in a pcap file
    (Ethernet or raw IP link type)."""
    import dpkt

    pairs: dict[int, float] = {}
    try:
        with path.open("rb") as f:
            reader = dpkt.pcap.Reader(f)
            raw = reader.datalink() in (dpkt.pcap.DLT_RAW, 101)
            for _ts, buf in reader:
                ip = dpkt.ip.IP(buf) if raw and buf[0] >> 4 == 4 else None
                if raw and buf[0] >> 4 == 6:
                    ip = dpkt.ip6.IP6(buf)
                if not raw:
                    ip = dpkt.ethernet.Ethernet(buf).data
                want = dpkt.ip.IP if family == 4 else dpkt.ip6.IP6
                if not isinstance(ip, want) or ip.data is None:
                    continue
                tcp = ip.data
                if getattr(tcp, "flags", 0) & dpkt.tcp.TH_ACK:
                    continue
                mss = _syn_mss(tcp)
                if mss is not None:
                    pairs[mss] = pairs.get(mss, 0.0) + 1
    except OSError as e:
        raise InputError.one(path, "", f"cannot read: {e.strerror}") from e
    except (ValueError, dpkt.dpkt.Error) as e:
        raise InputError.one(path, "", f"not a pcap file: {e}") from e
    if not pairs:
        raise InputError.one(path, "", f"no IPv{family} SYN with an MSS option")
    return Samples.of(pairs)


def set_route_mtu(destination: str, mtu: int, family: int = 6, netns: str | None = None) -> str:
    """Set ``mtu`` on the main table's route to ``destination`` (``default`` or a
    prefix) in ``netns`` (None: here), keeping its gateway, device and metric, through
    pyroute2 (``RTM_NEWROUTE`` with ``NLM_F_REPLACE``); returns the route as ``ip``
    now shows it.  :class:`LookupError` when there is no such route."""
    from pyroute2 import IPRoute, NetNS  # here: ``mtu choose`` starts without it

    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    try:
        net = ipaddress.ip_network(
            ("::/0" if family == 6 else "0.0.0.0/0") if destination == "default" else destination,
            strict=False,
        )
    except ValueError:
        raise LookupError(f"not an IPv{family} prefix: {destination}") from None
    if net.version != family:
        raise LookupError(f"not an IPv{family} prefix: {destination}")
    addr, plen = str(net.network_address), net.prefixlen
    with NetNS(netns) if netns else IPRoute() as ipr:
        routes = [
            r
            for r in ipr.route("dump", family=af)
            if r["dst_len"] == plen
            and r.get("table") == MAIN_TABLE
            and (plen == 0 or r.get("dst") == addr)
        ]
        if not routes:
            raise LookupError(f"no IPv{family} route to {destination}")
        r = routes[0]
        change: dict[str, object] = {"family": af, "dst": f"{addr}/{plen}", "metrics": {"mtu": mtu}}
        for key in ("gateway", "oif", "priority"):
            if r.get(key) is not None:
                change[key] = r.get(key)
        ipr.route("replace", **change)
    pre = ["ip", "-n", netns] if netns else ["ip"]
    fam = "-6" if family == 6 else "-4"
    return subprocess.run(
        [*pre, fam, "route", "show", destination], capture_output=True, text=True
    ).stdout.strip()
