"""Path MTU discovery behind ECMP: which server must see each Packet Too Big.

A router that cannot forward a server's large packet answers the packet's source — the
anycast address — with an ICMPv4 "fragmentation needed" (type 3 code 4) or ICMPv6
"Packet Too Big" (type 2).  The site's ECMP route hashes that ICMP packet on its *own*
addresses, so it reaches some server of the site, usually not the one that holds the
connection, and the connection stalls: a black hole (the 2015 and 2019 ECMP posts).

Every server runs ``anyedge pmtud``; an nft rule copies each PTB that arrives *unicast*
to it (NFLOG, :mod:`.nflog`); this module decides what to do with it, with no I/O
(:mod:`.pmtud_daemon` reads and sends):

* **broadcast** (cloudflare/pmtud's way): send the packet unchanged to the Ethernet
  broadcast address of the site's segment, so every server's kernel sees it and the one
  holding the flow lowers its path MTU.  N servers: N - 1 copies per PTB.
* **flow**: read the packet the PTB quotes (server → client), turn it round into the
  client → server flow the load balancer hashed, look the hash up in the balancer's
  :class:`~anyedge.balance.Table` and send one copy to the first hop's MAC — none if
  that is this server (its kernel already has it).  While a bucket moves, its second
  hop may hold a TCP connection too (the balancer passes TCP it has no socket for on to
  the second hop) and gets a copy as well; UDP is never passed on, so a UDP PTB goes to
  the first hop alone.  The table must be the one the balancer has *now*:
  :mod:`.pmtud_site` follows it.

**Loop prevention.**  The nft rule logs only ``pkttype host`` frames, so broadcast
copies are never logged again; a unicast copy reaches the owner, which finds itself the
owner and stops.  Besides, a frame whose Ethernet source is one of the site's servers is
a copy and never sent on (counted ``relayed``).

**Rate limits** (cloudflare/pmtud's defaults): a token bucket per ICMP source address
(1.1 per second) and one per interface (10 per second), each holding at most
``max(1, rate)`` tokens; a PTB that finds either empty is dropped (``rate_source``,
``rate_iface``).  Time is passed in (``now``), so the limits are tested without sleeping.

Counters (Prometheus, ``anyedge_pmtud_*``) are kept by the caller from the
:class:`Decision` each PTB gets: its ``reason`` and the MACs to send to.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy.typing as npt

from ..balance.table import NONE

BROADCAST = b"\xff" * 6
ICMP4, ICMP6, TCP, UDP = 1, 58, 6, 17
MODES = ("broadcast", "flow")
REASONS = ("sent", "local", "rate_source", "rate_iface", "relayed", "not_ptb", "no_flow")
SRC_RATE = 1.1
IFACE_RATE = 10.0
M32 = 0xFFFF_FFFF
MAX_SOURCES = 65536  # source buckets kept (least recently used dropped first)


@dataclass(frozen=True, slots=True)
class Ptb:
    """A Packet Too Big: who sent it, the MTU it names, and the flow it quotes as the
    client → server 5-tuple the load balancer hashes (addresses as integers)."""

    family: int  # 4 or 6
    source: int  # the ICMP packet's source (the router)
    mtu: int
    client: int
    server: int  # the anycast address
    client_port: int
    server_port: int
    proto: int


def _ports(proto: int, l4: bytes) -> tuple[int, int] | None:
    if proto not in (TCP, UDP) or len(l4) < 4:
        return None
    sport, dport = struct.unpack_from("!HH", l4)
    return sport, dport


def parse_ptb(packet: bytes) -> Ptb | None:
    """The PTB in an IP packet (from its IP header on), or ``None`` when it is not an
    ICMPv4 frag-needed / ICMPv6 Packet Too Big quoting a TCP or UDP packet."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0xF) * 4
        if len(packet) < ihl + 8 or packet[9] != ICMP4 or packet[ihl] != 3 or packet[ihl + 1] != 4:
            return None
        source = int.from_bytes(packet[12:16], "big")
        mtu = struct.unpack_from("!H", packet, ihl + 6)[0]
        inner = packet[ihl + 8 :]
        if len(inner) < 20 or inner[0] >> 4 != 4:
            return None
        iihl = (inner[0] & 0xF) * 4
        ports = _ports(inner[9], inner[iihl:])
        if ports is None:
            return None
        src, dst = int.from_bytes(inner[12:16], "big"), int.from_bytes(inner[16:20], "big")
        return Ptb(4, source, mtu, dst, src, ports[1], ports[0], inner[9])
    if version == 6:
        if len(packet) < 48 or packet[6] != ICMP6 or packet[40] != 2 or packet[41] != 0:
            return None
        source = int.from_bytes(packet[8:24], "big")
        mtu = struct.unpack_from("!I", packet, 44)[0]
        inner = packet[48:]
        if len(inner) < 40 or inner[0] >> 4 != 6:
            return None
        ports = _ports(inner[6], inner[40:])
        if ports is None:
            return None
        src, dst = int.from_bytes(inner[8:24], "big"), int.from_bytes(inner[24:40], "big")
        return Ptb(6, source, mtu, dst, src, ports[1], ports[0], inner[6])
    return None


def _word(address: int, family: int) -> int:
    """An address as the hash's 32-bit word (IPv6: its four words XOR-ed, ``fold6``)."""
    if family == 4:
        return address
    return (address >> 96 ^ address >> 64 ^ address >> 32 ^ address) & M32


