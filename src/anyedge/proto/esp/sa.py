"""An ESP endpoint's security associations: per packet, what the IO layer calls.

:class:`EspEndpoint` holds, for every installed Child SA (:class:`~anyedge.proto.ike.
outputs.ChildSA`, from the local IKE responder or from the store), an inbound state
(key, replay window, counters) by SPI and an outbound state (key, next sequence
number) chosen by the inner packet's destination against the SA's remote selectors.

Outbound sequence numbers are partitioned between the servers that share an SA: with
``servers`` = n and ``index`` = k, this server sends k + 1, k + 1 + n, k + 1 + 2n, ...
so no two servers ever use the same number (and the GCM IV, which is the sequence
number, never repeats under the key).  A peer's replay window sees the servers'
streams interleaved; if one server sends much more than another, the slower one's
numbers fall more than the window behind and are dropped (RFC 6311 §3 discusses the
problem).  The docs say how the lab handles this (docs/ipsec.md).

Inbound, each server keeps its own replay window: a packet replayed to the *same*
server is dropped and counted; a copy replayed to another site is not caught (the
windows are not shared between servers, a limit the docs state).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..ike.outputs import ChildSA
from .packet import EspError, GcmKey, open_packet, peek, seal
from .replay import ReplayWindow


@dataclass(slots=True)
class EspCounters:
    decrypted: int = 0
    encrypted: int = 0
    replayed: int = 0
    bad_icv: int = 0
    unknown_spi: int = 0
    no_sa: int = 0
    selector_mismatch: int = 0


@dataclass(slots=True)
class Inbound:
    child: ChildSA
    key: GcmKey
    window: ReplayWindow = field(default_factory=ReplayWindow)


@dataclass(slots=True)
class Outbound:
    child: ChildSA
    key: GcmKey
    ranges: list[tuple[int, int]]
    next_seq: int


def _ranges(child: ChildSA) -> list[tuple[int, int]]:
    return [(int.from_bytes(s.start, "big"), int.from_bytes(s.end, "big")) for s in child.ts_remote]


class EspEndpoint:
    def __init__(self, index: int = 0, servers: int = 1) -> None:
        if not 0 <= index < servers:
            raise ValueError(f"server index {index} of {servers}")
        self.index, self.servers = index, servers
        self.inbound: dict[int, Inbound] = {}
        self.outbound: dict[int, Outbound] = {}  # by spi_in of the child
        self.counters = EspCounters()

    def install(self, child: ChildSA) -> None:
        """Install (or replace) a Child SA; a rekeyed one's successor takes over sending."""
        self.inbound[child.spi_in] = Inbound(child, GcmKey(child.key_in))
        if child.replaces is not None:
            self.outbound.pop(child.replaces, None)
        self.outbound[child.spi_in] = Outbound(child, GcmKey(child.key_out), _ranges(child), self.index + 1)

    def remove(self, spi_in: int) -> None:
        self.inbound.pop(spi_in, None)
        self.outbound.pop(spi_in, None)

    def decrypt(self, packet: bytes) -> bytes | None:
        """The inner packet, or None (counted: unknown SPI, replay, bad ICV)."""
        try:
            spi, seq = peek(packet)
        except EspError:
            self.counters.bad_icv += 1
            return None
        sa = self.inbound.get(spi)
        if sa is None:
            self.counters.unknown_spi += 1
            return None
        if not sa.window.check(seq):
            self.counters.replayed += 1
            return None
        try:
            inner, _ = open_packet(sa.key, packet)
        except EspError:
            self.counters.bad_icv += 1
            return None
        sa.window.accept(seq)
        self.counters.decrypted += 1
        return inner

    def route(self, inner: bytes) -> Outbound | None:
        """The outbound SA whose remote selectors cover ``inner``'s destination."""
        try:
            dst = int(ipaddress.ip_address(inner[16:20] if inner[0] >> 4 == 4 else inner[24:40]))
        except (ValueError, IndexError):
            return None
        for out in self.outbound.values():
            if any(lo <= dst <= hi for lo, hi in out.ranges):
                return out
        return None

    def encrypt(self, inner: bytes) -> tuple[ChildSA, bytes] | None:
        """(the SA used, the ESP packet) for an inner packet, or None (no SA covers it)."""
        out = self.route(inner)
        if out is None:
            self.counters.no_sa += 1
            return None
        seq = out.next_seq
        out.next_seq += self.servers
        self.counters.encrypted += 1
        return out.child, seal(out.key, out.child.spi_out, seq, inner)
