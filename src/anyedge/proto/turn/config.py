"""The TURN server's settings and its counters.

:class:`TurnConfig` holds every limit the server enforces, with RFC 8656's lifetimes
and safe defaults; :class:`Counters` is what it counts, as plain ints for the IO layer
to export (Prometheus gauges for the first three fields, counters for the rest).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TurnConfig:
    """Limits and lifetimes; seconds, bytes and requests per second."""

    software: str | None = "anyedge"
    default_lifetime: int = 600  # RFC 8656 §7.2
    max_lifetime: int = 3600
    permission_lifetime: int = 300  # RFC 8656 §9
    channel_lifetime: int = 600  # RFC 8656 §12
    channel_quarantine: int = 300  # a freed channel or peer is not rebound elsewhere
    transaction_ttl: float = 40.0  # responses kept to answer retransmissions (RFC 8489)
    max_transactions: int = 100_000
    max_allocations: int = 100_000  # whole server: beyond it 508 (Insufficient Capacity)
    user_quota: int | None = 20  # allocations per user, beyond it 486; None: no quota
    user_bandwidth: float | None = None  # bytes/s per user, both ways; None: unmetered
    user_burst: float | None = None  # bytes; default max(user_bandwidth, 65536)
    unauth_rate: float = 20.0  # unauthenticated answers per client IP per second
    unauth_burst: float = 100.0
    max_rate_keys: int = 100_000  # client IPs tracked by the rate limiter (oldest out)
    allow_peers: tuple[str, ...] = ()  # CIDRs allowed even if special-purpose (labs)
    deny_peers: tuple[str, ...] = ()  # CIDRs always refused (the operator's own)
    refuse_special_peers: bool = True
    # (relay IP, first, last): relayed addresses, the fleet's whole relay port range, that
    # are peers whatever the lists say (clients of one relay reach each other), while the
    # other ports of those IPs (the listeners) stay refused
    relayed_peers: tuple[tuple[str, int, int], ...] = ()
    dont_fragment: bool = True  # DONT-FRAGMENT supported (else 420)
    # RFC 5780: (primary UDP listener, other address) pairs, differing in IP and port
    nat_pairs: tuple[tuple[tuple[str, int], tuple[str, int]], ...] = ()
    # RFC 6062 TCP allocations; off, REQUESTED-TRANSPORT TCP gets 442 (a site running
    # several workers: a client's data connection may reach another worker)
    tcp_relay: bool = True
    reservation_lifetime: float = 30.0  # EVEN-PORT R=1: the next port held this long
    max_reservations: int = 10_000  # ports held under RESERVATION-TOKENs at once (508 beyond)
    max_channel: int = 0x7FFF  # RFC 5766's range, for its clients; 0x4FFF: RFC 8656's only

    def __post_init__(self) -> None:
        if not 0 < self.default_lifetime <= self.max_lifetime:
            raise ValueError("need 0 < default_lifetime <= max_lifetime")
        if self.permission_lifetime <= 0 or self.channel_lifetime <= 0:
            raise ValueError("permission and channel lifetimes must be positive")
        if self.user_bandwidth is not None and self.user_bandwidth <= 0:
            raise ValueError("user_bandwidth must be positive (or None)")
        if not 0x4000 <= self.max_channel <= 0x7FFF:
            raise ValueError("max_channel must be within 0x4000-0x7FFF")
        if self.unauth_rate <= 0 or self.unauth_burst < 1:
            raise ValueError("unauth_rate must be positive and unauth_burst at least 1")


@dataclass(slots=True)
class Counters:
    """What the server has seen and done since it started."""

    allocations: int = 0  # gauge: allocations now
    permissions: int = 0  # gauge: permissions now
    channels: int = 0  # gauge: channel bindings now
    allocations_created: int = 0
    allocations_expired: int = 0
    packets_to_peer: int = 0
    bytes_to_peer: int = 0
    packets_to_client: int = 0
    bytes_to_client: int = 0
    requests: int = 0
    challenges: int = 0  # 401 to a request without credentials: the normal first step
    auth_failures: int = 0  # 401 to wrong credentials, unknown or expired user
    stale_nonces: int = 0  # 438
    refused_peer: int = 0  # 403, and Sends dropped for a forbidden peer
    refused_user_quota: int = 0  # 486
    refused_capacity: int = 0  # 508
    refused_other: int = 0  # every other error response
    dropped_malformed: int = 0
    dropped_rate_limited: int = 0  # unauthenticated requests met with silence
    dropped_no_permission: int = 0
    dropped_no_allocation: int = 0
    dropped_bandwidth: int = 0
    dropped_bandwidth_bytes: int = 0
    retransmissions: int = 0  # answered from the transaction cache
    draining: int = 0  # gauge: 1 while new Allocates are sent elsewhere
    redirected: int = 0  # Allocates answered 300 Try Alternate (or 508) while draining
    rate_limiter_evictions: int = 0  # buckets pushed out of the full limiter table
