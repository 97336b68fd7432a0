"""Which peers a relay may reach, and the token buckets that meter clients.

A TURN relay sends datagrams wherever its clients ask, from inside the operator's
network: left open it reaches the operator's loopback, private networks, link-local
metadata services (169.254.169.254) and multicast (RFC 8656 §21.1.3 and its
"Security Considerations").  :class:`PeerPolicy` refuses every peer address in the
special-purpose ranges below unless an operator's allow list (CIDRs) names it; the
server answers 403 (Forbidden) to CreatePermission and ChannelBind and drops a Send.

The ranges are listed here rather than taken from ``ipaddress``'s ``is_private`` and
friends, whose meaning changes between Python versions.  IPv4, from the IANA
special-purpose registry plus multicast and the old class E:

=================== ===================================================
0.0.0.0/8           "this network"
10.0.0.0/8          private (RFC 1918)
100.64.0.0/10       shared address space, carrier-grade NAT (RFC 6598)
127.0.0.0/8         loopback
169.254.0.0/16      link-local, cloud metadata services
172.16.0.0/12       private (RFC 1918)
192.0.0.0/24        IETF protocol assignments
192.0.2.0/24        documentation (TEST-NET-1)
192.88.99.0/24      deprecated 6to4 relay anycast
192.168.0.0/16      private (RFC 1918)
198.18.0.0/15       benchmarking
198.51.100.0/24     documentation (TEST-NET-2)
203.0.113.0/24      documentation (TEST-NET-3)
224.0.0.0/4         multicast
240.0.0.0/4         reserved, and 255.255.255.255 broadcast
=================== ===================================================

IPv6: only global unicast 2000::/3 and the NAT64 prefix 64:ff9b::/96 are peers at all;
the rest (::/128, ::1, fc00::/7 unique local, fe80::/10 link-local, fec0::/10 site-local,
ff00::/8 multicast, 100::/64 discard, 5f00::/16 SRv6, IPv4-compatible ::/96, ...) is
refused as "not global unicast".  Inside 2000::/3 these are refused too:

=================== ===================================================
2001:2::/48         benchmarking
2001:10::/28        ORCHID (deprecated)
2001:20::/28        ORCHIDv2
2001:db8::/32       documentation
3fff::/20           documentation (RFC 9637)
=================== ===================================================

IPv6 addresses that carry an IPv4 address are judged by it as well, so that
``::ffff:127.0.0.1`` cannot reach loopback: IPv4-mapped ::ffff:0:0/96 and
IPv4-compatible ::/96 (refused always: an IPv6 relay must not turn into an IPv4 one,
and the embedded address decides the reason), NAT64 64:ff9b::/96 (the embedded
address decides), 6to4 2002::/16 (bits 16-47) and Teredo 2001::/32 (server in bits
32-63, client in the inverted low 32 bits).  The allow list is matched against the
address as given, before any of this; ``extra_deny`` adds ranges of the operator's own
(its service prefixes, its backbone) that no allow list entry overrides, matched against
the address and against every IPv4 address it carries.

One exception goes before all of these: the relay's own relayed addresses.  Two clients
of one relay -- relay-only WebRTC peers -- must reach each other's relayed address, and
on an anycast fleet every relayed address has the relay's (special or denied) IP.  The
``relayed`` ranges name (relay IP, first port, last port): the relay port range of the
whole fleet, every site's slice.  A peer on such an IP is allowed within the range and
refused outside it ("relay listener"), so a Binding cannot reach the relay's own
listener through the relay (TURN inside TURN).  CreatePermission carries no port, so it
allows the IP; ChannelBind and every Send check the port.  An allow list entry that
names a relay IP wins over this: every port of it is a peer (a test on loopback).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable

_V4 = (
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)
_V6 = (
    ("2001:2::/48", "benchmarking"),
    ("2001:10::/28", "ORCHID"),
    ("2001:20::/28", "ORCHIDv2"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
)


def _table(rows: Iterable[tuple[str, str]]) -> tuple[tuple[int, int, str], ...]:
    """(network, mask, reason) as integers, for a loop of ANDs and compares."""
    out = []
    for cidr, reason in rows:
        net = ipaddress.ip_network(cidr)
        out.append((int(net.network_address), int(net.netmask), reason))
    return tuple(out)


SPECIAL_IPV4 = _table(_V4)
SPECIAL_IPV6 = _table(_V6)
_NAT64 = 0x0064_FF9B << 64  # 64:ff9b::/96, shifted right by 32
_MASK32 = 0xFFFF_FFFF


def _match(value: int, table: tuple[tuple[int, int, str], ...]) -> str | None:
    for net, mask, reason in table:
        if value & mask == net:
            return reason
    return None


def ipv4_reason(value: int) -> str | None:
    """Why the IPv4 address ``value`` (an int) is no peer, or None if it may be one."""
    return _match(value, SPECIAL_IPV4)


def ipv6_reason(value: int) -> str | None:
    """Why the IPv6 address ``value`` (an int) is no peer, embedded IPv4 forms included."""
    high = value >> 32
    low = value & _MASK32
    if high == 0xFFFF:
        return f"ipv4-mapped {ipv4_reason(low) or 'address'}"
    if high == 0:
        if value <= 1:
            return "unspecified" if value == 0 else "loopback"
        return f"ipv4-compatible {ipv4_reason(low) or 'address'}"
    if high == _NAT64:
        reason = ipv4_reason(low)
        return f"nat64 {reason}" if reason else None
    if value >> 125 != 1:  # outside 2000::/3
        return "not global unicast"
    if value >> 112 == 0x2002:
        reason = ipv4_reason((value >> 80) & _MASK32)
        if reason:
            return f"6to4 {reason}"
    elif value >> 96 == 0x2001_0000:
        reason = ipv4_reason((value >> 64) & _MASK32) or ipv4_reason(~value & _MASK32)
        if reason:
            return f"teredo {reason}"
    return _match(value, SPECIAL_IPV6)


def embedded_ipv4(value: int) -> list[int]:
    """The IPv4 addresses an IPv6 address (an int) carries: mapped, compatible, NAT64,
    6to4, Teredo (server and client)."""
    high, low = value >> 32, value & _MASK32
    if high in (0xFFFF, 0, _NAT64):
        return [low] if value > 1 else []
    if value >> 112 == 0x2002:
        return [(value >> 80) & _MASK32]
    if value >> 96 == 0x2001_0000:
        return [(value >> 64) & _MASK32, ~value & _MASK32]
    return []


class PeerPolicy:
    """Decides whether a relay may send to a peer IP address: :meth:`refusal`."""

    def __init__(
        self,
        allow: Iterable[str] = (),
        extra_deny: Iterable[str] = (),
        refuse_special: bool = True,
        relayed: Iterable[tuple[str, int, int]] = (),
    ) -> None:
        self.refuse_special = refuse_special
        self._allow = [ipaddress.ip_network(c) for c in allow]
        self._deny = [ipaddress.ip_network(c) for c in extra_deny]
        self.relayed: dict[str, list[tuple[int, int]]] = {}
        for ip, first, last in relayed:
            addr = ipaddress.ip_address(ip)
            if not any(addr in net for net in self._allow):  # allowed outright: every port
                self.relayed.setdefault(str(addr), []).append((first, last))

    def relayed_refusal(self, host: str, port: int) -> str | None:
        """For ``host`` one of the relay's own IPs: None if ``port`` is a relayed port."""
        if any(first <= port <= last for first, last in self.relayed[host]):
            return None
        return "relay listener"

    def refusal(self, host: str, port: int | None = None) -> str | None:
        """Why ``host`` (at ``port``, if known) may not be a peer ("loopback",
        "ipv4-mapped private", "relay listener", ...) or None."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return "not an address"
        if self.relayed and str(ip) in self.relayed:
            return None if port is None else self.relayed_refusal(str(ip), port)
        if any(ip in net for net in self._deny):
            return "denied by operator"
        if ip.version == 6 and self._deny:  # an IPv4 range denied stays denied inside IPv6
            for v4 in embedded_ipv4(int(ip)):
                inner = ipaddress.IPv4Address(v4)
                if any(inner in net for net in self._deny):
                    return "denied by operator (embedded IPv4)"
        if any(ip in net for net in self._allow):
            return None
        if not self.refuse_special:
            return None
        return ipv4_reason(int(ip)) if ip.version == 4 else ipv6_reason(int(ip))


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; :meth:`take` spends them, time passed in."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, now

    def take(self, now: float, amount: float = 1.0) -> bool:
        if now > self.stamp:  # a clock that steps back adds no tokens
            tokens = self.tokens + (now - self.stamp) * self.rate
            if tokens > self.burst:
                tokens = self.burst
            self.stamp = now
        else:
            tokens = self.tokens
        if tokens < amount:
            self.tokens = tokens
            return False
        self.tokens = tokens - amount
        return True

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.rate >= self.burst


class RateLimiter:
    """A token bucket per key (a client IP), at most ``max_keys`` of them, least recently
    made first out.

    When the table is full a new key evicts the oldest bucket (fail open for the
    newcomer: a flood of spoofed sources can make the table churn but cannot silence a
    new client, nor an existing one whose bucket it pushed out -- that one starts over
    with a full bucket).  Memory stays at ``max_keys`` buckets.  Resetting a chosen
    address's bucket this way takes ``max_keys`` other new sources, each answered at
    most ``burst`` times, so a reflection through it stays bounded.  Only answers to
    unauthenticated requests spend tokens; :meth:`prune` forgets buckets that have
    refilled.
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("the rate limiter needs room for at least one key")
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.evicted = 0  # buckets pushed out by newcomers: a sign of a spoofed flood

    def allow(self, now: float, key: str) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
                self.evicted += 1
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)

    def prune(self, now: float) -> None:
        full = [k for k, b in self._buckets.items() if b.full(now)]
        for k in full:
            del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)
