"""NAT behaviour discovery (RFC 5780): which of the server's addresses answers a Binding.

A server that has a second IP address and a second port answers on four transport
addresses: (IP1, P1) its primary, (IP1, P2), (IP2, P1) and (IP2, P2).  A client asks
with CHANGE-REQUEST for the answer to leave from the other IP and/or the other port
(so it learns whether its NAT lets in packets from addresses it has not sent to), and
is told OTHER-ADDRESS — the address differing from the one it sent to in both IP and
port — and RESPONSE-ORIGIN, where the answer left from.

:class:`NatDiscovery` holds the (primary, other) pairs, one per primary UDP listener,
and answers both questions for the address a request came to.  The IO layer listens
on every address :meth:`NatDiscovery.addresses` names.
"""

from __future__ import annotations

from collections.abc import Iterable

Addr = tuple[str, int]


class NatDiscovery:
    """The four-address square of every (primary, other) pair."""

    def __init__(self, pairs: Iterable[tuple[Addr, Addr]] = ()) -> None:
        self._square: dict[Addr, tuple[Addr, Addr]] = {}
        for primary, other in pairs:
            if primary[0] == other[0] or primary[1] == other[1]:
                raise ValueError(f"{other} must differ from {primary} in both IP and port")
            for addr in self._corners(primary, other):
                self._square[addr] = (primary, other)

    @staticmethod
    def _corners(primary: Addr, other: Addr) -> list[Addr]:
        return [primary, (primary[0], other[1]), (other[0], primary[1]), other]

    def __bool__(self) -> bool:
        return bool(self._square)

    def addresses(self) -> list[Addr]:
        """Every address of every square, primaries included."""
        return list(self._square)

    def origin(self, server: Addr, change_ip: bool, change_port: bool) -> Addr | None:
        """Where an answer to a request that came to ``server`` leaves from, or None if
        ``server`` has no other address."""
        square = self._square.get(server)
        if square is None:
            return None
        (ip1, p1), (ip2, p2) = square
        ip = (ip2 if server[0] == ip1 else ip1) if change_ip else server[0]
        port = (p2 if server[1] == p1 else p1) if change_port else server[1]
        return ip, port

    def other(self, server: Addr) -> Addr | None:
        """OTHER-ADDRESS for a request that came to ``server`` (both IP and port
        changed), or None."""
        return self.origin(server, True, True)