def _rol(x: int, k: int) -> int:
    return (x << k | x >> (32 - k)) & M32


def jhash_3words(a: int, b: int, c: int, initval: int) -> int:
    """:func:`anyedge.balance.jhash_3words` on one set of Python integers: one PTB at a
    time, without numpy's per-call cost (a hundred times faster here)."""
    iv = (initval + 0xDEADBEEF + 12) & M32
    a, b, c = (a + iv) & M32, (b + iv) & M32, (c + iv) & M32
    c ^= b
    c = (c - _rol(b, 14)) & M32
    a ^= c
    a = (a - _rol(c, 11)) & M32
    b ^= a
    b = (b - _rol(a, 25)) & M32
    c ^= b
    c = (c - _rol(b, 16)) & M32
    a ^= c
    a = (a - _rol(c, 4)) & M32
    b ^= a
    b = (b - _rol(a, 14)) & M32
    c ^= b
    return (c - _rol(b, 24)) & M32


def flow_of(ptb: Ptb, seed: int = 0) -> int:
    """The load balancer's hash (:func:`anyedge.balance.flow_hash`) of the flow the PTB
    quotes, turned round to client → server as the balancer saw it."""
    ports = ptb.client_port << 16 | ptb.server_port
    a, b = _word(ptb.client, ptb.family), _word(ptb.server, ptb.family)
    return jhash_3words(a, b, ports, (seed & M32) ^ ptb.proto)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst``; time given by the caller."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, now: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = max(1.0, rate) if burst is None else burst
        self.tokens = self.burst
        self.last = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class Decision:
    reason: str  # one of REASONS
    macs: tuple[bytes, ...] = ()  # where to send the packet (empty: nowhere)
    ptb: Ptb | None = None


class Buckets(Protocol):
    """What flow mode needs of a bucket table: per bucket its first and second hop
    (``-1``: none) — a :class:`~anyedge.balance.Table`, or a
    :class:`~anyedge.edge.balancer_view.Snapshot` read from the running balancer."""

    @property
    def first(self) -> npt.NDArray[Any]: ...
    @property
    def second(self) -> npt.NDArray[Any]: ...
    @property
    def buckets(self) -> int: ...


@dataclass
class Site:
    """What a server knows of its site: its own MAC and, for flow mode, every server's
    MAC by table index (``b""``: no server there) and the balancer's table and hash
    seed."""

    own_mac: bytes
    macs: Sequence[bytes] = ()
    table: Buckets | None = None
    seed: int = 0


@dataclass
class Pmtud:
    """The decision for each logged PTB on one interface."""

    mode: str
    site: Site
    src_rate: float = SRC_RATE
    iface_rate: float = IFACE_RATE
    _sources: OrderedDict[tuple[int, int], TokenBucket] = field(
        init=False, default_factory=OrderedDict
    )
    _iface: TokenBucket | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.src_rate <= 0 or self.iface_rate <= 0:
            raise ValueError("rates must be positive")
        self.replace_site(self.site)

    def replace_site(self, site: Site) -> None:
        """Decide by ``site`` from the next PTB on (a new table: servers drained, added,
        re-weighted).  The rate limits' buckets are kept."""
        if self.mode == "flow" and (site.table is None or not site.macs):
            raise ValueError("flow mode needs the site's servers and the balancer's table")
        self.site = site
        self._servers = {m for m in site.macs if m and m != site.own_mac}

    def targets(self, ptb: Ptb) -> tuple[bytes, ...] | None:
        """Where the PTB must go: the broadcast address, or the flow's owners other than
        this server — its bucket's first hop and, for TCP, second hop (empty: this server
        is the only one); ``None`` when the table names a server without a MAC."""
        if self.mode == "broadcast":
            return (BROADCAST,)
        assert self.site.table is not None
        table = self.site.table
        b = flow_of(ptb, self.site.seed) & (table.buckets - 1)
        first, second = int(table.first[b]), int(table.second[b])
        hops = [first] + ([second] if second != NONE and ptb.proto == TCP else [])
        macs: list[bytes] = []
        for hop in hops:
            if not 0 <= hop < len(self.site.macs):
                return None
            mac = self.site.macs[hop]
            if not mac:
                return None
            if mac != self.site.own_mac and mac not in macs:
                macs.append(mac)
        return tuple(macs)

    def decide(self, packet: bytes, now: float, source_mac: bytes = b"") -> Decision:
        """The decision for one logged packet (IP header on) that arrived at ``now``
        (seconds, any monotonic clock) from Ethernet address ``source_mac``."""
        ptb = parse_ptb(packet)
        if ptb is None:
            return Decision("not_ptb")
        if source_mac and source_mac in self._servers:
            return Decision("relayed", ptb=ptb)
        macs = self.targets(ptb)
        if macs is None:
            return Decision("no_flow", ptb=ptb)
        if not macs:
            return Decision("local", ptb=ptb)
        key = (ptb.family, ptb.source)
        bucket = self._sources.get(key)
        if bucket is None:
            bucket = self._sources[key] = TokenBucket(self.src_rate, now)
            if len(self._sources) > MAX_SOURCES:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(key)
        if not bucket.take(now):
            return Decision("rate_source", ptb=ptb)
        if self._iface is None:
            self._iface = TokenBucket(self.iface_rate, now)
        if not self._iface.take(now):
            return Decision("rate_iface", ptb=ptb)
        return Decision("sent", macs, ptb)
