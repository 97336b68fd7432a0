"""Socket dispatch with sk_lookup: the loader of ``bpf/sk_dispatch.bpf.c``.

::

    from anyedge.edge.dispatch import Dispatch, Range

    with Dispatch() as d:
        d.register(1, listener)                  # a listening TCP socket, 127.0.0.1:9000
        d.add(Range("tcp", "203.0.113.0/24", (7000, 7999), service=1))
        d.attach(netns="NAME")                   # None: the caller's namespace
        ...                                      # 203.0.113.77:7321 reaches listener
        print(d.counters())                      # {1: ServiceCounter(assigned=1, ...)}

A range maps (protocol, destination prefix, destination port range) to a service id;
a service id names one socket (``register``).  When the kernel looks for the socket of
a TCP SYN or a UDP datagram in the namespace, the first range that matches its
destination hands it to that service's socket, wherever the socket is bound.  What no
range matches, or what matches a service without a socket, meets the kernel's
ordinary lookup.  Range changes are double-buffered (:meth:`Dispatch.stage`,
:meth:`Dispatch.commit`): a lookup sees the old ranges or the new, never a mixture.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..adapters.netns import NETNS_DIR
from . import build
from .libbpf import BpfObject, Loaded, check_size, possible_cpus

PROGRAM = "sk_dispatch"
MAX_RANGES = 64
MAX_SERVICES = 256
PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


class RangeRecord(ctypes.Structure):
    """``struct skd_range``, byte for byte."""

    _fields_ = (
        ("addr", ctypes.c_uint8 * 16),
        ("mask", ctypes.c_uint8 * 16),
        ("port_min", ctypes.c_uint16),
        ("port_max", ctypes.c_uint16),
        ("service", ctypes.c_uint32),
        ("family", ctypes.c_uint8),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 6),
    )


class RangeSet(ctypes.Structure):
    """``struct skd_set``."""

    _fields_ = (
        ("count", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("ranges", RangeRecord * MAX_RANGES),
    )


class _Stat(ctypes.Structure):
    _fields_ = (
        ("assigned", ctypes.c_uint64),
        ("missing", ctypes.c_uint64),
        ("refused", ctypes.c_uint64),
    )


class LookupContext(ctypes.Structure):
    """``struct bpf_sk_lookup``, the program's context (uapi/linux/bpf.h)."""

    _fields_ = (
        ("cookie", ctypes.c_uint64),  # out: the cookie of the socket assigned, or 0
        ("family", ctypes.c_uint32),
        ("protocol", ctypes.c_uint32),
        ("remote_ip4", ctypes.c_uint8 * 4),
        ("remote_ip6", ctypes.c_uint8 * 16),
        ("remote_port", ctypes.c_uint16),  # network byte order
        ("_pad", ctypes.c_uint16),
        ("local_ip4", ctypes.c_uint8 * 4),
        ("local_ip6", ctypes.c_uint8 * 16),
        ("local_port", ctypes.c_uint32),  # host byte order
        ("ingress_ifindex", ctypes.c_uint32),
    )


@dataclass(frozen=True)
class Range:
    """Destinations one service's socket takes: ``protocol`` (``tcp`` or ``udp``),
    ``prefix`` (``203.0.113.0/24``, ``2001:db8::/64``, or one address) and ``ports``
    (inclusive, ``(7000, 7999)``, or one port)."""

    protocol: str
    prefix: str
    ports: tuple[int, int] | int
    service: int

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol is 'tcp' or 'udp' (got {self.protocol!r})")
        ipaddress.ip_network(self.prefix)  # ValueError, with host bits set too
        low, high = self.port_range
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"ports are 1 <= low <= high <= 65535 (got {self.ports!r})")
        if not 0 <= self.service < MAX_SERVICES:
            raise ValueError(f"service is 0 to {MAX_SERVICES - 1} (got {self.service})")

    @property
    def port_range(self) -> tuple[int, int]:
        return (self.ports, self.ports) if isinstance(self.ports, int) else self.ports

    def record(self) -> RangeRecord:
        net = ipaddress.ip_network(self.prefix)
        rec = RangeRecord()
        addr = net.network_address.packed
        mask = net.netmask.packed
        ctypes.memmove(rec.addr, addr, len(addr))
        ctypes.memmove(rec.mask, mask, len(mask))
        rec.port_min, rec.port_max = self.port_range
        rec.service = self.service
        rec.family = socket.AF_INET if net.version == 4 else socket.AF_INET6
        rec.proto = PROTOCOLS[self.protocol]
        return rec


@dataclass(frozen=True)
class ServiceCounter:
    """What became of the lookups one service's ranges matched (summed over CPUs):
    taken by its socket, passed on for want of a socket, or refused by the kernel
    (a socket of the other protocol, a TCP socket not listening)."""

    assigned: int
    missing: int
    refused: int


