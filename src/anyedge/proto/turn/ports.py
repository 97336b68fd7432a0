"""Relayed transport addresses: which (ip, port) an allocation gets, and the anycast slices.

The TURN server does not bind sockets; it asks a :class:`RelayPorts` for an address when
it creates an allocation and gives the address back when the allocation ends, and tells
the IO layer to bind and close with ``OpenRelay`` / ``CloseRelay`` outputs.  An IO layer
that wants to bind inside ``take`` (and try another port when the kernel says the port
is in use) wraps :class:`PortRange` in its own ``RelayPorts``.

On an anycast network every site announces the same relay address, so a peer's datagram
to relay port P may land at any site.  Each site therefore owns a slice of the port
range (:func:`port_slice`) and hands out ports only from its slice; a site that receives
a datagram for a port it does not own forwards it to :func:`slice_owner`'s site over the
backbone.  Ports within the slice are chosen at random (RFC 8656 §7.2 asks that relayed
ports be hard to guess).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Protocol

Addr = tuple[str, int]

DYNAMIC_PORTS = (49152, 65535)
"""The IANA dynamic range that RFC 8656 §7.2 recommends for relayed ports."""


class RelayPorts(Protocol):
    """Hands out relayed transport addresses; what :class:`TurnServer` is given."""

    def families(self) -> frozenset[int]:
        """The address families (4, 6) this server can relay on."""
        ...

    def take(self, family: int, even: bool = False) -> Addr | None:
        """A free relay address of ``family`` (an even port if asked), or None if none."""
        ...

    def take_pair(self, family: int) -> tuple[Addr, Addr] | None:
        """An even port, taken, and the odd one after it, set aside (EVEN-PORT with its
        R bit: for the client's next allocation, which may come to another worker of
        the site), or None."""
        ...

    def take_exact(self, family: int, port: int) -> Addr | None:
        """The relay address of ``family`` on ``port`` — one set aside by
        ``take_pair`` here or by another worker — or None if it is taken."""
        ...

    def reclaim(self, addr: Addr) -> bool:
        """Put a set-aside address whose token ran out back in the pool; False if
        another worker claimed it and still holds it (ask again later)."""
        ...

    def give_back(self, addr: Addr) -> None:
        """Return an address taken earlier; it may be handed out again."""
        ...


def port_slice(first: int, last: int, index: int, count: int) -> tuple[int, int]:
    """The ports ``[lo, hi]`` that site ``index`` of ``count`` owns in ``[first, last]``.

    The range is cut into ``count`` contiguous slices whose sizes differ by at most one.
    """
    if not 0 <= index < count or first > last or last - first + 1 < count:
        raise ValueError(f"cannot give slice {index} of {count} of ports {first}-{last}")
    size, extra = divmod(last - first + 1, count)
    lo = first + index * size + min(index, extra)
    return lo, lo + size - 1 + (1 if index < extra else 0)


def slice_owner(port: int, first: int, last: int, count: int) -> int | None:
    """Which site's slice holds ``port`` (the inverse of :func:`port_slice`), or None."""
    if not first <= port <= last:
        return None
    size, extra = divmod(last - first + 1, count)
    offset = port - first
    if offset < extra * (size + 1):
        return offset // (size + 1)
    return extra + (offset - extra * (size + 1)) // size


