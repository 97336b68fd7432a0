"""GRE with keys (RFC 2784, RFC 2890), and anycast GRE's decisions, as pure code.

The transit server holds one anycast address for every customer's tunnel; what says
which customer a GRE packet belongs to is its key.  This module turns bytes into
decisions and back, with no sockets:

- :func:`parse` reads an outer IPv4 packet (as a raw socket for protocol 47 gives it)
  and its GRE header: version 0, no routing bit, no reserved bits, a checksum that adds
  up when the C bit says there is one, a key (K), maybe a sequence number (S, read and
  ignored: with anycast every site sees only part of a tunnel's packets, so ordering
  cannot be enforced by any one of them), an IPv4 or IPv6 payload.  Anything else is a
  :class:`Drop` with a reason.
- :meth:`Tunnels.decapsulate`: a packet from a customer's router — the key must be a
  customer's and the outer source that customer's router (else ``wrong_key``), and the
  inner source must lie in the customer's prefixes (else ``foreign``: a packet for, or
  from, another customer).
- :meth:`Tunnels.encapsulate`: a packet towards a customer — its inner destination
  must lie in the customer's prefixes (else ``misrouted``) — gets a GRE header with the customer's key,
  addressed to the customer's router.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .config import Customer

PROTO_GRE = 47
ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
_C, _R, _K, _S = 0x8000, 0x4000, 0x2000, 0x1000
_RESERVED = 0x0FF8  # reserved0 bits (strict source route, recursion, flags) must be 0
_VERSION = 0x0007

DROP_REASONS = ("short", "not_gre", "version", "flags", "checksum", "protocol", "no_key",
                "wrong_key", "foreign", "misrouted", "unknown_customer", "tun_write", "send")


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


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def header(key: int | None, proto: int = ETH_IPV4, seq: int | None = None,
           with_checksum: bool = False, payload: bytes = b"") -> bytes:
    """A GRE header (C, K and S as asked); with ``with_checksum`` it covers ``payload``."""
    flags = (_C if with_checksum else 0) | (_K if key is not None else 0) | (_S if seq is not None else 0)
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
    src = str(ipaddress.IPv4Address(packet[12:16]))
    dst = str(ipaddress.IPv4Address(packet[16:20]))
    g = packet[ihl:]
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


def inner_addresses(packet: bytes) -> tuple[str, str] | None:
    """(source, destination) of an IPv4 or IPv6 packet, or ``None`` if it is neither."""
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        return str(ipaddress.IPv4Address(packet[12:16])), str(ipaddress.IPv4Address(packet[16:20]))
    if len(packet) >= 40 and packet[0] >> 4 == 6:
        return str(ipaddress.IPv6Address(packet[8:24])), str(ipaddress.IPv6Address(packet[24:40]))
    return None


class Tunnels:
    """Every customer's tunnel on this server: who a key belongs to, where to send."""

    def __init__(self) -> None:
        self._by_key: dict[int, Customer] = {}
        self._by_id: dict[str, Customer] = {}

    def set(self, customer: Customer) -> None:
        self.remove(customer.id)
        self._by_key[customer.tunnel.key] = customer
        self._by_id[customer.id] = customer

    def remove(self, customer_id: str) -> None:
        old = self._by_id.pop(customer_id, None)
        if old is not None and self._by_key.get(old.tunnel.key) is old:
            del self._by_key[old.tunnel.key]

    def decapsulate(self, packet: bytes) -> tuple[str, bytes] | Drop:
        """(customer id, inner packet) of a GRE packet from a customer's router."""
        g = parse(packet)
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
        if not c.owns(addrs[0]):
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
        if not c.owns(addrs[1]):
            return Drop("misrouted", customer_id)
        proto = ETH_IPV4 if inner[0] >> 4 == 4 else ETH_IPV6
        return c.tunnel.router, header(c.tunnel.key, proto) + inner
