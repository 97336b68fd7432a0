"""GRE with keys (RFC 2784, RFC 2890), and anycast GRE's decisions, as pure code.

The transit server holds one anycast address for every customer's tunnel; what says
which customer a GRE packet belongs to is its key.  This module turns bytes into
decisions and back, with no sockets:

- :func:`parse` reads an outer IPv4 packet (as a raw socket for protocol 47 gives it)
  and its GRE header; :func:`parse_gre` the GRE header alone, as an IPv6 raw socket
  gives it (GRE over IPv6, RFC 7676, for customers whose router has only an IPv6
  address).  Accepted: version 0, no routing bit, no reserved bits, a checksum that adds
  up when the C bit says there is one, a key (K), maybe a sequence number (S, read and
  ignored: with anycast every site sees only part of a tunnel's packets, so ordering
  cannot be enforced by any one of them), an IPv4 or IPv6 payload.  Anything else is a
  :class:`Drop` with a reason.
- :meth:`Tunnels.decapsulate` (:meth:`~Tunnels.decapsulate6`): a packet from a
  customer's router — the key must be a customer's and the outer source that
  customer's router (else ``wrong_key``), and the inner source must lie in the
  customer's prefixes (else ``foreign``: a packet for, or from, another customer).
- :meth:`Tunnels.encapsulate`: a packet towards a customer — its inner destination
  must lie in the customer's prefixes (else ``misrouted``) — gets a GRE header with
  the customer's key, addressed to the customer's router.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from ..proto.inet import checksum
from .config import Customer

PROTO_GRE = 47
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
_C, _R, _K, _S = 0x8000, 0x4000, 0x2000, 0x1000
_RESERVED = 0x0FF8  # reserved0 bits (strict source route, recursion, flags) must be 0
_VERSION = 0x0007
_KEYED = struct.Struct("!HHI")

DROP_REASONS = (
    "short",
    "not_gre",
    "version",
    "flags",
    "checksum",
    "protocol",
    "no_key",
    "wrong_key",
    "foreign",
    "misrouted",
    "unknown_customer",
    "tun_write",
    "send",
)


@dataclass(frozen=True, slots=True)
class Drop:
    reason: str  # one of DROP_REASONS
    customer: str = ""


@dataclass(frozen=True, slots=True)
class Gre:
    """A parsed outer packet: addresses, GRE key and the payload."""

    src: str
    dst: str
    key: int | None
    proto: int
    payload: bytes


def header(
    key: int | None,
    proto: int = ETH_IPV4,
    seq: int | None = None,
    with_checksum: bool = False,
    payload: bytes = b"",
) -> bytes:
    """A GRE header (C, K and S as asked); with ``with_checksum`` it covers ``payload``."""
    flags = (
        (_C if with_checksum else 0)
        | (_K if key is not None else 0)
        | (_S if seq is not None else 0)
    )
    out = struct.pack("!HH", flags, proto)
    opt = b""
    if key is not None:
        opt += struct.pack("!I", key)
    if seq is not None:
        opt += struct.pack("!I", seq)
    if with_checksum:
        c = checksum(out + b"\0\0\0\0" + opt + payload)
        out += struct.pack("!HH", c, 0)
    return out + opt


def parse(packet: bytes) -> Gre | Drop:
    """An outer IPv4 packet carrying GRE, or why it is dropped."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return Drop("short" if len(packet) < 20 else "not_gre")
    ihl = (packet[0] & 0x0F) * 4
    if packet[9] != PROTO_GRE:
        return Drop("not_gre")
    src, dst = socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20])
    return parse_gre(src, dst, packet[ihl:])


def parse_gre(src: str, dst: str, g: bytes) -> Gre | Drop:
    """The GRE header and payload ``g`` that came from ``src`` to ``dst``: what an IPv6
    raw socket gives (the kernel strips the outer IPv6 header), or the rest of an IPv4
    packet."""
    if len(g) < 4:
        return Drop("short")
    flags, proto = struct.unpack("!HH", g[:4])
    if flags & _VERSION:
        return Drop("version")
    if flags & (_R | _RESERVED):
        return Drop("flags")
    off = 4
    if flags & _C:
        if len(g) < off + 4 or checksum(g) != 0:
            return Drop("checksum" if len(g) >= off + 4 else "short")
        off += 4
    key = None
    if flags & _K:
        if len(g) < off + 4:
            return Drop("short")
        (key,) = struct.unpack("!I", g[off : off + 4])
        off += 4
    if flags & _S:
        off += 4
    if len(g) < off:
        return Drop("short")
    if proto not in (ETH_IPV4, ETH_IPV6):
        return Drop("protocol")
    return Gre(src, dst, key, proto, g[off:])


