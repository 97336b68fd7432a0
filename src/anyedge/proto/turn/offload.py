"""What a kernel fast path may relay for the core, and what it relayed, charged back.

The core stays the authority on every channel.  A fast path (the service's
:mod:`anyedge.services.turn.fastpath`, XDP underneath) asks :func:`offloadable` which
channels it may relay and until when, and hands what it relayed back through
:func:`account`, which counts it where the core's own packet paths count (the server's
:class:`~.config.Counters`, the allocation's counters for the sessions view) and
charges the user's bandwidth bucket.

A channel is offloadable while it is live, its peer's permission is, and its
allocation is a UDP one (not TCP or TLS, whose ChannelData is framed in a stream, nor
DTLS); ``until`` is the earliest of the channel's, the permission's and the
allocation's expiry, so a fast path that knows it stops exactly where
:meth:`TurnServer.receive <.server.TurnServer.receive>` would start dropping.
:func:`offloadable_permissions` does the same for Send and Data indications: a live
permission of a UDP allocation whose peer IP is of the client's family, with the
relayed address of that family, until the earliest of the permission's and the
allocation's expiry (300 s after the last CreatePermission or ChannelBind that
refreshed it); peers on the relay's own IPs (``excluded``), whose ports the core
checks one by one, stay in user space.  An
allocation whose user went over ``user_bandwidth`` through the fast path is paused
(``Allocation.fast_paused``): its channels leave the fast path, the bytes beyond the
bucket are owed (the bucket goes below zero), and user space -- which drops what
exceeds the bucket -- relays until the bucket is full again.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator

from .allocation import Addr, Allocation, Channel
from .config import Counters


def channel_until(alloc: Allocation, ch: Channel, now: float) -> float | None:
    """Until when a fast path may relay channel ``ch`` of ``alloc`` on its own: the
    earliest of the channel's, its permission's and the allocation's expiry; None when
    it may not now (a TCP, TLS or DTLS allocation, or one that is dead, paused or
    whose channel or permission has expired)."""
    if alloc.dead or alloc.fast_paused or alloc.transport != "udp" or alloc.tcp:
        return None
    until = min(ch.expires, alloc.perms.get(ch.peer[0], 0.0), alloc.expires)
    return until if ch.live and until > now else None


def offloadable(
    allocations: Iterable[Allocation], now: float
) -> Iterator[tuple[Allocation, Channel, float]]:
    """(allocation, channel, until) for every channel a fast path may relay now."""
    for alloc in allocations:
        if alloc.dead or alloc.transport != "udp" or alloc.tcp:
            continue
        if alloc.fast_paused:
            bucket = alloc.quota.bucket
            if bucket is not None and not bucket.full(now):
                continue
            alloc.fast_paused = False
        for ch in alloc.channels.values():
            perm = alloc.perms.get(ch.peer[0], 0.0)
            until = min(ch.expires, perm, alloc.expires)
            if ch.live and until > now:
                yield alloc, ch, until


def offloadable_permissions(
    allocations: Iterable[Allocation], now: float, excluded: Container[str] = ()
) -> Iterator[tuple[Allocation, str, Addr, float]]:
    """(allocation, peer IP, relayed address, until) for every permission a fast path
    may relay Send and Data indications for now (module docstring).  Call after
    :func:`offloadable`, which is where a paused allocation is let back."""
    for alloc in allocations:
        if alloc.dead or alloc.fast_paused or alloc.transport != "udp" or alloc.tcp:
            continue
        v6 = ":" in alloc.client[0]
        for host, expires in alloc.perms.items():
            if (":" in host) != v6 or host in excluded:
                continue
            relay = alloc.relay_for(host)
            until = min(expires, alloc.expires)
            if relay is not None and until > now:
                yield alloc, host, relay, until


def account(
    counters: Counters,
    alloc: Allocation,
    now: float,
    to_peer: tuple[int, int] = (0, 0),
    to_client: tuple[int, int] = (0, 0),
) -> bool:
    """Count ``(packets, bytes)`` of payload a fast path relayed each way for ``alloc``;
    False when that took its user over ``user_bandwidth`` (the allocation is paused,
    module docstring)."""
    c = counters
    c.packets_to_peer += to_peer[0]
    c.bytes_to_peer += to_peer[1]
    c.packets_to_client += to_client[0]
    c.bytes_to_client += to_client[1]
    alloc.packets_to_peer += to_peer[0]
    alloc.bytes_to_peer += to_peer[1]
    alloc.packets_to_client += to_client[0]
    alloc.bytes_to_client += to_client[1]
    used = to_peer[1] + to_client[1]
    bucket = alloc.quota.bucket
    if bucket is None or not used or bucket.take(now, used):
        return True
    bucket.tokens -= used  # relayed already: owed, paid back before user space relays
    alloc.fast_paused = True
    return False
