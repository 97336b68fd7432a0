"""An ESP endpoint's security associations: per packet, what the IO layer calls.

:class:`EspEndpoint` holds, for every installed Child SA (:class:`~anyedge.proto.ike.
outputs.ChildSA`, from the local IKE responder or from the store), an inbound state
(key, replay window, counters) by SPI and an outbound state (key, next sequence
number) chosen by the inner packet's destination against the SA's remote selectors.

Outbound sequence numbers are partitioned between the servers that share an SA: with
``servers`` = n and ``index`` = k, this server sends only numbers k + 1 + n*c, so no
two servers ever use the same number (and the GCM IV, which is the sequence number,
never repeats under the key).  The counter c is anchored to time: each packet takes
c = max(previous c + 1, (now - SA created) * ``rate``).  A server that takes over an SA
from another (the anycast route moved) therefore starts *ahead* of what the other one
sent, as long as that one sent no faster than ``rate`` packets per second on average,
and the peer's replay window accepts it at once.  When two servers send on one SA at
the same time their numbers interleave only roughly, and the peer drops what falls more
than its window behind (RFC 6311 §3 describes the problem; docs/ipsec.md says what the
edge does about it).  Numbers never wrap: past 2**32 - 1 the packet is not sent and
``exhausted`` counts it (the SA must be rekeyed before).

"""

from __future__ import annotations

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
    exhausted: int = 0


@dataclass(slots=True)
class Inbound:
    child: ChildSA
    key: GcmKey
    window: ReplayWindow = field(default_factory=ReplayWindow)


@dataclass(slots=True)
class Outbound:
    child: ChildSA
    key: GcmKey
    ranges: list[tuple[int, int, int]]
    counter: int = -1


def _ranges(child: ChildSA) -> list[tuple[int, int, int]]:
    """(first, last, address length) of each remote selector."""
    return [
        (int.from_bytes(s.start, "big"), int.from_bytes(s.end, "big"), len(s.start))
        for s in child.ts_remote
    ]


RATE = 1000.0  # packets per second per SA that the time-anchored counter allows for


class EspEndpoint:
    def __init__(self, index: int = 0, servers: int = 1, rate: float = RATE) -> None:
        if not 0 <= index < servers:
            raise ValueError(f"server index {index} of {servers}")
        self.index, self.servers, self.rate = index, servers, rate
        self.inbound: dict[int, Inbound] = {}
        self.outbound: dict[int, Outbound] = {}  # by spi_in of the child
        self.counters = EspCounters()

    def install(self, child: ChildSA) -> None:
        """Install a Child SA; a rekeyed one's successor takes over sending.  Installing
        one that is already here (this server made it and the store brings it back)
        keeps its replay window and counter."""
        have = self.inbound.get(child.spi_in)
        if have is not None and have.child == child:
            return
        self.inbound[child.spi_in] = Inbound(child, GcmKey(child.key_in))
        if child.replaces is not None:
            self.outbound.pop(child.replaces, None)
        self.outbound[child.spi_in] = Outbound(child, GcmKey(child.key_out), _ranges(child))

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
        if len(inner) < 20:
            return None
        version = inner[0] >> 4
        if version == 4:
            dst, size = int.from_bytes(inner[16:20], "big"), 4
        elif version == 6 and len(inner) >= 40:
            dst, size = int.from_bytes(inner[24:40], "big"), 16
        else:
            return None
        for out in self.outbound.values():
            for lo, hi, n in out.ranges:
                if n == size and lo <= dst <= hi:
                    return out
        return None

    def encrypt(self, inner: bytes, now: float) -> tuple[ChildSA, bytes] | None:
        """(the SA used, the ESP packet) for an inner packet, or None (no SA covers it,
        or its sequence numbers are used up)."""
        out = self.route(inner)
        if out is None:
            self.counters.no_sa += 1
            return None
        out.counter = max(out.counter + 1, int((now - out.child.created) * self.rate))
        seq = self.index + 1 + self.servers * out.counter
        if seq > 0xFFFFFFFF:
            self.counters.exhausted += 1
            return None
        self.counters.encrypted += 1
        return out.child, seal(out.key, out.child.spi_out, seq, inner)