def inner_addresses(packet: bytes) -> tuple[int, int, int] | None:
    """(IP version, source, destination as integers) of an IP packet, or ``None``."""
    v = packet[0] >> 4 if packet else 0
    if v == 4 and len(packet) >= 20:
        return 4, int.from_bytes(packet[12:16], "big"), int.from_bytes(packet[16:20], "big")
    if v == 6 and len(packet) >= 40:
        return 6, int.from_bytes(packet[8:24], "big"), int.from_bytes(packet[24:40], "big")
    return None


def _nets(c: Customer) -> tuple[tuple[int, int, int], ...]:
    """(version, network, mask) of each of the customer's prefixes, as integers."""
    out = []
    for p in c.prefixes:
        n = ipaddress.ip_network(p)
        out.append((n.version, int(n.network_address), int(n.netmask)))
    return tuple(out)


def _owns(nets: tuple[tuple[int, int, int], ...], version: int, addr: int) -> bool:
    return any(v == version and addr & m == n for v, n, m in nets)


class Tunnels:
    """Every customer's tunnel on this server: who a key belongs to, where to send."""

    def __init__(self) -> None:
        self._by_key: dict[int, Customer] = {}
        self._by_id: dict[str, Customer] = {}
        self._nets: dict[str, tuple[tuple[int, int, int], ...]] = {}
        # the common case (IPv4 in IPv4, key only) by key: id, router, IPv4 (net, mask)s
        self._fast: dict[int, tuple[str, bytes, tuple[tuple[int, int], ...]]] = {}

    def set(self, customer: Customer) -> None:
        self.remove(customer.id)
        self._by_key[customer.tunnel.key] = customer
        self._by_id[customer.id] = customer
        self._nets[customer.id] = nets = _nets(customer)
        router = ipaddress.ip_address(customer.tunnel.router)
        if router.version == 4:
            v4 = tuple((n, m) for v, n, m in nets if v == 4)
            self._fast[customer.tunnel.key] = (customer.id, router.packed, v4)

    def remove(self, customer_id: str) -> None:
        old = self._by_id.pop(customer_id, None)
        if old is not None and self._by_key.get(old.tunnel.key) is old:
            del self._by_key[old.tunnel.key]
        self._nets.pop(customer_id, None)
        if old is not None and self._fast.get(old.tunnel.key, ("",))[0] == customer_id:
            del self._fast[old.tunnel.key]

    def decapsulate(self, packet: bytes) -> tuple[str, bytes] | Drop:
        """(customer id, inner packet) of a GRE packet from a customer's router."""
        # fast path: 20-byte outer header, GRE with only a key, IPv4 inside, all good
        if len(packet) >= 48 and packet[0] == 0x45 and packet[9] == PROTO_GRE:
            flags, proto, key = _KEYED.unpack_from(packet, 20)
            if flags == _K and proto == ETH_IPV4 and packet[28] >> 4 == 4:
                f = self._fast.get(key)
                if f is not None and packet[12:16] == f[1]:
                    src = int.from_bytes(packet[40:44], "big")
                    for n, m in f[2]:
                        if src & m == n:
                            return f[0], packet[28:]
        return self._decide(parse(packet))

    def decapsulate6(self, src: str, packet: bytes) -> tuple[str, bytes] | Drop:
        """The same for GRE over IPv6 (RFC 7676): ``packet`` starts at the GRE header, as
        an IPv6 raw socket gives it, and ``src`` is the outer source it names."""
        return self._decide(parse_gre(src, "", packet))

    def _decide(self, g: Gre | Drop) -> tuple[str, bytes] | Drop:
        if isinstance(g, Drop):
            return g
        if g.key is None:
            return Drop("no_key")
        c = self._by_key.get(g.key)
        if c is None or c.tunnel.router != g.src:
            return Drop("wrong_key", c.id if c is not None else "")
        addrs = inner_addresses(g.payload)
        if addrs is None:
            return Drop("protocol", c.id)
        if not _owns(self._nets[c.id], addrs[0], addrs[1]):
            return Drop("foreign", c.id)
        return c.id, g.payload

    def encapsulate(self, customer_id: str, inner: bytes) -> tuple[str, bytes] | Drop:
        """(router address, GRE header + ``inner``) for a packet towards a customer."""
        c = self._by_id.get(customer_id)
        if c is None:
            return Drop("unknown_customer", customer_id)
        addrs = inner_addresses(inner)
        if addrs is None:
            return Drop("protocol", customer_id)
        if not _owns(self._nets[customer_id], addrs[0], addrs[2]):
            return Drop("misrouted", customer_id)
        proto = ETH_IPV4 if inner[0] >> 4 == 4 else ETH_IPV6
        return c.tunnel.router, header(c.tunnel.key, proto) + inner
