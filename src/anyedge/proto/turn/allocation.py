"""The state of one allocation: relays, permissions, channels, the key that made it.

An allocation belongs to a client's 5-tuple (transport, client address, server
address).  It has one relayed address, or two for a dual-stack allocation (RFC 8656
§7.2, ADDITIONAL-ADDRESS-FAMILY), keyed by family.  Permissions are peer IP -> expiry;
channels are number -> :class:`Channel` with the inverse peer -> :class:`Channel`, so
both relay directions are one dict lookup.  An expired channel stays in both dicts for
its quarantine (RFC 8656 §12: five more minutes in which neither its number nor its
peer may be bound to anything else) with ``live`` false; the relay paths check
``expires`` against ``now`` rather than waiting for a tick.

The objects are slotted and mutable: the server changes expiries in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .policy import TokenBucket

Addr = tuple[str, int]
FiveTuple = tuple[str, Addr, Addr]


@dataclass(slots=True)
class UserState:
    """Per-user quota state: allocations held and the bandwidth bucket they share."""

    allocations: int = 0
    bucket: TokenBucket | None = None


@dataclass(slots=True, eq=False)
class Channel:
    """A channel binding: its number, peer, the relay that reaches the peer, expiry."""

    number: int
    peer: Addr
    relay: Addr
    expires: float
    live: bool = True


@dataclass(slots=True, eq=False)
class PeerConnection:
    """RFC 6062: a TCP connection between a TCP allocation's relayed address and a
    peer.  ``connecting`` (a Connect waits for ``request``'s answer), ``ready`` (open, no
    client data connection bound yet: closed at ``deadline``), ``bound`` (spliced)."""

    id: int
    alloc: Allocation
    peer: Addr
    state: str
    deadline: float
    request: object = None  # the Connect to answer (the server's own record of it)


@dataclass(slots=True, eq=False)
class Allocation:
    """One client's relay: everything the per-packet paths look up."""

    id: int
    transport: str
    client: Addr
    server: Addr
    username: str
    user: str
    key: bytes
    algorithm: int
    quota: UserState
    expires: float
    relays: dict[int, Addr]  # family -> relayed address
    dont_fragment: bool = False
    stream: bool = False  # TCP or TLS: ChannelData to the client is padded to 4 bytes
    perms: dict[str, float] = field(default_factory=dict)  # peer IP -> expiry
    channels: dict[int, Channel] = field(default_factory=dict)
    by_peer: dict[Addr, Channel] = field(default_factory=dict)
    peer_attrs: dict[Addr, tuple[bytes, int]] = field(default_factory=dict)  # Data indications
    check_at: float = float("inf")  # when tick() next looks at this allocation
    dead: bool = False
    created: float = 0.0
    tcp: bool = False  # RFC 6062: peers reached over TCP connections, not datagrams
    connections: set[int] = field(default_factory=set)  # its peer connections' ids
    # relayed payload, for the sessions view: to peers, and back to the client
    packets_to_peer: int = 0
    bytes_to_peer: int = 0
    packets_to_client: int = 0
    bytes_to_client: int = 0
    fast_paused: bool = False  # over user_bandwidth through a fast path (.offload)

    @property
    def five_tuple(self) -> FiveTuple:
        return self.transport, self.client, self.server

    def relay_for(self, host: str) -> Addr | None:
        """The relayed address that reaches peer ``host`` (by its family), or None."""
        return self.relays.get(6 if ":" in host else 4)
