"""The TURN server (RFC 8656) as a state machine: datagrams and time in, outputs out.

The inputs, each returning the outputs to carry out in order (:mod:`.outputs`):

- ``receive(now, transport, client_addr, server_addr, data)``: one STUN message or
  ChannelData frame from a client (over TCP/TLS, one frame cut by ``StreamFramer``);
- ``receive_from_peer(now, relay_addr, peer_addr, data)``: one datagram that arrived on
  a relay socket;
- ``tick(now)``: expire allocations, permissions, channels and cached responses; call
  it at ``next_deadline()`` (or every second or so);
- ``connection_lost(now, transport, client_addr, server_addr)``: a TCP/TLS client went
  away, and its allocation with it (RFC 8656 §7);
- ``peer_connected``, ``peer_accepted``, ``peer_closed``: RFC 6062 peer connections of
  TCP allocations opened, accepted or closed by the IO layer.

How a packet flows.  A client's ChannelData is looked up by 5-tuple, then channel
number; the permission and the user's bandwidth bucket are checked and the payload
slice goes out as ``ToPeer``.  A peer's datagram is looked up by relay address, then
permission (peer IP) and channel (peer address); it goes back to the client as
ChannelData, or as a Data indication built by hand (its XOR-PEER-ADDRESS cached per
peer).  Neither path decodes STUN or allocates beyond the output.

How a request flows: decode; a retransmission (same 5-tuple and transaction id within
40 s) gets the cached response byte for byte; Binding is answered at once;
Allocate, Refresh, CreatePermission and ChannelBind go through the long-term credential
check (:mod:`.auth`) and then their handler.  Every answer to an unauthenticated
request (challenge, 400, 438, Binding) spends a token of the client IP's bucket; past
the bucket the server is silent, so it cannot be used to reflect traffic.  The table of
buckets is bounded and evicts its oldest when full, so spoofed sources cannot lock real
clients out; authenticated answers spend nothing.

Choices where RFC 8656 leaves room: UDP relaying, and TCP (RFC 6062) for clients on TCP
or TLS — Connect answered once ``peer_connected`` reports the connection, ConnectionBind
checked against the key of the allocation holding the connection it names (it comes
on a new connection, from a port its nonce was not minted for) and spliced once, peers'
connections let in by permission, unbound ones closed after 30 s; other transports get
442; EVEN-PORT is honoured (an even port), and
with its R bit the next port is set aside for 30 s under a RESERVATION-TOKEN that only
the same user can claim, at any worker of the site (:mod:`.reservations`; a token holds
at the site that minted it, where the client's 5-tuple lands; a forged, expired or
another user's token gets 508);
DONT-FRAGMENT is accepted and passed on in ``OpenRelay`` unless
``TurnConfig.dont_fragment`` is off (then 420); a dual-stack Allocate whose IPv6 half
cannot be had still succeeds with IPv4 and an ADDRESS-ERROR-CODE; DONT-FRAGMENT in a
Send indication is ignored (the relay socket's setting comes from the Allocate).  A REST
credential's expiry is checked when the allocation is made; later requests are checked
against the key remembered with the allocation.  Requests of other methods get 400.
Binding requests get XOR-MAPPED-ADDRESS, and where the server has a second IP and port
(``TurnConfig.nat_pairs``) RFC 5780's RESPONSE-ORIGIN and OTHER-ADDRESS, with
CHANGE-REQUEST answered from the other address (:mod:`.discovery`; without a second
address CHANGE-REQUEST gets 420); RFC 3489 Bindings, without the magic cookie, get
MAPPED-ADDRESS (:mod:`..stun_classic`).  A relay being drained
(:meth:`TurnServer.drain`) answers a new Allocate, once it is authenticated, with 300
Try Alternate naming an ALTERNATE-SERVER of the client's family (and ALTERNATE-DOMAIN),
or 508 when there is none; everything else, existing allocations' Refreshes included,
goes on as before.  Nonces carry no RFC 8489 security-feature cookie, so clients keep to
MD5 keys unless they send PASSWORD-ALGORITHM SHA-256 of their own accord (accepted);
USERHASH finds static users only (a REST username cannot be recovered from its hash).

``now`` is Unix time in seconds everywhere: nonces and REST credentials carry Unix
timestamps and are compared across sites.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import random
import struct
from dataclasses import dataclass
from typing import Literal, Protocol

from ..stun import (
    ATTRIBUTES,
    CHANNEL_MIN,
    MAGIC_COOKIE,
    Attr,
    Class,
    Message,
    Method,
    PasswordAlgorithm,
    StunError,
    check_fingerprint,
    check_integrity,
    decode,
    encode,
    integrity_of,
    pack_address,
    pack_address_error,
    pack_attr_list,
    pack_error,
    pack_string,
    pack_uint32,
    pack_xor_address,
    unpack_algorithm,
    unpack_byte_rffu,
    unpack_channel,
    unpack_even_port,
    unpack_string,
    unpack_uint32,
    unpack_xor_address,
)
from ..stun_classic import decode_binding, encode_binding_response
from .allocation import Addr, Allocation, Channel, FiveTuple, PeerConnection, UserState
from .auth import Authenticator, Credentials
from .config import Counters, TurnConfig
from .discovery import NatDiscovery
from .outputs import (
    ClosePeer,
    CloseRelay,
    ConnectPeer,
    OpenRelay,
    Output,
    Splice,
    ToClient,
    ToPeer,
)
from .policy import PeerPolicy, RateLimiter, TokenBucket
from .ports import RelayPorts
from .reservations import Reservations
from .sessions import session_view


class QuotaLedger(Protocol):
    """Allocations per user counted beyond this server (the other workers' too); the
    IO layer gives one to every worker of a site."""

    def take(self, user: str, quota: int) -> bool:
        """Count one more allocation of ``user`` unless it holds ``quota`` already."""
        ...

    def give_back(self, user: str) -> None:
        """One allocation of ``user`` ended."""
        ...


REASONS = {
    300: "Try Alternate",
    400: "Bad Request",
    401: "Unauthenticated",
    403: "Forbidden",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    440: "Address Family not Supported",
    441: "Wrong Credentials",
    442: "Unsupported Transport Protocol",
    443: "Peer Address Family Mismatch",
    446: "Connection Already Exists",
    447: "Connection Timeout or Failure",
    486: "Allocation Quota Reached",
    508: "Insufficient Capacity",
}
UDP = 17
TCP = 6
PEER_CONNECTION_TIMEOUT = 30.0  # RFC 6062 §5.3: unbound peer connections close after it
MAX_PEER_CONNECTIONS = 100_000
_FAMILY = {1: 4, 2: 6}  # REQUESTED-ADDRESS-FAMILY value -> IP version
_WIRE_FAMILY = {4: 1, 6: 2}
_TURN_METHODS = frozenset(
    (
        Method.ALLOCATE,
        Method.REFRESH,
        Method.CREATE_PERMISSION,
        Method.CHANNEL_BIND,
        Method.CONNECT,
        Method.CONNECTION_BIND,
    )
)
_PAD = (b"", b"\x00", b"\x00\x00", b"\x00\x00\x00")
_CD = struct.Struct("!HH")
_DATA_HEAD = struct.Struct("!HHI")
_DATA_TYPE = 0x0017  # Data indication
_XPA = int(Attr.XOR_PEER_ADDRESS)
_DATA = int(Attr.DATA)
_PRUNE_EVERY = 10.0


_COOKIE = MAGIC_COOKIE.to_bytes(4, "big")


def _xor_peer_parts(peer: Addr) -> tuple[bytes, int]:
    """XOR-PEER-ADDRESS of ``peer`` made once: (whole attribute, -1) for IPv4, or for
    IPv6 (attribute up to the address, the address as an int) to XOR per message."""
    ip = ipaddress.ip_address(peer[0])
    xport = peer[1] ^ 0x2112
    if ip.version == 4:
        return struct.pack("!HHBBHI", _XPA, 8, 0, 1, xport, int(ip) ^ MAGIC_COOKIE), -1
    return struct.pack("!HHBBH", _XPA, 20, 0, 2, xport), int(ip)


def rate_key(host: str) -> str:
    """Whom the unauthenticated rate limit counts: an IPv4 address, or an IPv6 /64 (one
    host holds a whole /64, and would otherwise fill the limiter's table alone)."""
    if ":" not in host:
        return host
    return str(ipaddress.ip_network(f"{host}/64", strict=False))


MAX_PEERS_PER_REQUEST = 32  # XOR-PEER-ADDRESS attributes in one CreatePermission
MAX_PERMISSIONS = 1000  # peers one allocation may hold permissions for (IPv6 has plenty)


@dataclass(frozen=True, slots=True)
class Drain:
    """A relay being drained before maintenance: where its new allocations go instead
    (``alternates``, tried in order of the client's family) and the name TLS clients
    check the alternate's certificate against (``domain``, ALTERNATE-DOMAIN)."""

    alternates: tuple[Addr, ...] = ()
    domain: str | None = None


@dataclass(slots=True)
class _Auth:
    username: str
    user: str
    key: bytes
    integrity: Literal["sha1", "sha256"]
    algorithm: int


@dataclass(slots=True)
class _Pending:
    """A Connect waiting for its peer connection (RFC 6062)."""

    five: FiveTuple
    msg: Message
    auth: _Auth
    fp: bool


class TurnServer:
    """A TURN relay's decisions; the IO layer owns sockets and clock (module docstring).

    ``now`` is Unix time in seconds (nonces and REST credentials are compared across
    sites).  ``counters`` is read by the IO layer for metrics.
    """

    def __init__(
        self,
        config: TurnConfig,
        credentials: Credentials,
        ports: RelayPorts,
        now: float,
        rng: random.Random | None = None,
        ledger: QuotaLedger | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.credentials = credentials
        self.ports = ports
        self.counters = Counters()
        self.policy = PeerPolicy(
            config.allow_peers, config.deny_peers, config.refuse_special_peers, config.relayed_peers
        )
        self._auth = Authenticator(credentials)
        self._realm = pack_string(credentials.realm)
        self._limiter = RateLimiter(config.unauth_rate, config.unauth_burst, config.max_rate_keys)
        self._drain: Drain | None = None
        self._nat = NatDiscovery(config.nat_pairs)
        self._reservations = Reservations(
            credentials.fleet_keys[0], config.reservation_lifetime, config.max_reservations
        )
        self._allocs: dict[FiveTuple, Allocation] = {}
        self._peers: dict[int, PeerConnection] = {}  # RFC 6062 connections by id
        self._rng = rng or random.Random()
        self._by_relay: dict[Addr, Allocation] = {}
        self._users: dict[str, UserState] = {}
        self._timers: list[tuple[float, int, Allocation]] = []
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._cache: dict[tuple[FiveTuple, bytes], tuple[float, bytes]] = {}
        self._tid_prefix = (rng or random.Random()).randbytes(4)
        self._tid_next = 0
        self._next_prune = now + _PRUNE_EVERY
        self._max_first = config.max_channel >> 8  # ChannelData's first byte, at most
        self._software: tuple[tuple[int, bytes], ...] = (
            ((Attr.SOFTWARE, pack_string(config.software)),) if config.software else ()
        )
        burst = config.user_burst
        if config.user_bandwidth is not None and burst is None:
            burst = max(config.user_bandwidth, 65536.0)
        self._burst = burst

    # --- what the IO layer asks ---------------------------------------------------

    def allocation(self, transport: str, client_addr: Addr, server_addr: Addr) -> Allocation | None:
        """The allocation of a 5-tuple, or None (read-only use: tests, admin views)."""
        return self._allocs.get((transport, client_addr, server_addr))

    def allocation_at(self, relay_addr: Addr) -> Allocation | None:
        """The allocation holding relayed address ``relay_addr``, or None (read-only)."""
        return self._by_relay.get(relay_addr)

    def allocations(self) -> list[Allocation]:
        """Every allocation now (a copy: safe to hold while the core goes on)."""
        return list(self._allocs.values())

    def sessions(self, now: float) -> list[dict[str, object]]:
        """Every allocation as :func:`.sessions.session_view` describes it (the
        sessions view; safe to call from another thread: the dict is copied at once)."""
        return [session_view(a, now) for a in list(self._allocs.values()) if not a.dead]

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work, or None when nothing is pending."""
        timers = self._timers
        while timers and (timers[0][2].dead or timers[0][2].check_at != timers[0][0]):
            heapq.heappop(timers)
        best = timers[0][0] if timers else None
        if self._cache:
            first = next(iter(self._cache.values()))[0]
            best = first if best is None else min(best, first)
        held = self._reservations.next_due()
        if held is not None:
            best = held if best is None else min(best, held)
        return best

    @property
    def reservations(self) -> int:
        """Ports held now under a RESERVATION-TOKEN (EVEN-PORT with its R bit)."""
        return len(self._reservations)

    def set_credentials(self, credentials: Credentials) -> None:
        """Take new users, REST secrets and fleet keys (a reload).  Allocations made
        before keep the key they were made with, as they do when a REST credential
        expires: a call is not cut off because its user was removed."""
        self.credentials = credentials
        self._auth = Authenticator(credentials)
        self._realm = pack_string(credentials.realm)

    @property
    def draining(self) -> Drain | None:
        """Where new allocations are sent while this relay drains, or None."""
        return self._drain

    def drain(self, drain: Drain | None) -> None:
        """Start draining (new Allocates get 300 Try Alternate, or 508 without an
        alternate), or stop (``None``).  Existing allocations are untouched: they are
        refreshed, relay and expire as before."""
        self._drain = drain
        self.counters.draining = int(drain is not None)

    # --- inputs: the per-packet paths --------------------------------------------

    def receive(
        self, now: float, transport: str, client_addr: Addr, server_addr: Addr, data: bytes
    ) -> list[Output]:
        """One message from a client: STUN, or ChannelData to relay to a peer."""
        if not data:
            return []
        first = data[0]
        if first < 0x40:
            return self._stun(now, (transport, client_addr, server_addr), data)
        c = self.counters
        if first > self._max_first or len(data) < 4:
            c.dropped_malformed += 1
            return []
        alloc = self._allocs.get((transport, client_addr, server_addr))
        if alloc is None:
            c.dropped_no_allocation += 1
            return []
        length = (data[2] << 8) | data[3]
        if len(data) < 4 + length:
            c.dropped_malformed += 1
            return []
        ch = alloc.channels.get((first << 8) | data[1])
        if ch is None or ch.expires <= now or alloc.perms.get(ch.peer[0], 0.0) <= now:
            c.dropped_no_permission += 1
            return []
        bucket = alloc.quota.bucket
        if bucket is not None and not bucket.take(now, length):
            c.dropped_bandwidth += 1
            c.dropped_bandwidth_bytes += length
            return []
        c.packets_to_peer += 1
        c.bytes_to_peer += length
        alloc.packets_to_peer += 1
        alloc.bytes_to_peer += length
        return [ToPeer(ch.relay, ch.peer, data[4 : 4 + length])]

    def receive_from_peer(
        self, now: float, relay_addr: Addr, peer_addr: Addr, data: bytes
    ) -> list[Output]:
        """One datagram from a peer to a relayed address: to the client, if permitted."""
        c = self.counters
        alloc = self._by_relay.get(relay_addr)
        if alloc is None:
            c.dropped_no_allocation += 1
            return []
        if alloc.perms.get(peer_addr[0], 0.0) <= now:
            c.dropped_no_permission += 1
            return []
        n = len(data)
        bucket = alloc.quota.bucket
        if bucket is not None and not bucket.take(now, n):
            c.dropped_bandwidth += 1
            c.dropped_bandwidth_bytes += n
            return []
        ch = alloc.by_peer.get(peer_addr)
        if ch is not None and ch.expires > now and n <= 0xFFFF:
            if alloc.stream:
                out = b"".join((_CD.pack(ch.number, n), data, _PAD[-n & 3]))
            else:
                out = _CD.pack(ch.number, n) + data
        else:
            if n > 0xFFFF - 48:
                c.dropped_malformed += 1
                return []
            out = self._data_indication(alloc, peer_addr, data)
        c.packets_to_client += 1
        c.bytes_to_client += n
        alloc.packets_to_client += 1
        alloc.bytes_to_client += n
        return [ToClient(alloc.transport, alloc.client, alloc.server, out)]

    def _data_indication(self, alloc: Allocation, peer: Addr, data: bytes) -> bytes:
        tid = self._tid_prefix + self._tid_next.to_bytes(8, "big")
        self._tid_next = (self._tid_next + 1) & 0xFFFF_FFFF_FFFF_FFFF
        cached = alloc.peer_attrs.get(peer)
        if cached is None:
            cached = _xor_peer_parts(peer)
            if len(alloc.peer_attrs) >= 256:
                alloc.peer_attrs.clear()
            alloc.peer_attrs[peer] = cached
        head, ip6 = cached
        if ip6 < 0:  # IPv4: the whole attribute, the XOR does not involve the id
            attr = head
        else:
            attr = head + (ip6 ^ int.from_bytes(_COOKIE + tid, "big")).to_bytes(16, "big")
        n = len(data)
        pad = -n & 3
        msg_head = _DATA_HEAD.pack(_DATA_TYPE, len(attr) + 4 + n + pad, MAGIC_COOKIE)
        return b"".join((msg_head, tid, attr, _CD.pack(_DATA, n), data, _PAD[pad]))

    # --- inputs: time and connections ----------------------------------------------

    def tick(self, now: float) -> list[Output]:
        """Expire what is due at ``now``: allocations (``CloseRelay``), permissions, channels."""
        out: list[Output] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            t, _, alloc = heapq.heappop(timers)
            if alloc.dead or alloc.check_at != t:
                continue
            alloc.check_at = float("inf")
            if alloc.expires <= now:
                self.counters.allocations_expired += 1
                out += self._delete(alloc)
            else:
                self._sweep(alloc, now)
        cache = self._cache
        while cache:
            key, (expires, _) = next(iter(cache.items()))
            if expires > now:
                break
            del cache[key]
        reservations = self._reservations
        if self._peers:
            for pc in [p for p in self._peers.values() if p.state == "ready"]:
                if pc.deadline <= now:
                    self.peer_closed(pc.id)
                    out.append(ClosePeer(pc.id))
        for addr in reservations.due(now):
            if not self.ports.reclaim(addr):
                reservations.recheck(addr, now)
        if now >= self._next_prune:
            self._next_prune = now + _PRUNE_EVERY
            self._limiter.prune(now)
            idle = [
                name
                for name, u in self._users.items()
                if u.allocations == 0 and (u.bucket is None or u.bucket.full(now))
            ]
            for name in idle:
                del self._users[name]
        return out

    def connection_lost(
        self, now: float, transport: str, client_addr: Addr, server_addr: Addr
    ) -> list[Output]:
        """A TCP or TLS client connection closed: its allocation ends now."""
        alloc = self._allocs.get((transport, client_addr, server_addr))
        return self._delete(alloc) if alloc is not None else []

    def _sweep(self, alloc: Allocation, now: float) -> None:
        c = self.counters
        due = alloc.expires
        for host, expires in list(alloc.perms.items()):
            if expires <= now:
                del alloc.perms[host]
                c.permissions -= 1
            elif expires < due:
                due = expires
        quarantine = self.config.channel_quarantine
        for number, ch in list(alloc.channels.items()):
            if ch.expires > now:
                due = min(due, ch.expires)
                continue
            if ch.live:
                ch.live = False
                c.channels -= 1
            if ch.expires + quarantine <= now:
                del alloc.channels[number]
                del alloc.by_peer[ch.peer]
            else:
                due = min(due, ch.expires + quarantine)
        self._schedule(alloc, due)

    def _schedule(self, alloc: Allocation, when: float) -> None:
        if when < alloc.check_at:
            alloc.check_at = when
            heapq.heappush(self._timers, (when, next(self._seq), alloc))

    def _delete(self, alloc: Allocation) -> list[Output]:
        c = self.counters
        alloc.dead = True
        del self._allocs[alloc.five_tuple]
        out: list[Output] = []
        for relay in alloc.relays.values():
            del self._by_relay[relay]
            self.ports.give_back(relay)
            out.append(CloseRelay(alloc.id, relay))
        for cid in alloc.connections:
            self._peers.pop(cid, None)
            out.append(ClosePeer(cid))
        alloc.connections.clear()
        c.allocations -= 1
        c.permissions -= len(alloc.perms)
        c.channels -= sum(ch.live for ch in alloc.channels.values())
        alloc.quota.allocations -= 1
        if self.ledger is not None and self.config.user_quota is not None:
            self.ledger.give_back(alloc.user)
        return out

    # --- STUN messages ------------------------------------------------------------

    def _stun(self, now: float, five: FiveTuple, data: bytes) -> list[Output]:
        c = self.counters
        if data[4:8] != _COOKIE and len(data) >= 20:
            return self._classic(now, five, data)
        try:
            msg = decode(data)
        except StunError:
            c.dropped_malformed += 1
            return []
        if msg.has(Attr.FINGERPRINT) and not check_fingerprint(data):
            c.dropped_malformed += 1
            return []
        if msg.cls == Class.REQUEST:
            c.requests += 1
            return self._request(now, five, msg, data)
        if msg.cls == Class.INDICATION and msg.method == Method.SEND:
            return self._send(now, five, msg)
        return []

    def _request(self, now: float, five: FiveTuple, msg: Message, data: bytes) -> list[Output]:
        cached = self._cache.get((five, msg.transaction_id))
        if cached is not None and cached[0] > now:
            self.counters.retransmissions += 1
            return [ToClient(*five, cached[1])]
        fp = msg.has(Attr.FINGERPRINT)
        if msg.method == Method.BINDING:
            return self._binding(now, five, msg, fp)
        if msg.method not in _TURN_METHODS:
            return self._unauthenticated(now, five, msg, 400, (), fp)
        alloc = self._allocs.get(five)
        if msg.method == Method.CONNECTION_BIND:
            auth = self._data_connection_auth(now, five, msg, data)
        else:
            auth = self._authenticate(now, five, msg, data, alloc)
        if isinstance(auth, list):
            return auth
        unknown = self._unknown(msg)
        out: list[Output]
        if unknown:
            out = [self._answer(five, msg, auth, fp, 420, unknown)]
        elif msg.method == Method.ALLOCATE and self._drain is not None and alloc is None:
            out = [self._redirect(five, msg, auth, fp, self._drain)]
        elif msg.method == Method.ALLOCATE:
            out = self._allocate(now, five, msg, auth, fp)
        elif msg.method == Method.CONNECTION_BIND:
            out = self._connection_bind(five, msg, auth, fp, alloc)
        elif alloc is None:
            out = [self._answer(five, msg, auth, fp, 437)]
        elif alloc.username != auth.username:
            out = [self._answer(five, msg, auth, fp, 441)]
        elif msg.method == Method.REFRESH:
            out = self._refresh(now, five, msg, auth, fp, alloc)
        elif msg.method == Method.CREATE_PERMISSION:
            out = [self._create_permission(now, five, msg, auth, fp, alloc)]
        elif msg.method == Method.CONNECT:
            out = self._connect(now, five, msg, auth, fp, alloc)
        else:
            out = [self._channel_bind(now, five, msg, auth, fp, alloc)]
        response = next((o.data for o in out if isinstance(o, ToClient)), None)
        if response is None:  # a Connect, answered when the peer connection opens
            return out
        cache = self._cache
        cache[five, msg.transaction_id] = (now + self.config.transaction_ttl, response)
        if len(cache) > self.config.max_transactions:
            del cache[next(iter(cache))]
        return out

    def _binding(self, now: float, five: FiveTuple, msg: Message, fp: bool) -> list[Output]:
        """A Binding: XOR-MAPPED-ADDRESS; where the server has another address (RFC 5780),
        RESPONSE-ORIGIN and OTHER-ADDRESS too, and CHANGE-REQUEST and RESPONSE-PORT
        honoured (over UDP; PADDING is accepted and not mirrored)."""
        transport, client, server = five
        other = self._nat.other(server) if transport == "udp" and self._nat else None
        change, port = msg.get(Attr.CHANGE_REQUEST), msg.get(Attr.RESPONSE_PORT)
        unsupported = (Attr.CHANGE_REQUEST, Attr.RESPONSE_PORT, Attr.PADDING)
        unknown = self._unknown(msg, unsupported if other is None else ())
        if unknown:
            return self._unauthenticated(now, five, msg, 420, unknown, fp)
        try:
            flags = 0 if change is None else unpack_uint32(change)
            to_port = client[1] if port is None else unpack_uint32(port) >> 16
        except StunError:
            return self._unauthenticated(now, five, msg, 400, (), fp)
        attrs: tuple[tuple[int, bytes], ...] = (
            (Attr.XOR_MAPPED_ADDRESS, pack_xor_address(client, msg.transaction_id)),
        )
        if other is None:
            return self._unauthenticated(now, five, msg, 0, attrs, fp)
        origin = self._nat.origin(server, bool(flags & 4), bool(flags & 2)) or server
        attrs += (
            (Attr.RESPONSE_ORIGIN, pack_address(origin)),
            (Attr.OTHER_ADDRESS, pack_address(other)),
        )
        out = self._unauthenticated(now, five, msg, 0, attrs, fp)
        # RESPONSE-PORT (RFC 5780 §7.5): the answer goes to another port of the same IP
        to = client if to_port == client[1] or not to_port else (client[0], to_port)
        return [ToClient(transport, to, origin, o.data) for o in out if type(o) is ToClient]

    def _classic(self, now: float, five: FiveTuple, data: bytes) -> list[Output]:
        """An RFC 3489 Binding (no magic cookie): MAPPED-ADDRESS, SOURCE-ADDRESS and,
        with a second address, CHANGED-ADDRESS; CHANGE-REQUEST honoured (over UDP)."""
        c = self.counters
        try:
            tid, flags = decode_binding(data)
        except StunError:
            c.dropped_malformed += 1
            return []
        c.requests += 1
        transport, client, server = five
        other = self._nat.other(server) if transport == "udp" and self._nat else None
        if flags and other is None:
            c.refused_other += 1  # no other address to answer from: as if lost
            return []
        origin = self._nat.origin(server, bool(flags & 4), bool(flags & 2)) if flags else None
        origin = origin or server
        if not self._allow(now, client[0]):
            return []
        return [
            ToClient(transport, client, origin, encode_binding_response(tid, client, origin, other))
        ]

    def _unknown(
        self, msg: Message, unsupported: tuple[int, ...] = ()
    ) -> tuple[tuple[int, bytes], ...]:
        """An UNKNOWN-ATTRIBUTES attribute for comprehension-required types not handled."""
        unknown = tuple(
            t
            for t, _ in msg.attributes
            if t < 0x8000
            and (
                t not in ATTRIBUTES
                or t in unsupported
                or (t == Attr.DONT_FRAGMENT and not self.config.dont_fragment)
            )
        )
        return ((Attr.UNKNOWN_ATTRIBUTES, pack_attr_list(unknown)),) if unknown else ()

    def _reply(
        self,
        msg: Message,
        code: int,
        attrs: tuple[tuple[int, bytes], ...],
        auth: _Auth | None,
        fp: bool,
    ) -> bytes:
        """A success (``code`` 0) or error response to ``msg``, signed with the auth key."""
        if code:
            attrs = ((Attr.ERROR_CODE, pack_error(code, REASONS.get(code, "Error"))), *attrs)
            c = self.counters
            if code == 403:
                c.refused_peer += 1
            elif code == 486:
                c.refused_user_quota += 1
            elif code == 508:
                c.refused_capacity += 1
            elif code not in (300, 401, 438):
                c.refused_other += 1
        cls = Class.ERROR if code else Class.SUCCESS
        out = Message(msg.method, cls, msg.transaction_id, (*attrs, *self._software))
        if auth is None:
            return encode(out, fingerprint=fp)
        return encode(out, auth.key, auth.integrity, fp)

    def _answer(
        self,
        five: FiveTuple,
        msg: Message,
        auth: _Auth,
        fp: bool,
        code: int = 0,
        attrs: tuple[tuple[int, bytes], ...] = (),
    ) -> ToClient:
        return ToClient(*five, self._reply(msg, code, attrs, auth, fp))

    def _unauthenticated(
        self,
        now: float,
        five: FiveTuple,
        msg: Message,
        code: int,
        attrs: tuple[tuple[int, bytes], ...],
        fp: bool,
    ) -> list[Output]:
        """An answer that proves nothing about the sender: rate limited per client IP."""
        if not self._allow(now, five[1][0]):
            return []
        return [ToClient(*five, self._reply(msg, code, attrs, None, fp))]

    def _allow(self, now: float, host: str) -> bool:
        """Spend a token of ``host``'s unauthenticated-answer bucket, if it has one."""
        limiter = self._limiter
        allowed = limiter.allow(now, rate_key(host))
        self.counters.rate_limiter_evictions = limiter.evicted
        if not allowed:
            self.counters.dropped_rate_limited += 1
        return allowed

    def _challenge(self, now: float, five: FiveTuple, msg: Message, code: int) -> list[Output]:
        nonce = pack_string(self._auth.nonce(now, five[1]))
        attrs = ((Attr.REALM, self._realm), (Attr.NONCE, nonce))
        return self._unauthenticated(now, five, msg, code, attrs, msg.has(Attr.FINGERPRINT))

    def _authenticate(
        self, now: float, five: FiveTuple, msg: Message, data: bytes, alloc: Allocation | None
    ) -> _Auth | list[Output]:
        """The long-term credential check of RFC 8489 §9.2.4, in its order."""
        c = self.counters
        integrity = integrity_of(msg)
        if integrity is None:
            c.challenges += 1
            return self._challenge(now, five, msg, 401)
        raw_user, raw_hash = msg.get(Attr.USERNAME), msg.get(Attr.USERHASH)
        raw_realm, raw_nonce = msg.get(Attr.REALM), msg.get(Attr.NONCE)
        fp = msg.has(Attr.FINGERPRINT)
        if (raw_user is None and raw_hash is None) or raw_realm is None or raw_nonce is None:
            return self._unauthenticated(now, five, msg, 400, (), fp)
        if raw_user is not None and len(raw_user) >= 509:  # RFC 8489 §14.3
            return self._unauthenticated(now, five, msg, 400, (), fp)
        try:
            nonce, realm = unpack_string(raw_nonce), unpack_string(raw_realm)
            if raw_user is not None:
                username: str | None = unpack_string(raw_user)
            else:
                username = self._auth.username_of_hash(raw_hash or b"")
            algorithm = PasswordAlgorithm.MD5
            raw_algorithm = msg.get(Attr.PASSWORD_ALGORITHM)
            if raw_algorithm is not None:
                algorithm = PasswordAlgorithm(unpack_algorithm(raw_algorithm)[0])
        except (StunError, ValueError):
            return self._unauthenticated(now, five, msg, 400, (), fp)
        if not self._auth.nonce_valid(nonce, now, five[1]):
            c.stale_nonces += 1
            return self._challenge(now, five, msg, 438)
        if username is not None and realm == self.credentials.realm:
            if alloc is not None and alloc.username == username and alloc.algorithm == algorithm:
                user, keys = alloc.user, [alloc.key]
            else:
                identity, keys = self._auth.keys(username, now, algorithm)
                user = identity.user
            for key in keys:
                if check_integrity(data, msg, key):
                    return _Auth(username, user, key, integrity, algorithm)
        c.auth_failures += 1
        return self._challenge(now, five, msg, 401)

    # --- the methods ----------------------------------------------------------------

    def _lifetime(self, msg: Message) -> int:
        """The desired lifetime (RFC 8656 §7.2, §7.3): 0, or default..max; StunError."""
        raw = msg.get(Attr.LIFETIME)
        config = self.config
        if raw is None:
            return config.default_lifetime
        asked = unpack_uint32(raw)
        if asked == 0:
            return 0
        return min(max(asked, config.default_lifetime), config.max_lifetime)

    def _user(self, name: str, now: float) -> UserState:
        user = self._users.get(name)
        if user is None:
            bucket = None
            if self.config.user_bandwidth is not None and self._burst is not None:
                bucket = TokenBucket(self.config.user_bandwidth, self._burst, now)
            user = self._users[name] = UserState(0, bucket)
        return user

    def _redirect(
        self, five: FiveTuple, msg: Message, auth: _Auth, fp: bool, drain: Drain
    ) -> ToClient:
        """300 Try Alternate (RFC 8489 §10): an alternate of the client's family if there
        is one (RFC 8489 §14.15), and ALTERNATE-DOMAIN for TLS clients to check.  Sent
        only in answer to an authenticated Allocate, signed, so nobody can forge it."""
        self.counters.redirected += 1
        family = 6 if ":" in five[1][0] else 4
        same = [a for a in drain.alternates if (6 if ":" in a[0] else 4) == family]
        if not same:
            return self._answer(five, msg, auth, fp, 508)
        attrs: list[tuple[int, bytes]] = [(Attr.ALTERNATE_SERVER, pack_address(same[0]))]
        if drain.domain:
            attrs.append((Attr.ALTERNATE_DOMAIN, pack_string(drain.domain)))
        return self._answer(five, msg, auth, fp, 300, tuple(attrs))

    def _allocate(
        self, now: float, five: FiveTuple, msg: Message, auth: _Auth, fp: bool
    ) -> list[Output]:
        def fail(code: int) -> list[Output]:
            return [self._answer(five, msg, auth, fp, code)]

        if five in self._allocs:
            return fail(437)
        get = msg.get
        try:
            transport = get(Attr.REQUESTED_TRANSPORT)
            if transport is None:
                return fail(400)
            requested = unpack_byte_rffu(transport)
            tcp = requested == TCP
            if tcp and (
                five[0] not in ("tcp", "tls")
                or get(Attr.EVEN_PORT) is not None
                or get(Attr.RESERVATION_TOKEN) is not None
                or get(Attr.ADDITIONAL_ADDRESS_FAMILY) is not None
                or msg.has(Attr.DONT_FRAGMENT)
            ):
                return fail(400)  # RFC 6062 §5.1
            if requested not in (UDP, TCP) or (tcp and not self.config.tcp_relay):
                return fail(442)
            family_raw = get(Attr.REQUESTED_ADDRESS_FAMILY)
            additional_raw = get(Attr.ADDITIONAL_ADDRESS_FAMILY)
            even_raw = get(Attr.EVEN_PORT)
            token = get(Attr.RESERVATION_TOKEN)
            if token is not None and (
                even_raw is not None or family_raw is not None or additional_raw is not None
            ):
                return fail(400)  # RFC 8656 §7.2: a token names the family and port itself
            if token is not None and len(token) != 8:
                return fail(400)
            if family_raw is not None and additional_raw is not None:
                return fail(400)
            even = reserve = False
            if even_raw is not None:
                if additional_raw is not None:
                    return fail(400)
                reserve = unpack_even_port(even_raw)
                even = True
            families = [4]
            if family_raw is not None:
                family = _FAMILY.get(unpack_byte_rffu(family_raw))
                if family is None:
                    return fail(440)
                families = [family]
            if additional_raw is not None:
                if unpack_byte_rffu(additional_raw) != 2:
                    return fail(400)
                families = [4, 6]
            lifetime = self._lifetime(msg) or self.config.default_lifetime
        except StunError:
            return fail(400)
        available = self.ports.families()
        if token is None and families[0] not in available:
            return fail(440)
        user = self._user(auth.user, now)
        quota = self.config.user_quota
        if quota is not None and user.allocations >= quota:
            return fail(486)
        if len(self._allocs) >= self.config.max_allocations:
            return fail(508)
        if reserve and self._reservations.full():
            return fail(508)
        ledger = self.ledger if quota is not None else None
        if ledger is not None and quota is not None and not ledger.take(auth.user, quota):
            return fail(486)  # held at other workers
        relay: Addr | None
        reserved: tuple[tuple[int, bytes], ...] = ()
        if token is not None:
            relay = None
            named = self._reservations.check(token, auth.user, now)
            if named is not None:
                relay = self.ports.take_exact(*named)
                families = [named[0]]
            if relay is not None:
                self._reservations.claimed(relay)
        elif reserve:
            pair = self.ports.take_pair(families[0])
            relay = None if pair is None else pair[0]
            if pair is not None:
                held = self._reservations.hold(pair[1], auth.user, now)
                reserved = ((Attr.RESERVATION_TOKEN, held),)
        else:
            relay = self.ports.take(families[0], even)
        if relay is None:
            if ledger is not None:
                ledger.give_back(auth.user)
            return fail(508)
        relays = {families[0]: relay}
        extra: tuple[tuple[int, bytes], ...] = ()
        if len(families) == 2:
            second = self.ports.take(6) if 6 in available else None
            if second is None:
                code = 440 if 6 not in available else 508
                extra = ((Attr.ADDRESS_ERROR_CODE, pack_address_error(2, code, REASONS[code])),)
            else:
                relays[6] = second
        transport_name, client, server = five
        alloc = Allocation(
            id=next(self._ids),
            transport=transport_name,
            client=client,
            server=server,
            username=auth.username,
            user=auth.user,
            key=auth.key,
            algorithm=auth.algorithm,
            quota=user,
            expires=now + lifetime,
            created=now,
            relays=relays,
            tcp=tcp,
            dont_fragment=msg.has(Attr.DONT_FRAGMENT),
            stream=transport_name in ("tcp", "tls"),
        )
        self._allocs[five] = alloc
        for addr in relays.values():
            self._by_relay[addr] = alloc
        user.allocations += 1
        self.counters.allocations += 1
        self.counters.allocations_created += 1
        self._schedule(alloc, alloc.expires)
        tid = msg.transaction_id
        attrs = [(int(Attr.XOR_RELAYED_ADDRESS), pack_xor_address(a, tid)) for a in relays.values()]
        attrs.append((Attr.LIFETIME, pack_uint32(lifetime)))
        attrs.append((Attr.XOR_MAPPED_ADDRESS, pack_xor_address(client, tid)))
        out: list[Output] = [
            OpenRelay(alloc.id, a, f, alloc.dont_fragment, tcp) for f, a in relays.items()
        ]
        out.append(self._answer(five, msg, auth, fp, 0, (*attrs, *reserved, *extra)))
        return out

    def _refresh(
        self, now: float, five: FiveTuple, msg: Message, auth: _Auth, fp: bool, alloc: Allocation
    ) -> list[Output]:
        try:
            lifetime = self._lifetime(msg)
            raw = msg.get(Attr.REQUESTED_ADDRESS_FAMILY)
            family = None if raw is None else _FAMILY.get(unpack_byte_rffu(raw), 0)
        except StunError:
            return [self._answer(five, msg, auth, fp, 400)]
        if family is not None and family not in alloc.relays:
            return [self._answer(five, msg, auth, fp, 443)]
        attrs = ((Attr.LIFETIME, pack_uint32(lifetime)),)
        if lifetime:
            alloc.expires = now + lifetime
            self._schedule(alloc, alloc.expires)
            return [self._answer(five, msg, auth, fp, 0, attrs)]
        response = self._answer(five, msg, auth, fp, 0, attrs)
        if family is not None and len(alloc.relays) > 1:
            return [response, self._close_family(alloc, family)]
        return [response, *self._delete(alloc)]

    def _close_family(self, alloc: Allocation, family: int) -> Output:
        """Drop one half of a dual-stack allocation (Refresh, family, lifetime 0)."""
        relay = alloc.relays.pop(family)
        del self._by_relay[relay]
        self.ports.give_back(relay)
        for host in [h for h in alloc.perms if (":" in h) == (family == 6)]:
            del alloc.perms[host]
            self.counters.permissions -= 1
        for ch in [ch for ch in alloc.channels.values() if ch.relay == relay]:
            del alloc.channels[ch.number]
            del alloc.by_peer[ch.peer]
            self.counters.channels -= ch.live
        return CloseRelay(alloc.id, relay)

    def _peer(self, msg: Message, raw: bytes, alloc: Allocation) -> tuple[int, Addr, Addr]:
        """(0, peer, relay) for an allowed peer, else (error code, ...); StunError."""
        peer = unpack_xor_address(raw, msg.transaction_id)
        port = None if msg.method == Method.CREATE_PERMISSION else peer[1]
        if self.policy.refusal(peer[0], port) is not None:
            return 403, peer, peer
        relay = alloc.relay_for(peer[0])
        if relay is None:
            return 443, peer, peer
        return 0, peer, relay

    def _permit(self, alloc: Allocation, host: str, now: float) -> None:
        if host not in alloc.perms:
            self.counters.permissions += 1
        expires = alloc.perms[host] = now + self.config.permission_lifetime
        self._schedule(alloc, expires)

    def _create_permission(
        self, now: float, five: FiveTuple, msg: Message, auth: _Auth, fp: bool, alloc: Allocation
    ) -> ToClient:
        raws = msg.get_all(Attr.XOR_PEER_ADDRESS)
        if not raws or len(raws) > MAX_PEERS_PER_REQUEST:
            return self._answer(five, msg, auth, fp, 400)
        hosts = []
        for raw in raws:
            try:
                code, peer, _ = self._peer(msg, raw, alloc)
            except StunError:
                return self._answer(five, msg, auth, fp, 400)
            if code:
                return self._answer(five, msg, auth, fp, code)
            hosts.append(peer[0])
        if len(alloc.perms.keys() | set(hosts)) > MAX_PERMISSIONS:
            return self._answer(five, msg, auth, fp, 508)
        for host in hosts:
            self._permit(alloc, host, now)
        return self._answer(five, msg, auth, fp)

    def _channel_bind(
        self, now: float, five: FiveTuple, msg: Message, auth: _Auth, fp: bool, alloc: Allocation
    ) -> ToClient:
        raw_number, raw_peer = msg.get(Attr.CHANNEL_NUMBER), msg.get(Attr.XOR_PEER_ADDRESS)
        if raw_number is None or raw_peer is None:
            return self._answer(five, msg, auth, fp, 400)
        try:
            number = unpack_channel(raw_number)
            code, peer, relay = self._peer(msg, raw_peer, alloc)
        except StunError:
            return self._answer(five, msg, auth, fp, 400)
        if not CHANNEL_MIN <= number <= self.config.max_channel:
            return self._answer(five, msg, auth, fp, 400)
        if code:
            return self._answer(five, msg, auth, fp, code)
        ch, other = alloc.channels.get(number), alloc.by_peer.get(peer)
        if (ch is not None and ch.peer != peer) or (other is not None and other.number != number):
            return self._answer(five, msg, auth, fp, 400)  # RFC 8656 §11.2: no rebinding
        expires = now + self.config.channel_lifetime
        if ch is None:
            ch = Channel(number, peer, relay, expires)
            alloc.channels[number] = alloc.by_peer[peer] = ch
            self.counters.channels += 1
        else:
            ch.expires = expires
            if not ch.live:
                ch.live = True
                self.counters.channels += 1
        self._schedule(alloc, expires)
        self._permit(alloc, peer[0], now)
        return self._answer(five, msg, auth, fp)

    # --- RFC 6062: TCP allocations -------------------------------------------------

    def _new_connection_id(self) -> int:
        while True:
            cid = self._rng.getrandbits(32)
            if cid and cid not in self._peers:
                return cid

    def _connect(
        self, now: float, five: FiveTuple, msg: Message, auth: _Auth, fp: bool, alloc: Allocation
    ) -> list[Output]:
        """Connect (RFC 6062 §5.2): open a TCP connection to the peer; answered by
        :meth:`peer_connected`."""
        raw = msg.get(Attr.XOR_PEER_ADDRESS)
        if not alloc.tcp or raw is None:
            return [self._answer(five, msg, auth, fp, 400)]
        try:
            code, peer, relay = self._peer(msg, raw, alloc)
        except StunError:
            return [self._answer(five, msg, auth, fp, 400)]
        if code:
            return [self._answer(five, msg, auth, fp, code)]
        if any(self._peers[c].peer == peer for c in alloc.connections):
            return [self._answer(five, msg, auth, fp, 446)]
        if len(self._peers) >= MAX_PEER_CONNECTIONS:
            return [self._answer(five, msg, auth, fp, 508)]
        self._permit(alloc, peer[0], now)
        cid = self._new_connection_id()
        deadline = now + PEER_CONNECTION_TIMEOUT
        pending = _Pending(five, msg, auth, fp)
        self._peers[cid] = PeerConnection(cid, alloc, peer, "connecting", deadline, pending)
        alloc.connections.add(cid)
        return [ConnectPeer(cid, relay, peer)]

    def peer_connected(self, now: float, connection: int, ok: bool) -> list[Output]:
        """The TCP connection a Connect asked for opened (``ok``) or failed: answer it."""
        pc = self._peers.get(connection)
        req = None if pc is None else pc.request
        if pc is None or pc.state != "connecting" or not isinstance(req, _Pending):
            return [ClosePeer(connection)] if ok else []
        pc.request = None
        if not ok:
            self.peer_closed(connection)
            return [self._answer(req.five, req.msg, req.auth, req.fp, 447)]
        pc.state, pc.deadline = "ready", now + PEER_CONNECTION_TIMEOUT
        attrs = ((Attr.CONNECTION_ID, pack_uint32(connection)),)
        return [self._answer(req.five, req.msg, req.auth, req.fp, 0, attrs)]

    def peer_accepted(
        self, now: float, relay_addr: Addr, peer_addr: Addr
    ) -> tuple[int | None, list[Output]]:
        """A peer opened a TCP connection to a TCP allocation's relayed address: its id
        and a ConnectionAttempt to the client if the peer has a permission, else None
        (close it)."""
        alloc = self._by_relay.get(relay_addr)
        if alloc is None or not alloc.tcp or alloc.perms.get(peer_addr[0], 0.0) <= now:
            return None, []
        if len(self._peers) >= MAX_PEER_CONNECTIONS:
            return None, []
        cid = self._new_connection_id()
        deadline = now + PEER_CONNECTION_TIMEOUT
        self._peers[cid] = PeerConnection(cid, alloc, peer_addr, "ready", deadline)
        alloc.connections.add(cid)
        tid = self._tid_prefix + self._rng.randbytes(8)
        attrs = (
            (int(Attr.XOR_PEER_ADDRESS), pack_xor_address(peer_addr, tid)),
            (int(Attr.CONNECTION_ID), pack_uint32(cid)),
        )
        data = encode(Message(Method.CONNECTION_ATTEMPT, Class.INDICATION, tid, attrs))
        return cid, [ToClient(alloc.transport, alloc.client, alloc.server, data)]

    def peer_closed(self, connection: int) -> None:
        """A peer connection (or the client connection spliced to it) closed."""
        pc = self._peers.pop(connection, None)
        if pc is not None:
            pc.alloc.connections.discard(connection)

    def _data_connection_auth(
        self, now: float, five: FiveTuple, msg: Message, data: bytes
    ) -> _Auth | list[Output]:
        """ConnectionBind comes on a new connection, from a port its nonce was not minted
        for; it is checked against the key of the allocation that holds the connection
        it names instead (one use: a replay finds the connection bound already)."""
        raw, integrity = msg.get(Attr.CONNECTION_ID), integrity_of(msg)
        if integrity is None:
            self.counters.challenges += 1
            return self._challenge(now, five, msg, 401)
        try:
            pc = None if raw is None else self._peers.get(unpack_uint32(raw))
            user = unpack_string(msg.get(Attr.USERNAME) or b"")
        except StunError:
            pc = None
        alloc = None if pc is None else pc.alloc
        if alloc is None or user != alloc.username or not check_integrity(data, msg, alloc.key):
            self.counters.auth_failures += 1
            return self._challenge(now, five, msg, 401)
        return _Auth(alloc.username, alloc.user, alloc.key, integrity, alloc.algorithm)

    def _connection_bind(
        self, five: FiveTuple, msg: Message, auth: _Auth, fp: bool, alloc: Allocation | None
    ) -> list[Output]:
        """ConnectionBind (RFC 6062 §5.4) on a new client connection: splice it to the
        peer connection it names."""
        raw = msg.get(Attr.CONNECTION_ID)
        if alloc is not None or five[0] not in ("tcp", "tls") or raw is None:
            return [self._answer(five, msg, auth, fp, 400)]
        try:
            pc = self._peers.get(unpack_uint32(raw))
        except StunError:
            return [self._answer(five, msg, auth, fp, 400)]
        if pc is None or pc.state != "ready":
            return [self._answer(five, msg, auth, fp, 400)]
        if pc.alloc.username != auth.username:
            return [self._answer(five, msg, auth, fp, 441)]
        pc.state = "bound"
        return [self._answer(five, msg, auth, fp), Splice(*five, pc.id)]

    def _send(self, now: float, five: FiveTuple, msg: Message) -> list[Output]:
        c = self.counters
        alloc = self._allocs.get(five)
        if alloc is None:
            c.dropped_no_allocation += 1
            return []
        raw_peer, data = msg.get(Attr.XOR_PEER_ADDRESS), msg.get(Attr.DATA)
        try:
            if raw_peer is None or data is None:
                raise StunError("Send without XOR-PEER-ADDRESS or DATA")
            peer = unpack_xor_address(raw_peer, msg.transaction_id)
        except StunError:
            c.dropped_malformed += 1
            return []
        relay = alloc.relay_for(peer[0])
        if relay is None or alloc.perms.get(peer[0], 0.0) <= now:
            # permissions exist only for allowed peers, so this also refuses every
            # forbidden one; count which it was
            if self.policy.refusal(peer[0]) is not None:
                c.refused_peer += 1
            else:
                c.dropped_no_permission += 1
            return []
        relayed = self.policy.relayed
        if relayed and peer[0] in relayed and self.policy.relayed_refusal(*peer) is not None:
            c.refused_peer += 1  # the relay's own IP, but not a relayed port
            return []
        bucket = alloc.quota.bucket
        if bucket is not None and not bucket.take(now, len(data)):
            c.dropped_bandwidth += 1
            c.dropped_bandwidth_bytes += len(data)
            return []
        c.packets_to_peer += 1
        c.bytes_to_peer += len(data)
        alloc.packets_to_peer += 1
        alloc.bytes_to_peer += len(data)
        return [ToPeer(relay, peer, data)]


__all__ = ["REASONS", "Drain", "QuotaLedger", "TurnServer"]
