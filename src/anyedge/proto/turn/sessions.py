"""The sessions view: one allocation as plain data, for operators (CLI and HTTP).

:func:`session_view` turns an :class:`~.allocation.Allocation` into a JSON-ready dict:
who (transport, client, server, username), what (relayed addresses, permissions,
channels with the time each has left), and how much (payload packets and bytes
relayed each way, counted by the core's packet paths) and how long (age, lifetime
left).  Expired channels still in their quarantine are left out.  Addresses are
written ``ip:port`` (``[ip]:port`` for IPv6).
"""

from __future__ import annotations

from .allocation import Addr, Allocation


def hostport(addr: Addr) -> str:
    """``ip:port``, or ``[ip]:port`` for IPv6."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def session_view(alloc: Allocation, now: float) -> dict[str, object]:
    """One allocation, as the sessions view lists it."""
    perms = sorted(h for h, until in list(alloc.perms.items()) if until > now)
    channels = [
        {"number": ch.number, "peer": hostport(ch.peer), "left_s": round(ch.expires - now, 1)}
        for _, ch in sorted(alloc.channels.items())
        if ch.live and ch.expires > now
    ]
    return {
        "id": alloc.id,
        "transport": alloc.transport,
        "client": hostport(alloc.client),
        "server": hostport(alloc.server),
        "username": alloc.username,
        "relayed": [hostport(a) for a in alloc.relays.values()],
        "relay_transport": "tcp" if alloc.tcp else "udp",
        "tcp_connections": len(alloc.connections),
        "age_s": round(now - alloc.created, 1),
        "lifetime_left_s": round(max(0.0, alloc.expires - now), 1),
        "permissions": perms,
        "channels": channels,
        "to_peer": {"packets": alloc.packets_to_peer, "bytes": alloc.bytes_to_peer},
        "to_client": {"packets": alloc.packets_to_client, "bytes": alloc.bytes_to_client},
    }