class PortRange:
    """A :class:`RelayPorts` over one IPv4 and/or one IPv6 relay address and a port range.

    Each family has its own pool of ports ``first..last`` (an IPv4 and an IPv6 socket may
    share a port number).  ``take`` picks a free port at random with ``rng`` (seed it for
    tests), in O(1): the free ports are a list with an index, removal swaps with the last.
    """

    def __init__(
        self,
        ipv4: str | None = None,
        ipv6: str | None = None,
        first: int = DYNAMIC_PORTS[0],
        last: int = DYNAMIC_PORTS[1],
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= first <= last <= 65535:
            raise ValueError(f"bad port range {first}-{last}")
        self.first, self.last = first, last
        self._rng = rng if rng is not None else random.Random()
        self._ip: dict[int, str] = {}
        if ipv4 is not None:
            self._ip[4] = ipv4
        if ipv6 is not None:
            self._ip[6] = ipv6
        self._free: dict[int, list[int]] = {f: list(range(first, last + 1)) for f in self._ip}
        self._index: dict[int, dict[int, int]] = {
            f: {p: i for i, p in enumerate(ports)} for f, ports in self._free.items()
        }
        self._family_of = {ip: f for f, ip in self._ip.items()}
        self.reserved: dict[int, set[int]] = {f: set() for f in self._ip}  # set aside
        self._foreign: dict[int, set[int]] = {f: set() for f in self._ip}  # others', held here

    @classmethod
    def site_slice(
        cls,
        index: int,
        count: int,
        ipv4: str | None = None,
        ipv6: str | None = None,
        first: int = DYNAMIC_PORTS[0],
        last: int = DYNAMIC_PORTS[1],
        rng: random.Random | None = None,
    ) -> PortRange:
        """The ports of site ``index`` of ``count`` sharing anycast relay addresses."""
        lo, hi = port_slice(first, last, index, count)
        return cls(ipv4, ipv6, lo, hi, rng)

    def families(self) -> frozenset[int]:
        return frozenset(self._ip)

    def free(self, family: int) -> int:
        """How many ports of ``family`` are free."""
        return len(self._free.get(family, ()))

    def _remove(self, family: int, port: int) -> None:
        free, index = self._free[family], self._index[family]
        i = index.pop(port)
        last = free.pop()
        if last != port:
            free[i] = last
            index[last] = i

    def take(self, family: int, even: bool = False) -> Addr | None:
        free = self._free.get(family)
        if not free:
            return None
        if not even:
            port = free[self._rng.randrange(len(free))]
        else:
            even_port = self._even(family, free)
            if even_port is None:
                return None
            port = even_port
        self._remove(family, port)
        return self._ip[family], port

    def _even(self, family: int, free: list[int]) -> int | None:
        index = self._index[family]
        for _ in range(16):
            port = free[self._rng.randrange(len(free))] & ~1
            if port in index:
                return port
        evens: Iterable[int] = (p for p in free if not p & 1)
        return next(iter(evens), None)

    def take_pair(self, family: int) -> tuple[Addr, Addr] | None:
        free = self._free.get(family)
        if not free:
            return None
        index = self._index[family]
        port = None
        for _ in range(16):
            p = free[self._rng.randrange(len(free))] & ~1
            if p in index and p + 1 in index:
                port = p
                break
        else:
            port = next((p for p in free if not p & 1 and p + 1 in index), None)
        if port is None:
            return None
        self._remove(family, port)
        self._remove(family, port + 1)
        self.reserved[family].add(port + 1)
        ip = self._ip[family]
        return (ip, port), (ip, port + 1)

    def take_exact(self, family: int, port: int) -> Addr | None:
        ip = self._ip.get(family)
        if ip is None:
            return None
        if port in self.reserved[family]:
            self.reserved[family].discard(port)
        elif self.first <= port <= self.last or port in self._foreign[family]:
            return None  # free ports are not claimed by token; the rest are taken
        else:
            self._foreign[family].add(port)
        return ip, port

    def unclaim(self, family: int, port: int) -> None:
        """Undo :meth:`take_exact` (the IO layer could not bind the port)."""
        if self.first <= port <= self.last:
            self.reserved[family].add(port)
        else:
            self._foreign[family].discard(port)

    def reclaim(self, addr: Addr) -> bool:
        family = self._family_of[addr[0]]
        if addr[1] in self.reserved[family]:
            self.reserved[family].discard(addr[1])
            self.give_back(addr)
        return True

    def give_back(self, addr: Addr) -> None:
        family = self._family_of.get(addr[0])
        port = addr[1]
        if family is not None and port in self._foreign[family]:
            self._foreign[family].discard(port)  # another worker's: it takes it back
            return
        if family is None or not self.first <= port <= self.last:
            raise ValueError(f"{addr} was not handed out here")
        index = self._index[family]
        if port in index:
            raise ValueError(f"{addr} is already free")
        index[port] = len(self._free[family])
        self._free[family].append(port)