class Dispatch(Loaded):
    """One loaded copy of the sk_lookup program, its ranges, sockets and links."""

    def __init__(self, obj_path: str | Path | None = None) -> None:
        self.obj = BpfObject(obj_path or build.object_path(PROGRAM))
        self.program = self.obj.program(PROGRAM)
        self._sets = (self.obj.map("skd_set0"), self.obj.map("skd_set1"))
        self._active_map = self.obj.map("skd_active")
        self._sockets = self.obj.map("skd_sockets")
        self._stats = self.obj.map("skd_stats")
        for m in self._sets:
            check_size(m, ctypes.sizeof(RangeSet), "struct skd_set", "dispatch.py")
        check_size(self._stats, ctypes.sizeof(_Stat), "struct skd_stat", "dispatch.py")
        self._ncpu = possible_cpus()
        self._active = 0  # skd_set0, empty, in force from the start
        self._ranges: list[tuple[Range, ...]] = [(), ()]
        self._staged = False
        self._links: list[int] = []
        self._registered: set[int] = set()

    # -- ranges ----------------------------------------------------------------------

    @property
    def ranges(self) -> tuple[Range, ...]:
        """The ranges in force, in the order they are tried."""
        return self._ranges[self._active]

    def stage(self, ranges: Iterable[Range]) -> None:
        """Write ``ranges`` into the set not in force; lookups keep meeting the ranges
        in force until :meth:`commit`."""
        ranges = tuple(ranges)
        if len(ranges) > MAX_RANGES:
            raise ValueError(f"at most {MAX_RANGES} ranges, got {len(ranges)}")
        value = RangeSet(count=len(ranges))
        for i, r in enumerate(ranges):
            value.ranges[i] = r.record()
        spare = 1 - self._active
        self._sets[spare].update(ctypes.c_uint32(0), value)
        self._ranges[spare] = ranges
        self._staged = True

    def commit(self) -> None:
        """Put the staged ranges in force for every lookup from now on."""
        if not self._staged:
            raise RuntimeError("nothing staged: call stage() first")
        spare = 1 - self._active
        self._active_map.update(ctypes.c_uint32(0), ctypes.c_uint32(self._sets[spare].fd))
        self._active = spare
        self._staged = False

    def replace(self, ranges: Iterable[Range]) -> None:
        self.stage(ranges)
        self.commit()

    def add(self, r: Range) -> None:
        """Add ``r`` after the ranges in force (an equal range already there: nothing)."""
        if r not in self.ranges:
            self.replace([*self.ranges, r])

    def remove(self, r: Range) -> None:
        """Take ``r`` out of force (KeyError if it is not in force)."""
        if r not in self.ranges:
            raise KeyError(r)
        self.replace([x for x in self.ranges if x != r])

    # -- sockets ---------------------------------------------------------------------

    def register(self, service: int, sock: socket.socket | int) -> None:
        """Make ``sock`` (a socket or its fd) service ``service``'s socket, replacing
        the one before.  A TCP socket must be listening, a UDP socket unconnected; the
        map holds its own reference, so the socket lives on in the kernel until
        :meth:`unregister` even if the caller closes it."""
        if not 0 <= service < MAX_SERVICES:
            raise ValueError(f"service is 0 to {MAX_SERVICES - 1} (got {service})")
        fd = sock if isinstance(sock, int) else sock.fileno()
        self._sockets.update(ctypes.c_uint32(service), ctypes.c_uint64(fd))
        self._registered.add(service)

    def unregister(self, service: int) -> None:
        """Service ``service`` has no socket any more: its ranges' lookups go on to the
        ordinary lookup."""
        self._sockets.delete(ctypes.c_uint32(service))
        self._registered.discard(service)

    def counters(self) -> dict[int, ServiceCounter]:
        """Per service that any range in force names, or with a socket registered."""
        out = {}
        per_cpu = (_Stat * self._ncpu)()
        for service in sorted({r.service for r in self.ranges} | self._registered):
            self._stats.lookup(ctypes.c_uint32(service), per_cpu)
            out[service] = ServiceCounter(
                sum(s.assigned for s in per_cpu),
                sum(s.missing for s in per_cpu),
                sum(s.refused for s in per_cpu),
            )
        return out

    def test_run(self, protocol: str, destination: str, port: int) -> int:
        """Run the program on one lookup inside the kernel (``BPF_PROG_TEST_RUN``), for
        a TCP SYN or UDP datagram from 100.64.0.1 (or 64:ff9b::100:1) port 40000 to
        ``destination``:``port``.  Returns the cookie of the socket it was given
        (``SO_COOKIE``), or 0 for the ordinary lookup.  Counters count it."""
        dest = ipaddress.ip_address(destination)
        ctx = LookupContext(protocol=PROTOCOLS[protocol], local_port=port)
        ctx.remote_port = socket.htons(40000)
        if dest.version == 4:
            ctx.family = socket.AF_INET
            ctypes.memmove(ctx.local_ip4, dest.packed, 4)
            ctypes.memmove(ctx.remote_ip4, bytes([100, 64, 0, 1]), 4)
        else:
            ctx.family = socket.AF_INET6
            ctypes.memmove(ctx.local_ip6, dest.packed, 16)
            ctypes.memmove(ctx.remote_ip6, ipaddress.ip_address("64:ff9b::100:1").packed, 16)
        _rc, out = self.program.test_run_context(ctx)
        return int(LookupContext.from_buffer_copy(out).cookie)

    # -- namespaces ------------------------------------------------------------------

    def attach(self, netns: str | None = None) -> None:
        """Attach to network namespace ``netns`` (by name; ``None``: the calling
        thread's), with a BPF link that lives as long as this loader keeps it."""
        path = "/proc/thread-self/ns/net" if netns is None else str(NETNS_DIR / netns)
        fd = os.open(path, os.O_RDONLY)
        try:
            self._links.append(self.program.attach_netns(fd))
        finally:
            os.close(fd)

    def detach(self) -> None:
        """Close every link this loader made (the program leaves those namespaces)."""
        while self._links:
            os.close(self._links.pop())
