"""UDP rate limits per source on a socket: the loader of ``bpf/udp_limit.bpf.c``.

::

    from anyedge.edge.udplimit import UdpLimit

    with UdpLimit(rate=100, burst=200) as limit:   # datagrams/s and bucket size, per source
        limit.attach(sock)                         # setsockopt(SO_ATTACH_BPF)
        ...
        print(limit.counters())                    # {"kept": ..., "dropped": ..., "other": ...}
        for s in limit.top(5):                     # the sources that sent most
            print(s.address, s.kept, s.dropped)

The program is a socket filter: it runs on each datagram before the socket queues it,
takes a token from the bucket of the datagram's source address and keeps it, or drops
it when the bucket is empty.  A socket keeps the program attached after this loader
is closed (it holds its own reference) until :meth:`UdpLimit.detach` or the socket's
end; the buckets and counters live as long as the program.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from . import build
from .libbpf import BpfObject, Loaded, check_size, possible_cpus

PROGRAM = "udp_limit"
SO_ATTACH_BPF = 50  # asm-generic/socket.h
SO_DETACH_BPF = 27  # SO_DETACH_FILTER
OUTCOMES = ("kept", "dropped", "other")
MAX_RATE = 10**9  # datagrams per second, per source: keeps the program's integers exact
MAX_BURST = 10**9


class Config(ctypes.Structure):
    """``struct udl_config``."""

    _fields_ = (("rate", ctypes.c_uint64), ("burst", ctypes.c_uint64))


class SourceKey(ctypes.Structure):
    """``struct udl_source``."""

    _fields_ = (("family", ctypes.c_uint32), ("addr", ctypes.c_uint8 * 16))


class Bucket(ctypes.Structure):
    """``struct udl_bucket``."""

    _fields_ = (
        ("tokens", ctypes.c_uint64),
        ("last_ns", ctypes.c_uint64),
        ("kept", ctypes.c_uint64),
        ("dropped", ctypes.c_uint64),
    )


@dataclass(frozen=True)
class Source:
    """One source address's bucket: datagrams kept and dropped since it was made, and
    the tokens left (in datagrams, at the time of the last datagram)."""

    address: str
    kept: int
    dropped: int
    tokens: float


class UdpLimit(Loaded):
    """One loaded copy of the rate-limit program: its config, buckets and counters.
    Every socket it is attached to shares them (a source's bucket is one, whichever
    socket the datagram reaches)."""

    def __init__(self, rate: int = 0, burst: int = 0, obj_path: str | Path | None = None) -> None:
        self.obj = BpfObject(obj_path or build.object_path(PROGRAM))
        self.program = self.obj.program(PROGRAM)
        self._config = self.obj.map("udl_config")
        self._buckets = self.obj.map("udl_buckets")
        self._stats = self.obj.map("udl_stats")
        check_size(self._config, ctypes.sizeof(Config), "struct udl_config", "udplimit.py")
        check_size(self._buckets, ctypes.sizeof(Bucket), "struct udl_bucket", "udplimit.py")
        self._ncpu = possible_cpus()
        self._sockets: list[socket.socket] = []
        self.set_limit(rate, burst)

    def set_limit(self, rate: int, burst: int) -> None:
        """Each source may send ``burst`` datagrams at once and ``rate`` per second
        after that.  Buckets already made keep their tokens, cut to the new burst at
        their next datagram; ``rate=0``: no refill, exactly ``burst`` per source."""
        if not 0 <= rate <= MAX_RATE or not 0 <= burst <= MAX_BURST:
            raise ValueError(
                f"rate and burst are 0 to {MAX_RATE} datagrams (got rate {rate}, burst {burst})"
            )
        self._config.update(ctypes.c_uint32(0), Config(rate=rate, burst=burst))
        self.rate, self.burst = rate, burst

    # -- sockets ---------------------------------------------------------------------

    def attach(self, sock: socket.socket) -> None:
        """Filter ``sock``'s datagrams (``setsockopt(SO_ATTACH_BPF)``), replacing any
        filter it had."""
        self.obj._live()
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, self.program.fd)
        self._sockets.append(sock)

    def detach(self, sock: socket.socket | None = None) -> None:
        """Take the filter off ``sock`` (every socket this loader attached to when
        ``None``); a socket already closed is skipped."""
        for s in [sock] if sock is not None else list(self._sockets):
            if s in self._sockets:
                self._sockets.remove(s)
            if s.fileno() >= 0:
                s.setsockopt(socket.SOL_SOCKET, SO_DETACH_BPF, 0)

    # -- counters --------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Datagrams per outcome, summed over CPUs: ``kept``, ``dropped`` (over the
        limit) and ``other`` (kept without a bucket: not IP, or no bucket to be had)."""
        per_cpu = (ctypes.c_uint64 * self._ncpu)()
        out = {}
        for i, name in enumerate(OUTCOMES):
            self._stats.lookup(ctypes.c_uint32(i), per_cpu)
            out[name] = sum(per_cpu)
        return out

    def sources(self) -> list[Source]:
        """Every source with a bucket now (the LRU map forgets the least recently
        seen when it is full)."""
        out = []
        for key in self._buckets.keys(SourceKey):
            b = Bucket()
            try:
                self._buckets.lookup(key, b)
            except OSError:  # evicted since the walk saw it
                continue
            raw = bytes(key.addr)
            addr = ipaddress.ip_address(raw[:4] if key.family == 4 else raw)
            out.append(Source(str(addr), int(b.kept), int(b.dropped), b.tokens / 1e9))
        return out

    def top(self, n: int = 10) -> list[Source]:
        """The ``n`` sources that sent the most datagrams, most first."""
        return sorted(self.sources(), key=lambda s: (-(s.kept + s.dropped), s.address))[:n]

    def reset(self) -> None:
        """Forget every bucket: each source starts again with a full one."""
        for key in self._buckets.keys(SourceKey):
            with contextlib.suppress(OSError):  # gone already
                self._buckets.delete(key)
