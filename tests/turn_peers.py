"""Peers for TURN (RFC 8656) interop tests and benchmarks: the servers, the peer tools, a
wire tap and a small TURN client of our own.

Nothing here knows which server it talks to: every function takes a host and a port, so
the same harness that is proved against coturn today is pointed at ``python -m anyedge
turn serve`` when that exists (add one line to :data:`TURN_SERVERS`).  All traffic stays
on loopback; every process started here is ended by its pid and waited for.

Servers
    :func:`start_coturn` writes a turnserver config in a work directory and starts
    coturn's ``turnserver`` on 127.0.0.1; it returns a :class:`Coturn` (a
    :class:`ServerProcess`): ``.host``, ``.port``, ``.pid``, ``.rss_kib()``, ``.stop()``
    and a context manager.  :data:`TURN_SERVERS` maps a server's name to a factory
    ``(workdir, port, *, users, secret, relay_ports, workers) -> ServerProcess``; a factory
    raises :class:`ServerUnavailable` when its server is not installed.

Peer tools
    :func:`run_uclient` runs coturn's ``turnutils_uclient`` against any TURN server, with
    a ``turnutils_peer`` (a UDP echo) started on loopback as the peer, and parses its
    summary.  :func:`aioice_exchange` relays datagrams to an in-process UDP echo through
    an ``aioice`` TURN endpoint.  :func:`aiortc_datachannel` connects two aiortc peer
    connections with relay-only ICE and sends messages over a data channel.

Wire tap
    :class:`WireTap` is a UDP proxy put between the clients and the server; it names
    every datagram it forwards (``"ChannelBind request"``, ``"ChannelData"``, ``"Send
    indication"`` ...), which is how the tests show what each tool puts on the wire.

Our own client and load generator
    :class:`TurnUdpClient` (blocking) and :func:`allocate_many` (asyncio, concurrent) speak
    just enough TURN over UDP for the benchmarks: Allocate with long-term credentials,
    CreatePermission, ChannelBind, Send indications, ChannelData, Refresh.  They check the
    MESSAGE-INTEGRITY of every authenticated response.  :func:`blast` sends ChannelData as
    fast as it can (or at a set rate) for a bounded time; ``python tests/turn_peers.py
    blast ...`` runs it in its own process and prints a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import enum
import hashlib
import hmac
import ipaddress
import json
import os
import random
import re
import secrets
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, cast

LOOPBACK = "127.0.0.1"
Address = tuple[str, int]

# --------------------------------------------------------------------------------------
# STUN / TURN messages (RFC 8489, RFC 8656)

MAGIC_COOKIE = 0x2112A442
UDP_TRANSPORT = 17  # REQUESTED-TRANSPORT protocol number


class Method(enum.IntEnum):
    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009


class Class(enum.IntEnum):
    REQUEST = 0
    INDICATION = 1
    SUCCESS = 2
    ERROR = 3


class Attr(enum.IntEnum):
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    CHANNEL_NUMBER = 0x000C
    LIFETIME = 0x000D
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016
    REQUESTED_TRANSPORT = 0x0019
    XOR_MAPPED_ADDRESS = 0x0020
    FINGERPRINT = 0x8028


_METHOD_NAMES = {
    Method.BINDING: "Binding",
    Method.ALLOCATE: "Allocate",
    Method.REFRESH: "Refresh",
    Method.SEND: "Send",
    Method.DATA: "Data",
    Method.CREATE_PERMISSION: "CreatePermission",
    Method.CHANNEL_BIND: "ChannelBind",
}
_CLASS_NAMES = {
    Class.REQUEST: "request",
    Class.INDICATION: "indication",
    Class.SUCCESS: "success",
    Class.ERROR: "error",
}


def method_name(method: int) -> str:
    try:
        return _METHOD_NAMES[Method(method)]
    except ValueError:
        return f"0x{method:03x}"


def message_type(method: int, cls: int) -> int:
    """The 14-bit STUN message type of ``method`` and ``cls`` (RFC 8489 §5)."""
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((cls & 1) << 4)
        | ((cls & 2) << 7)
    )


def split_type(t: int) -> tuple[int, int]:
    """``(method, class)`` of a STUN message type."""
    method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2)
    cls = ((t >> 4) & 1) | ((t >> 7) & 2)
    return method, cls


def is_channel_data(data: bytes) -> bool:
    """ChannelData starts with a channel number 0x4000-0x4FFF (RFC 8656 §12.4)."""
    return len(data) >= 4 and (data[0] & 0xC0) == 0x40


def is_stun(data: bytes) -> bool:
    return (
        len(data) >= 20
        and data[0] & 0xC0 == 0
        and struct.unpack_from("!I", data, 4)[0] == MAGIC_COOKIE
    )


def classify(data: bytes) -> str:
    """A name for one datagram between a TURN client and server: ``"ChannelData"``,
    ``"<Method> <class>"`` (e.g. ``"ChannelBind request"``) or ``"other"``."""
    if is_channel_data(data):
        return "ChannelData"
    if is_stun(data):
        method, cls = split_type(struct.unpack_from("!H", data, 0)[0])
        return f"{method_name(method)} {_CLASS_NAMES[Class(cls)]}"
    return "other"


def xor_address(addr: Address, tid: bytes) -> bytes:
    """An XOR-*-ADDRESS attribute value."""
    ip = ipaddress.ip_address(addr[0])
    port = addr[1] ^ (MAGIC_COOKIE >> 16)
    if ip.version == 4:
        raw = int(ip) ^ MAGIC_COOKIE
        return struct.pack("!BBHI", 0, 1, port, raw)
    key = struct.pack("!I", MAGIC_COOKIE) + tid
    packed = bytes(a ^ b for a, b in zip(ip.packed, key, strict=True))
    return struct.pack("!BBH", 0, 2, port) + packed


def parse_xor_address(value: bytes, tid: bytes) -> Address:
    family, xport = struct.unpack_from("!xBH", value, 0)
    port = xport ^ (MAGIC_COOKIE >> 16)
    if family == 1:
        raw = struct.unpack_from("!I", value, 4)[0] ^ MAGIC_COOKIE
        return str(ipaddress.IPv4Address(raw)), port
    key = struct.pack("!I", MAGIC_COOKIE) + tid
    packed = bytes(a ^ b for a, b in zip(value[4:20], key, strict=True))
    return str(ipaddress.IPv6Address(packed)), port


@dataclass
class StunMessage:
    method: int
    cls: int
    tid: bytes
    attrs: dict[int, bytes] = field(default_factory=dict)
    raw: bytes = b""

    @property
    def error_code(self) -> int | None:
        v = self.attrs.get(Attr.ERROR_CODE)
        if v is None:
            return None
        return (v[2] & 0x07) * 100 + v[3]

    @property
    def reason(self) -> str:
        v = self.attrs.get(Attr.ERROR_CODE, b"\0\0\0\0")
        return v[4:].decode("utf-8", "replace").rstrip("\0")  # coturn ends it with a NUL

    def address(self, attr: int) -> Address | None:
        v = self.attrs.get(attr)
        return None if v is None else parse_xor_address(v, self.tid)


def _attribute(kind: int, value: bytes) -> bytes:
    pad = (-len(value)) % 4
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * pad


def encode_message(
    method: int,
    cls: int,
    tid: bytes,
    attrs: Iterable[tuple[int, bytes]] = (),
    *,
    key: bytes | None = None,
    fingerprint: bool = False,
) -> bytes:
    """A STUN message; with ``key`` it ends with MESSAGE-INTEGRITY (HMAC-SHA1), with
    ``fingerprint`` with FINGERPRINT (RFC 8489 §14.5, §14.7)."""
    body = b"".join(_attribute(k, v) for k, v in attrs)
    t = message_type(method, cls)
    if key is not None:
        head = struct.pack("!HHI", t, len(body) + 24, MAGIC_COOKIE) + tid
        mac = hmac.new(key, head + body, hashlib.sha1).digest()
        body += _attribute(Attr.MESSAGE_INTEGRITY, mac)
    if fingerprint:
        head = struct.pack("!HHI", t, len(body) + 8, MAGIC_COOKIE) + tid
        crc = (binascii.crc32(head + body) ^ 0x5354554E) & 0xFFFFFFFF
        body += _attribute(Attr.FINGERPRINT, struct.pack("!I", crc))
    return struct.pack("!HHI", t, len(body), MAGIC_COOKIE) + tid + body


def parse_message(data: bytes) -> StunMessage:
    """Parse a STUN message; the first of repeated attributes is kept.  Raises
    ``ValueError`` for anything that is not one."""
    if not is_stun(data):
        raise ValueError("not a STUN message")
    t, length = struct.unpack_from("!HH", data, 0)
    if 20 + length > len(data) or length % 4:
        raise ValueError("bad STUN length")
    method, cls = split_type(t)
    tid = data[8:20]
    attrs: dict[int, bytes] = {}
    pos = 20
    while pos + 4 <= 20 + length:
        kind, alen = struct.unpack_from("!HH", data, pos)
        attrs.setdefault(kind, data[pos + 4 : pos + 4 + alen])
        pos += 4 + alen + (-alen) % 4
    return StunMessage(method, cls, tid, attrs, data[: 20 + length])


def integrity_ok(message: StunMessage, key: bytes) -> bool:
    """Whether ``message`` carries a MESSAGE-INTEGRITY that ``key`` made."""
    data = message.raw
    pos = 20
    while pos + 4 <= len(data):
        kind, alen = struct.unpack_from("!HH", data, pos)
        if kind == Attr.MESSAGE_INTEGRITY:
            head = struct.pack("!HH", struct.unpack_from("!H", data, 0)[0], pos - 20 + 24)
            mac = hmac.new(key, head + data[4:pos], hashlib.sha1).digest()
            return hmac.compare_digest(mac, data[pos + 4 : pos + 24])
        pos += 4 + alen + (-alen) % 4
    return False


def long_term_key(user: str, realm: str, password: str) -> bytes:
    return hashlib.md5(f"{user}:{realm}:{password}".encode()).digest()


def rest_credentials(
    secret: str, user: str = "anyedge", ttl: int = 3600, now: float | None = None
) -> tuple[str, str]:
    """TURN REST API credentials (draft-uberti-behave-turn-rest): ``("expiry:user",
    base64(HMAC-SHA1(secret, username)))``, as coturn's ``--use-auth-secret`` wants."""
    username = f"{int(time.time() if now is None else now) + ttl}:{user}"
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(mac).decode()


def channel_data(channel: int, payload: bytes) -> bytes:
    return struct.pack("!HH", channel, len(payload)) + payload


class TurnError(Exception):
    """A TURN request failed: an error response, a timeout or a bad response."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class _Credentials:
    """Long-term credential state of one client: realm and nonce learnt from a 401."""

    def __init__(self, user: str | None, password: str | None) -> None:
        self.user = user
        self.password = password
        self.realm: bytes | None = None
        self.nonce: bytes | None = None
        self.key: bytes | None = None

    def encode(self, method: int, tid: bytes, attrs: Sequence[tuple[int, bytes]]) -> bytes:
        if self.key is None or self.user is None:
            return encode_message(method, Class.REQUEST, tid, attrs)
        assert self.realm is not None
        assert self.nonce is not None
        auth = [
            (Attr.USERNAME, self.user.encode()),
            (Attr.REALM, self.realm),
            (Attr.NONCE, self.nonce),
        ]
        return encode_message(method, Class.REQUEST, tid, [*attrs, *auth], key=self.key)

    def learn(self, response: StunMessage) -> bool:
        """Take realm/nonce from a 401 or 438; whether the request should be retried."""
        code = response.error_code
        if self.user is None or self.password is None or Attr.NONCE not in response.attrs:
            return False
        if code == 401 and Attr.REALM in response.attrs and self.key is None:
            self.realm = response.attrs[Attr.REALM]
            self.nonce = response.attrs[Attr.NONCE]
            self.key = long_term_key(self.user, self.realm.decode(), self.password)
            return True
        if code == 438 and self.key is not None:
            self.nonce = response.attrs[Attr.NONCE]
            return True
        return False

    def check(self, response: StunMessage) -> None:
        if self.key is not None and response.cls in (Class.SUCCESS, Class.ERROR):
            code = response.error_code
            # 401/438 answers are not authenticated (RFC 8489 §9.2.4); all others must be.
            if code not in (401, 438) and not integrity_ok(response, self.key):
                raise TurnError(
                    f"{classify(response.raw)}: MESSAGE-INTEGRITY missing or wrong", code
                )


def _error(method: int, response: StunMessage) -> TurnError:
    return TurnError(
        f"{method_name(method)} failed: {response.error_code} {response.reason}",
        response.error_code,
    )


def _allocate_attrs(lifetime: int | None) -> list[tuple[int, bytes]]:
    attrs: list[tuple[int, bytes]] = [
        (Attr.REQUESTED_TRANSPORT, struct.pack("!B3x", UDP_TRANSPORT))
    ]
    if lifetime is not None:
        attrs.append((Attr.LIFETIME, struct.pack("!I", lifetime)))
    return attrs


class TurnUdpClient:
    """A blocking TURN-over-UDP client with one allocation: just what the benchmarks and
    the harness's own tests need.  Requests are retransmitted (RTO 0.25 s doubling) for at
    most ``timeout`` seconds; authenticated responses must carry a good MESSAGE-INTEGRITY.
    IPv4 peers only (their XOR-PEER-ADDRESS is built before the transaction id exists).
    """

    def __init__(
        self,
        server: Address,
        user: str | None,
        password: str | None,
        *,
        timeout: float = 5.0,
        local: Address = (LOOPBACK, 0),
    ) -> None:
        self.server = server
        self.timeout = timeout
        self.creds = _Credentials(user, password)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(local)
            self.sock.connect(server)
        except OSError:
            self.sock.close()
            raise
        self.relayed: Address | None = None
        self.mapped: Address | None = None
        self.lifetime: int | None = None
        self.channels: dict[int, Address] = {}
        self._inbox: list[bytes] = []

    # -- plumbing

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> TurnUdpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def local(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def _transact(self, method: int, attrs: Sequence[tuple[int, bytes]]) -> StunMessage:
        tid = secrets.token_bytes(12)
        wire = self.creds.encode(method, tid, attrs)
        deadline = time.monotonic() + self.timeout
        rto = 0.25
        while True:
            self.sock.send(wire)
            resend_at = min(time.monotonic() + rto, deadline)
            rto *= 2
            while (left := resend_at - time.monotonic()) > 0:
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(65535)
                except TimeoutError:
                    break
                if not is_stun(data):
                    self._inbox.append(data)
                    continue
                msg = parse_message(data)
                if msg.tid != tid:
                    if msg.cls == Class.INDICATION:
                        self._inbox.append(data)
                    continue
                self.creds.check(msg)
                return msg
            if time.monotonic() >= deadline:
                name = method_name(method)
                raise TurnError(f"{name}: no response from {self.server} in {self.timeout} s")

    def request(self, method: int, attrs: Sequence[tuple[int, bytes]] = ()) -> StunMessage:
        """A request, authenticated once a 401 taught realm and nonce; error → TurnError."""
        msg = self._transact(method, attrs)
        if msg.cls == Class.ERROR and self.creds.learn(msg):
            msg = self._transact(method, attrs)
        if msg.cls == Class.ERROR:
            raise _error(method, msg)
        return msg

    # -- TURN

    def allocate(self, lifetime: int | None = None) -> Address:
        """Allocate a UDP relay; returns the relayed address."""
        msg = self.request(Method.ALLOCATE, _allocate_attrs(lifetime))
        self.relayed = msg.address(Attr.XOR_RELAYED_ADDRESS)
        self.mapped = msg.address(Attr.XOR_MAPPED_ADDRESS)
        if self.relayed is None:
            raise TurnError("Allocate success without XOR-RELAYED-ADDRESS")
        life = msg.attrs.get(Attr.LIFETIME)
        self.lifetime = struct.unpack("!I", life)[0] if life else None
        return self.relayed

    def create_permission(self, *peers: Address) -> None:
        attrs = [(Attr.XOR_PEER_ADDRESS, xor_address(p, b"")) for p in peers]
        # XOR-PEER-ADDRESS of IPv4 does not depend on the transaction id.
        self.request(Method.CREATE_PERMISSION, attrs)

    def channel_bind(self, channel: int, peer: Address) -> None:
        self.request(
            Method.CHANNEL_BIND,
            [
                (Attr.CHANNEL_NUMBER, struct.pack("!H2x", channel)),
                (Attr.XOR_PEER_ADDRESS, xor_address(peer, b"")),
            ],
        )
        self.channels[channel] = peer

    def refresh(self, lifetime: int) -> int:
        msg = self.request(Method.REFRESH, [(Attr.LIFETIME, struct.pack("!I", lifetime))])
        life = msg.attrs.get(Attr.LIFETIME)
        return struct.unpack("!I", life)[0] if life else lifetime

    def release(self) -> None:
        """Delete the allocation (Refresh with LIFETIME 0)."""
        self.refresh(0)
        self.relayed = None

    def send_indication(self, peer: Address, data: bytes) -> None:
        tid = secrets.token_bytes(12)
        self.sock.send(
            encode_message(
                Method.SEND,
                Class.INDICATION,
                tid,
                [(Attr.XOR_PEER_ADDRESS, xor_address(peer, tid)), (Attr.DATA, data)],
            )
        )

    def send_channel(self, channel: int, data: bytes) -> None:
        self.sock.send(channel_data(channel, data))

    def receive(self, timeout: float = 2.0) -> tuple[Address, bytes, str]:
        """The next datagram relayed from a peer: ``(peer, payload, "ChannelData" or
        "Data indication")``.  Raises ``TimeoutError``."""
        deadline = time.monotonic() + timeout
        while True:
            if self._inbox:
                data = self._inbox.pop(0)
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("nothing relayed from a peer")
                self.sock.settimeout(left)
                data = self.sock.recv(65535)
            if is_channel_data(data):
                channel, length = struct.unpack_from("!HH", data, 0)
                if channel in self.channels:
                    return self.channels[channel], data[4 : 4 + length], "ChannelData"
            elif is_stun(data):
                msg = parse_message(data)
                if (msg.method, msg.cls) == (Method.DATA, Class.INDICATION):
                    peer = msg.address(Attr.XOR_PEER_ADDRESS)
                    if peer is not None and Attr.DATA in msg.attrs:
                        return peer, msg.attrs[Attr.DATA], "Data indication"


def stun_ping(server: Address, timeout: float = 0.5) -> bool:
    """Whether a STUN server answers a Binding request (any answer, success or error)."""
    tid = secrets.token_bytes(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(encode_message(Method.BINDING, Class.REQUEST, tid), server)
            while True:
                data = s.recv(2048)
                if is_stun(data) and data[8:20] == tid:
                    return True
        except OSError:  # timeout, or ICMP port unreachable
            return False


# --------------------------------------------------------------------------------------
# Many allocations at once (asyncio)


class _AsyncTurnProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[bytes, asyncio.Future[StunMessage]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (asyncio's datagram transport does not subclass DatagramTransport in 3.11)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if is_stun(data):
            fut = self.waiting.pop(data[8:20], None)
            if fut is not None and not fut.done():
                fut.set_result(parse_message(data))

    def error_received(self, exc: Exception) -> None:
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(exc)
        self.waiting.clear()


@dataclass
class AsyncAllocation:
    """One allocation made by :func:`async_allocate`; ``close()`` drops the client socket
    (the server keeps the allocation until it expires unless ``release`` was called)."""

    transport: asyncio.DatagramTransport
    protocol: _AsyncTurnProtocol
    creds: _Credentials
    relayed: Address
    seconds: float  # from the first Allocate sent to the success response

    def close(self) -> None:
        self.transport.close()


async def _async_transact(
    proto: _AsyncTurnProtocol,
    creds: _Credentials,
    method: int,
    attrs: Sequence[tuple[int, bytes]],
    timeout: float,
) -> StunMessage:
    assert proto.transport is not None
    loop = asyncio.get_running_loop()
    tid = secrets.token_bytes(12)
    wire = creds.encode(method, tid, attrs)
    fut: asyncio.Future[StunMessage] = loop.create_future()
    proto.waiting[tid] = fut
    deadline = loop.time() + timeout
    rto = 0.25
    try:
        while True:
            proto.transport.sendto(wire)
            wait = min(rto, deadline - loop.time())
            if wait <= 0:
                raise TurnError(f"no response to {classify(wire)} in {timeout} s")
            done, _ = await asyncio.wait([fut], timeout=wait)
            if done:
                msg = fut.result()
                creds.check(msg)
                return msg
            rto *= 2
    finally:
        proto.waiting.pop(tid, None)


async def _async_request(
    proto: _AsyncTurnProtocol,
    creds: _Credentials,
    method: int,
    attrs: Sequence[tuple[int, bytes]],
    timeout: float,
) -> StunMessage:
    msg = await _async_transact(proto, creds, method, attrs, timeout)
    if msg.cls == Class.ERROR and creds.learn(msg):
        msg = await _async_transact(proto, creds, method, attrs, timeout)
    if msg.cls == Class.ERROR:
        raise _error(method, msg)
    return msg


async def async_allocate(
    server: Address,
    user: str | None,
    password: str | None,
    *,
    lifetime: int | None = None,
    timeout: float = 5.0,
) -> AsyncAllocation:
    """Allocate from a fresh UDP socket (401 challenge, then the authenticated request).

    On 437 (Allocation Mismatch) the kernel handed this socket a port whose 5-tuple
    still holds an allocation from an earlier test's closed socket; as RFC 8656 lets a
    client, it tries once more from another socket (the first stays open meanwhile, so
    the same port cannot come back)."""
    held: list[asyncio.DatagramTransport] = []
    try:
        return await _async_allocate_once(server, user, password, lifetime, timeout, held)
    except TurnError:
        if not held:
            raise
        return await _async_allocate_once(server, user, password, lifetime, timeout)
    finally:
        for transport in held:
            transport.close()


async def _async_allocate_once(
    server: Address,
    user: str | None,
    password: str | None,
    lifetime: int | None,
    timeout: float,
    hold: list[asyncio.DatagramTransport] | None = None,
) -> AsyncAllocation:
    """One attempt; on 437 its socket goes into ``hold`` (when given), still open."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        _AsyncTurnProtocol, local_addr=(LOOPBACK, 0), remote_addr=server
    )
    creds = _Credentials(user, password)
    t0 = time.perf_counter()
    try:
        msg = await _async_request(
            proto, creds, Method.ALLOCATE, _allocate_attrs(lifetime), timeout
        )
    except BaseException as exc:
        if hold is not None and isinstance(exc, TurnError) and exc.code == 437:
            hold.append(transport)
        else:
            transport.close()
        raise
    relayed = msg.address(Attr.XOR_RELAYED_ADDRESS)
    if relayed is None:
        transport.close()
        raise TurnError("Allocate success without XOR-RELAYED-ADDRESS")
    return AsyncAllocation(transport, proto, creds, relayed, time.perf_counter() - t0)


async def async_release(alloc: AsyncAllocation, timeout: float = 5.0) -> None:
    """Refresh with LIFETIME 0, then close the socket."""
    try:
        await _async_request(
            alloc.protocol,
            alloc.creds,
            Method.REFRESH,
            [(Attr.LIFETIME, struct.pack("!I", 0))],
            timeout,
        )
    finally:
        alloc.close()


@dataclass
class ManyAllocations:
    allocations: list[AsyncAllocation]
    errors: list[str]
    seconds: float  # wall time of the whole batch

    @property
    def latencies(self) -> list[float]:
        return [a.seconds for a in self.allocations]

    def close(self) -> None:
        for a in self.allocations:
            a.close()


async def allocate_many(
    server: Address,
    user: str | None,
    password: str | None,
    count: int,
    *,
    concurrency: int = 64,
    lifetime: int | None = None,
    timeout: float = 5.0,
) -> ManyAllocations:
    """``count`` allocations, each from its own socket, at most ``concurrency`` in flight.
    The sockets stay open (the caller closes them with ``.close()``): a closed socket's
    port could come back for a later allocation and collide with its old 5-tuple (coturn
    answers 437 for 1-2 s after an allocation from that 5-tuple was deleted)."""
    sem = asyncio.Semaphore(concurrency)
    allocations: list[AsyncAllocation] = []
    errors: list[str] = []

    async def one() -> None:
        async with sem:
            try:
                allocations.append(
                    await async_allocate(server, user, password, lifetime=lifetime, timeout=timeout)
                )
            except (TurnError, OSError) as exc:
                errors.append(str(exc))

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(one() for _ in range(count)))
    except BaseException:
        for a in allocations:
            a.close()
        raise
    return ManyAllocations(allocations, errors, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------
# Load generation: ChannelData as fast as possible, counted where it arrives


def blast(
    client: TurnUdpClient, channel: int, size: int, seconds: float, rate: float | None = None
) -> tuple[int, float]:
    """Send ChannelData frames with ``size``-byte payloads on a bound ``channel`` for
    ``seconds`` (at ``rate`` frames/s, or as fast as the socket takes them); returns
    ``(frames sent, seconds spent)``."""
    frame = channel_data(channel, bytes(random.randbytes(size)))
    send = client.sock.send
    client.sock.settimeout(None)
    sent = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    batch = 64
    if rate is None:
        while time.perf_counter() < end:
            for _ in range(batch):
                try:
                    send(frame)
                    sent += 1
                except OSError:  # ENOBUFS, ECONNREFUSED (ICMP) ...
                    pass
    else:
        interval = batch / rate
        nxt = t0
        while (now := time.perf_counter()) < end:
            if now < nxt:
                time.sleep(min(nxt - now, end - now))
                continue
            for _ in range(batch):
                try:
                    send(frame)
                    sent += 1
                except OSError:
                    pass
            nxt += interval
    return sent, time.perf_counter() - t0


def udp_socket_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped at ``sock`` (its receive buffer was full): the
    ``drops`` column of /proc/net/udp, found by the socket's inode."""
    inode = os.fstat(sock.fileno()).st_ino
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 13 and cols[9] == str(inode):
            return int(cols[12])
    return 0


def blast_argv(
    server: Address,
    user: str,
    password: str,
    peer: Address,
    size: int,
    seconds: float,
    rate: float | None = None,
) -> list[str]:
    """The command that runs :func:`blast` in its own process (see :func:`_main`)."""
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "blast",
        f"--server={server[0]}:{server[1]}",
        f"--user={user}",
        f"--password={password}",
        f"--peer={peer[0]}:{peer[1]}",
        f"--size={size}",
        f"--seconds={seconds}",
    ]
    if rate is not None:
        argv.append(f"--rate={rate}")
    return argv


@dataclass
class PeerCount:
    """What a counting peer saw: datagrams read, bytes read, datagrams the kernel dropped at
    its socket, from which sources."""

    packets: int = 0
    bytes: int = 0
    dropped: int = 0
    sources: set[Address] = field(default_factory=set)

    @property
    def delivered(self) -> int:
        """Datagrams the relay got to the peer's socket: read + dropped at its buffer."""
        return self.packets + self.dropped


def count_until(
    sock: socket.socket,
    done: Callable[[], bool],
    deadline: float,
    quiet: float = 0.3,
    *,
    read: bool = True,
) -> PeerCount:
    """Count what arrives at ``sock`` until ``done()`` is true and nothing came for
    ``quiet`` seconds, or ``time.monotonic()`` reaches ``deadline``.  Call it before the
    traffic starts (drops are counted from the call on).

    ``read``: read every datagram as it comes (sizes and sources are seen).  Without it,
    nothing is read until ``done()`` -- the kernel queues what fits and drops the rest,
    counting the drops -- and the queue is drained at the end: the peer then costs almost
    no CPU, which matters when sender, server and peer share two cores.  Either way
    ``PeerCount.delivered`` is what the relay got to the socket."""
    count = PeerCount()
    drops0 = udp_socket_drops(sock)
    if not read:
        while not done() and time.monotonic() < deadline:
            time.sleep(0.02)
    buf = bytearray(65535)
    sock.settimeout(0.05)
    recv = sock.recvfrom_into
    clock = time.monotonic
    last = clock()
    while True:
        try:
            n, src = recv(buf)
        except TimeoutError:
            now = clock()
            if now >= deadline or (done() and now - last >= quiet):
                break
            continue
        count.packets += 1
        count.bytes += n
        if count.packets & 0x3FF == 1:  # sources: sampled, every 1024th datagram
            count.sources.add(src[:2])
        last = clock()
        if last >= deadline:
            break
    count.dropped = udp_socket_drops(sock) - drops0
    return count


def _main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="turn_peers.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("blast", help="allocate, bind a channel to PEER, send ChannelData")
    b.add_argument("--server", required=True)
    b.add_argument("--user", required=True)
    b.add_argument("--password", required=True)
    b.add_argument("--peer", required=True)
    b.add_argument("--size", type=int, default=100)
    b.add_argument("--seconds", type=float, default=2.0)
    b.add_argument("--rate", type=float, default=None)
    args = p.parse_args(argv)

    def addr(s: str) -> Address:
        host, _, port = s.rpartition(":")
        return host, int(port)

    peer = addr(args.peer)
    with TurnUdpClient(addr(args.server), args.user, args.password) as c:
        relayed = c.allocate()
        c.channel_bind(0x4000, peer)
        sent, seconds = blast(c, 0x4000, args.size, args.seconds, args.rate)
        with contextlib.suppress(TurnError, OSError):
            c.release()
    print(json.dumps({"sent": sent, "seconds": seconds, "relayed": list(relayed)}), flush=True)
    return 0


# --------------------------------------------------------------------------------------
# Ports


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether both UDP and TCP ``port`` can be bound on ``host`` now."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A port free for both UDP and TCP (from the kernel's ephemeral range)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        if port_free(port, host):
            return port
    raise RuntimeError("no free port")


def free_port_range(count: int, low: int = 20000, high: int = 32000) -> tuple[int, int]:
    """``(min, max)`` of ``count`` consecutive UDP ports, all free now, below the kernel's
    ephemeral range (32768+) so that client sockets never take a relay port."""
    for _ in range(50):
        base = random.randrange(low, high - count)
        ok = True
        for p in range(base, base + count):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind((LOOPBACK, p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base, base + count - 1
    raise RuntimeError(f"no {count} free consecutive ports in {low}-{high}")


# --------------------------------------------------------------------------------------
# Servers


class ServerUnavailable(Exception):
    """The server (or a tool) is not installed here; the message says what to install."""


class TurnServer(Protocol):
    """What the tests and the benchmark need of a running TURN server."""

    name: str
    host: str
    port: int
    relay_ports: tuple[int, int]

    @property
    def pid(self) -> int: ...

    def rss_kib(self) -> int: ...

    def stop(self) -> None: ...

    def __enter__(self) -> TurnServer: ...

    def __exit__(self, *exc: object) -> None: ...


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant (a supervisor and its worker processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in task.read_text().split()]
    return out


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` and its descendants in KiB (VmRSS of
    /proc/PID/status, summed: pages the workers share are counted once per worker)."""
    total = 0
    for p in process_tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
                break
        else:
            raise RuntimeError(f"no VmRSS for pid {p}")
    return total


def open_fds(pid: int) -> int:
    """Open descriptors of ``pid`` and its descendants."""
    return sum(len(os.listdir(f"/proc/{p}/fd")) for p in process_tree(pid))


class ServerProcess:
    """A TURN server process we started: stopped by its pid (SIGTERM, then SIGKILL), its
    output file closed.  ``log`` is where its output went."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        workdir: Path,
        host: str,
        port: int,
        relay_ports: tuple[int, int],
        ready_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.workdir = workdir
        self.host = host
        self.port = port
        self.relay_ports = relay_ports
        self.log = workdir / f"{name}.out"
        self._out: IO[bytes] = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        except BaseException:
            self._out.close()
            raise
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> Address:
        return self.host, self.port

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if stun_ping(self.address, 0.2):
                return
        raise RuntimeError(
            f"{self.name} did not answer STUN on {self.address} in {timeout} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        self._out.flush()
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def open_fds(self) -> int:
        return open_fds(self.pid)

    def stop(self, timeout: float = 5.0) -> None:
        """End the process by its pid and wait for it; idempotent."""
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout)
        finally:
            self._out.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def coturn_missing() -> str | None:
    """Why coturn cannot be run here, or None."""
    for tool in ("turnserver", "turnutils_uclient", "turnutils_peer"):
        if shutil.which(tool) is None:
            return f"coturn's {tool} is not installed (apt-get install coturn)"
    return None


class Coturn(ServerProcess):
    """coturn's ``turnserver``, started by :func:`start_coturn`."""

    config: Path
    users: dict[str, str]
    realm: str
    secret: str | None


def start_coturn(
    workdir: Path | str,
    listen_port: int,
    relay_ports: tuple[int, int] = (49152, 49252),
    users: Mapping[str, str] | None = None,
    realm: str = "anyedge.test",
    secret: str | None = None,
    extra: Sequence[str] = (),
    *,
    relay_threads: int | None = None,
    tls: bool = False,
    verbose: bool = False,
    ready_timeout: float = 30.0,
) -> Coturn:
    """Start coturn on 127.0.0.1:``listen_port`` with a config written to
    ``workdir/turnserver.conf``; returns once it answers a STUN Binding request.

    Long-term credentials: ``users`` (default ``{"user": "pass"}``) in ``realm``; with
    ``secret``, TURN REST API credentials instead (``use-auth-secret``), see
    :func:`rest_credentials`.  Relays on 127.0.0.1 in ``relay_ports`` (inclusive).
    Peers: only 127.0.0.1.  coturn refuses loopback peers unless ``allow-loopback-peers``
    is set -- ``allowed-peer-ip=127.0.0.1`` alone still answers 403 Forbidden IP -- and
    every other address is denied outright so that nothing relayed leaves the host.
    ``relay_threads`` sets ``relay-threads`` (0 = coturn's single-threaded mode; None =
    one per CPU).  coturn 4.6 has no ``--general-threads`` (newer ones do): pass it in
    ``extra`` where supported.  Quotas: coturn's defaults are no per-user and no total
    quota (``user-quota=0``, ``total-quota=0``); they are written explicitly so that a
    site config could not lower them.  ``extra`` lines are added to the config as they are
    (``"name=value"`` or ``"flag"``).
    """
    if (why := coturn_missing()) is not None:
        raise ServerUnavailable(why)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    users = {"user": "pass"} if users is None else dict(users)
    lines = [
        f"listening-ip={LOOPBACK}",
        f"listening-port={listen_port}",
        f"relay-ip={LOOPBACK}",
        f"min-port={relay_ports[0]}",
        f"max-port={relay_ports[1]}",
        # Peers: loopback only.  allowed-peer-ip wins over denied-peer-ip in coturn.
        "allow-loopback-peers",
        f"allowed-peer-ip={LOOPBACK}",
        "denied-peer-ip=0.0.0.0-255.255.255.255",
        "denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "no-multicast-peers",
        "no-cli",
        f"log-file={workdir / 'turnserver.log'}",
        "simple-log",
        f"pidfile={workdir / 'turnserver.pid'}",
        f"userdb={workdir / 'turndb'}",
        f"realm={realm}",
        "user-quota=0",
        "total-quota=0",
        "no-tcp-relay",
    ]
    if not tls:
        lines += ["no-tls", "no-dtls"]
    if secret is not None:
        lines += ["use-auth-secret", f"static-auth-secret={secret}"]
    else:
        lines += ["lt-cred-mech", *(f"user={u}:{p}" for u, p in users.items())]
    if relay_threads is not None:
        lines.append(f"relay-threads={relay_threads}")
    if verbose:
        lines.append("verbose")
    lines += list(extra)
    config = workdir / "turnserver.conf"
    config.write_text("\n".join(lines) + "\n")
    server = Coturn(
        "turnserver",
        ["turnserver", "-c", str(config)],
        workdir,
        LOOPBACK,
        listen_port,
        relay_ports,
        ready_timeout,
    )
    server.config = config
    server.users = users
    server.realm = realm
    server.secret = secret
    return server


class TurnServerFactory(Protocol):
    def __call__(
        self,
        workdir: Path,
        port: int,
        *,
        users: Mapping[str, str] | None = None,
        secret: str | None = None,
        relay_ports: tuple[int, int],
        workers: int = 1,
    ) -> TurnServer: ...


def coturn_server(
    workdir: Path,
    port: int,
    *,
    users: Mapping[str, str] | None = None,
    secret: str | None = None,
    relay_ports: tuple[int, int],
    workers: int = 1,
) -> Coturn:
    """:data:`TURN_SERVERS` factory for coturn: ``workers`` relay threads."""
    return start_coturn(
        workdir, port, relay_ports, users=users, secret=secret, relay_threads=workers
    )


def anyedge_server(
    workdir: Path,
    port: int,
    *,
    users: Mapping[str, str] | None = None,
    secret: str | None = None,
    relay_ports: tuple[int, int],
    workers: int = 1,
    allow_loopback: bool = True,
    extra_yaml: str = "",
    serve_args: Sequence[str] = (),
    dtls_port: int | None = None,
) -> ServerProcess:
    """:data:`TURN_SERVERS` factory for anyedge's relay (``python -m anyedge turn serve``):
    UDP and TCP on 127.0.0.1:``port``, ``workers`` processes, peers on loopback allowed
    (and nothing else special-purpose), no per-user quota so benchmarks can allocate
    thousands, and no per-IP limit on challenges (every client here shares one IP).
    Without ``allow_loopback`` the default peer policy holds: loopback is no peer, only
    the relay's own relayed addresses (its clients reach each other) are.  ``extra_yaml``
    is appended to the configuration, ``serve_args`` to the command line; ``dtls_port``
    adds a DTLS listener there with ``cert.pem`` and ``key.pem`` of ``workdir``."""
    users = dict(users or ({} if secret else {"user": "pass"}))
    auth = [f"  users: {json.dumps(users)}", "  fleet_keys: [interop-fleet-key]"]
    if secret:
        auth.append(f"  rest_secrets: [{json.dumps(secret)}]")
    conf = workdir / "turn.yaml"
    conf.write_text(
        "realm: anyedge.test\n"
        "listen:\n"
        f"  - {{transport: udp, address: 127.0.0.1, port: {port}}}\n"
        f"  - {{transport: tcp, address: 127.0.0.1, port: {port}}}\n"
        + (
            f"  - {{transport: dtls, address: 127.0.0.1, port: {dtls_port}, "
            "cert: cert.pem, key: key.pem}\n"
            if dtls_port is not None
            else ""
        )
        + f"relay: {{ipv4: 127.0.0.1, ports: [{relay_ports[0]}, {relay_ports[1]}]}}\n"
        "auth:\n" + "\n".join(auth) + "\n"
        # every client here comes from 127.0.0.1: the per-IP limit on unauthenticated
        # answers (the 401 every client starts with) is set out of the way, as coturn has
        # none; the limit itself is tested in tests/test_turn_server.py
        f"limits: {{allow_peers: {'[127.0.0.0/8]' if allow_loopback else '[]'}, "
        "user_quota: null, max_allocations: 1000000,\n"
        "         unauth_rate: 1000000, unauth_burst: 1000000}\n"
        f"workers: {workers}\n"
        "log: text\n" + extra_yaml
    )
    argv = [sys.executable, "-m", "anyedge", "turn", "serve", "-c", str(conf), *serve_args]
    return ServerProcess("anyedge", argv, workdir, "127.0.0.1", port, relay_ports)


TURN_SERVERS: dict[str, TurnServerFactory] = {
    "coturn": coturn_server,
    "anyedge": anyedge_server,
}
"""Servers the interop tests run against and the benchmark compares, by name."""


# --------------------------------------------------------------------------------------
# Wire tap


class WireTap:
    """A UDP proxy on loopback between TURN clients and a server that names every datagram
    it forwards (see :func:`classify`).  Point clients at ``tap.address`` instead of the
    server.  Each client address gets its own upstream socket, so the server sees one
    5-tuple per client as it would without the tap.  Runs in a thread until ``close()``.
    """

    def __init__(self, server: Address) -> None:
        self.server = server
        self.seen: Counter[tuple[str, str]] = Counter()  # (direction, kind) -> datagrams
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._listen.bind((LOOPBACK, 0))
        self._listen.setblocking(False)
        self._up: dict[Address, socket.socket] = {}
        self._down: dict[int, Address] = {}
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listen, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name="wiretap", daemon=True)
        self._thread.start()

    @property
    def address(self) -> Address:
        host, port = self._listen.getsockname()[:2]
        return host, port

    @property
    def port(self) -> int:
        return self.address[1]

    def counts(self, direction: str | None = None) -> Counter[str]:
        """Datagrams by kind; ``direction`` "c2s" (client to server), "s2c" or both."""
        with self._lock:
            out: Counter[str] = Counter()
            for (d, kind), n in self.seen.items():
                if direction is None or d == direction:
                    out[kind] += n
            return out

    def _record(self, direction: str, data: bytes) -> None:
        with self._lock:
            self.seen[(direction, classify(data))] += 1

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for key, _ in self._sel.select(0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        if sock is self._listen:
                            data, client = sock.recvfrom(65535)
                            up = self._up.get(client[:2])
                            if up is None:
                                up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                                up.bind((LOOPBACK, 0))
                                up.connect(self.server)
                                up.setblocking(False)
                                self._up[client[:2]] = up
                                self._down[up.fileno()] = client[:2]
                                self._sel.register(up, selectors.EVENT_READ)
                            self._record("c2s", data)
                            up.send(data)
                        else:
                            data = sock.recv(65535)
                            self._record("s2c", data)
                            self._listen.sendto(data, self._down[sock.fileno()])
                    except OSError:  # ICMP errors, full buffers: UDP, drop it
                        continue
        finally:
            self._sel.close()
            for s in self._up.values():
                s.close()
            self._listen.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def __enter__(self) -> WireTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------
# coturn's test tools: turnutils_uclient against any server, turnutils_peer as the peer


class UdpEchoProcess:
    """coturn's ``turnutils_peer`` (a UDP echo) on ``host:port``, ended by its pid."""

    def __init__(self, host: str = LOOPBACK, port: int | None = None) -> None:
        if shutil.which("turnutils_peer") is None:
            raise ServerUnavailable("turnutils_peer is not installed (apt-get install coturn)")
        self.host = host
        self.port = free_port(host) if port is None else port
        self.process = subprocess.Popen(
            ["turnutils_peer", "-L", host, "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.1)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"turnutils_peer exited with {self.process.returncode}")
                try:
                    s.sendto(b"ping", (self.host, self.port))
                    if s.recv(64) == b"ping":
                        return
                except OSError:
                    time.sleep(0.05)
        raise RuntimeError(f"turnutils_peer does not echo on {self.host}:{self.port}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self) -> UdpEchoProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# turnutils_uclient's summary (coturn 4.6.1, uclient.c); every line is prefixed with
# "<seconds since start>: : ".  The numbers summed over all clients:
#   start_mclient: tot_send_msgs=40, tot_recv_msgs=40
#   start_mclient: tot_send_bytes ~ 4000, tot_recv_bytes ~ 4000
#   Total transmit time is 3                     (whole seconds)
#   Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)
#   Average round trip delay 0.000000 ms; min = 0 ms, max = 0 ms   (1 ms resolution)
#   Average jitter 0.650000 ms; min = 0 ms, max = 1 ms
# (progress lines "start_mclient: msz=2, tot_send_msgs=..." come before the summary.)
_UCLIENT_PATTERNS = {
    "msgs": re.compile(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$"),
    "bytes": re.compile(r"start_mclient: tot_send_bytes ~ (\d+), tot_recv_bytes ~ (\d+)\s*$"),
    "connect": re.compile(r"Total connect time is (\d+)"),
    "transmit": re.compile(r"Total transmit time is (\d+)"),
    "lost": re.compile(
        r"Total lost packets (\d+) \(([\d.]+)%\), total send dropped (\d+) \(([\d.]+)%\)"
    ),
    "rtt": re.compile(r"Average round trip delay ([\d.]+) ms; min = (\d+) ms, max = (\d+) ms"),
    "jitter": re.compile(r"Average jitter ([\d.naif-]+) ms; min = (\d+) ms, max = (\d+) ms"),
}


def parse_uclient(output: str) -> dict[str, Any]:
    """The summary of a ``turnutils_uclient`` run as a dict (see the comment above for the
    lines it comes from).  Keys: ``sent``, ``received`` (messages), ``sent_bytes``,
    ``received_bytes``, ``lost``, ``lost_percent``, ``send_dropped``, ``connect_s``,
    ``transmit_s`` (uclient's whole seconds), ``rtt_avg_ms``, ``rtt_min_ms``,
    ``rtt_max_ms``, ``jitter_avg_ms``, ``errors`` (lines that say error/failed/Forbidden);
    a missing summary line leaves its keys out."""
    out: dict[str, Any] = {}
    for line in output.splitlines():
        if m := _UCLIENT_PATTERNS["msgs"].search(line):
            out["sent"], out["received"] = int(m[1]), int(m[2])
        elif m := _UCLIENT_PATTERNS["bytes"].search(line):
            out["sent_bytes"], out["received_bytes"] = int(m[1]), int(m[2])
        elif m := _UCLIENT_PATTERNS["connect"].search(line):
            out["connect_s"] = int(m[1])
        elif m := _UCLIENT_PATTERNS["transmit"].search(line):
            out["transmit_s"] = int(m[1])
        elif m := _UCLIENT_PATTERNS["lost"].search(line):
            out["lost"], out["lost_percent"] = int(m[1]), float(m[2])
            out["send_dropped"] = int(m[3])
        elif m := _UCLIENT_PATTERNS["rtt"].search(line):
            out["rtt_avg_ms"] = float(m[1])
            out["rtt_min_ms"], out["rtt_max_ms"] = int(m[2]), int(m[3])
        elif m := _UCLIENT_PATTERNS["jitter"].search(line):
            out["jitter_avg_ms"] = float(m[1])
    out["errors"] = [
        line.strip()
        for line in output.splitlines()
        if re.search(r"error|fail|forbidden|cannot", line, re.IGNORECASE)
    ]
    return out


def run_uclient(
    server: str,
    port: int,
    user: str | None,
    password: str | None,
    peer: str = LOOPBACK,
    peer_port: int | None = None,
    messages: int = 20,
    length: int = 100,
    clients: int = 1,
    extra: Sequence[str] = (),
    *,
    interval_ms: int | None = None,
    send_indications: bool = False,
    secret: str | None = None,
    timeout: float = 60.0,
    rtcp: bool = False,
) -> dict[str, Any]:
    """Run ``turnutils_uclient`` against the TURN server at ``server:port`` with a
    ``turnutils_peer`` echo started on ``peer:peer_port`` (a free port if None) and
    stopped afterwards.

    Mode: ``-e peer -r peer_port`` -- each client allocates a UDP relay and sends
    ``messages`` messages of ``length`` bytes through it to the echo peer, which sends them
    back through the relay; round trips are timed.  (``-y`` would instead pair clients'
    relays with each other and not use the peer.)  ``-c``: no RTCP allocations, so one
    allocation per client (``rtcp`` leaves it out: each client then allocates an RTP
    relay with EVEN-PORT and its R bit, and an RTCP relay with the RESERVATION-TOKEN it
    got, and sends through both); ``-X``: IPv4 relay.  UDP to the server (no ``-t``).  By
    default uclient binds a channel per peer (ChannelBind) and sends ChannelData;
    ``send_indications`` (``-s``) makes it create a permission and use Send/Data
    indications.  ``interval_ms`` is ``-z`` (uclient's default: 20 ms between a client's
    messages).  With ``secret``, ``-W secret`` (TURN REST API) replaces ``-u``/``-w``.

    Returns :func:`parse_uclient`'s dict plus ``returncode``, ``wall_s`` (our clock) and
    ``throughput_bytes_per_s`` (received bytes over ``wall_s``; uclient's own transmit time
    has whole-second resolution), and ``output`` (its log).
    """
    if shutil.which("turnutils_uclient") is None:
        raise ServerUnavailable("turnutils_uclient is not installed (apt-get install coturn)")
    argv = ["turnutils_uclient", "-X"] if rtcp else ["turnutils_uclient", "-X", "-c"]
    if send_indications:
        argv.append("-s")
    argv += ["-p", str(port), "-n", str(messages), "-l", str(length), "-m", str(clients)]
    if interval_ms is not None:
        argv += ["-z", str(interval_ms)]
    if secret is not None:
        argv += ["-W", secret]
        if user is not None:
            argv += ["-u", user]
    else:
        if user is not None:
            argv += ["-u", user]
        if password is not None:
            argv += ["-w", password]
    with UdpEchoProcess(peer, peer_port) as echo:
        argv += ["-e", echo.host, "-r", str(echo.port), *extra, server]
        t0 = time.perf_counter()
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        wall = time.perf_counter() - t0
    output = proc.stdout + proc.stderr
    result = parse_uclient(output)
    result["returncode"] = proc.returncode
    result["wall_s"] = wall
    result["throughput_bytes_per_s"] = result.get("received_bytes", 0) / wall if wall else 0.0
    result["argv"] = argv
    result["output"] = output
    return result


# --------------------------------------------------------------------------------------
# aioice: a TURN endpoint relaying to an in-process UDP echo


class _Echo(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.sources: list[Address] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (asyncio's datagram transport does not subclass DatagramTransport in 3.11)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.sources.append(addr[:2])
        assert self.transport is not None
        self.transport.sendto(data, addr)


class _Collect(asyncio.DatagramProtocol):
    def __init__(self, want: int) -> None:
        self.got: list[tuple[bytes, Address]] = []
        self.want = want
        self.all_in = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()
        self.errors: list[Exception] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append((data, addr))
        if len(self.got) >= self.want and not self.all_in.done():
            self.all_in.set_result(None)

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


@dataclass
class AioiceResult:
    echoes: list[bytes]  # payloads that came back, in order of arrival
    relayed: Address  # the allocation's relayed address
    peer: Address  # the echo's address
    peer_saw: list[Address]  # source of every datagram that reached the echo


async def aioice_exchange_async(
    server: str,
    port: int,
    user: str | None,
    password: str | None,
    peer_echo: Address = (LOOPBACK, 0),
    payloads: Sequence[bytes] = (b"hello", b"anyedge"),
    timeout: float = 10.0,
) -> AioiceResult:
    """See :func:`aioice_exchange`."""
    from aioice import turn

    loop = asyncio.get_running_loop()
    echo_transport, echo = await loop.create_datagram_endpoint(_Echo, local_addr=peer_echo)
    try:
        peer_addr = echo_transport.get_extra_info("sockname")[:2]
        transport, collect = await asyncio.wait_for(
            turn.create_turn_endpoint(
                lambda: _Collect(len(payloads)), (server, port), user, password
            ),
            timeout,
        )
        try:
            relayed = transport.get_extra_info("sockname")
            for p in payloads:
                transport.sendto(p, peer_addr)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(collect.all_in), timeout)
        finally:
            transport.close()  # Refresh(LIFETIME=0), then the socket is closed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(collect.lost, timeout)
        if collect.errors:
            raise collect.errors[0]
        return AioiceResult(
            [d for d, _ in collect.got], tuple(relayed), tuple(peer_addr), list(echo.sources)
        )
    finally:
        echo_transport.close()


def aioice_exchange(
    server: str,
    port: int,
    user: str | None,
    password: str | None,
    peer_echo: Address = (LOOPBACK, 0),
    payloads: Sequence[bytes] = (b"hello", b"anyedge"),
    timeout: float = 10.0,
) -> list[bytes]:
    """Allocate with ``aioice.turn.create_turn_endpoint`` (UDP), send ``payloads`` to a UDP
    echo started in-process on ``peer_echo`` (port 0: any) through the relay, and return
    the echoes that came back (in arrival order), within ``timeout``.

    What aioice 0.13 does: the first ``sendto`` to a peer sends a ChannelBind (0x4000 up;
    the binding also installs the permission -- aioice never sends CreatePermission nor
    Send indications); sends queued meanwhile wait for it; all data then goes as
    ChannelData.  It accepts ChannelData and Data indications back.  It refreshes the
    allocation at 5/6 of its lifetime and re-binds the channel after 500 s;
    ``close()`` sends Refresh LIFETIME=0 and closes the socket.
    """
    result = asyncio.run(
        aioice_exchange_async(server, port, user, password, peer_echo, payloads, timeout)
    )
    return result.echoes


# --------------------------------------------------------------------------------------
# aiortc: two peer connections, relay-only ICE, one data channel


@dataclass
class DataChannelResult:
    received: list[str]
    local_candidate_types: list[str]  # of both peer connections' gathered candidates
    remote_candidate_types: list[str]
    sdp_candidate_types: list[str]  # "typ X" of every a=candidate line in both SDPs
    selected: list[tuple[str, str]]  # (local type, remote type) of each nominated pair
    seconds: float


def _sdp_candidate_types(sdp: str) -> list[str]:
    return re.findall(r"^a=candidate:.* typ (\w+)", sdp, re.MULTILINE)


def _nominated_pairs(pc: Any) -> list[tuple[str, str]]:
    # aiortc has no public API for the selected pair: the aioice Connection under the
    # SCTP transport's DTLS transport's ICE transport keeps it in ``_nominated``.
    sctp = pc.sctp
    if sctp is None:
        return []
    conn = sctp.transport.transport._connection
    return [
        (pair.local_candidate.type, pair.remote_candidate.type)
        for pair in getattr(conn, "_nominated", {}).values()
    ]


async def aiortc_datachannel_async(
    server_url: str,
    user: str | None,
    password: str | None,
    timeout: float = 20.0,
    messages: Sequence[str] = ("one", "two", "three"),
) -> DataChannelResult:
    """See :func:`aiortc_datachannel`."""
    from aiortc import (
        RTCConfiguration,
        RTCIceServer,
        RTCIceTransportPolicy,
        RTCPeerConnection,
    )

    config = RTCConfiguration(
        iceServers=[RTCIceServer(urls=[server_url], username=user, credential=password)],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
    )
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    offerer = RTCPeerConnection(config)
    answerer = RTCPeerConnection(config)
    received: list[str] = []
    all_in: asyncio.Future[None] = loop.create_future()
    try:
        channel = offerer.createDataChannel("anyedge")

        @channel.on("open")  # type: ignore[untyped-decorator,unused-ignore]
        def _open() -> None:
            for m in messages:
                channel.send(m)

        @answerer.on("datachannel")  # type: ignore[untyped-decorator,unused-ignore]
        def _datachannel(remote: Any) -> None:
            @remote.on("message")  # type: ignore[untyped-decorator,unused-ignore]
            def _message(m: str | bytes) -> None:
                received.append(m if isinstance(m, str) else m.decode())
                if len(received) >= len(messages) and not all_in.done():
                    all_in.set_result(None)

        async def connect() -> tuple[str, str]:
            # setLocalDescription gathers the candidates (here: relayed ones only).
            await offerer.setLocalDescription(await offerer.createOffer())
            await answerer.setRemoteDescription(offerer.localDescription)
            await answerer.setLocalDescription(await answerer.createAnswer())
            await offerer.setRemoteDescription(answerer.localDescription)
            await all_in
            return offerer.localDescription.sdp, answerer.localDescription.sdp

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(connect(), timeout)
        sdps = [
            pc.localDescription.sdp for pc in (offerer, answerer) if pc.localDescription is not None
        ]
        local_types: list[str] = []
        remote_types: list[str] = []
        selected: list[tuple[str, str]] = []
        for pc in (offerer, answerer):
            if pc.sctp is not None:
                ice = pc.sctp.transport.transport
                local_types += [c.type for c in ice.iceGatherer.getLocalCandidates()]
                remote_types += [c.type for c in ice.getRemoteCandidates()]
            selected += _nominated_pairs(pc)
        return DataChannelResult(
            received=list(received),
            local_candidate_types=local_types,
            remote_candidate_types=remote_types,
            sdp_candidate_types=[t for sdp in sdps for t in _sdp_candidate_types(sdp)],
            selected=selected,
            seconds=time.perf_counter() - t0,
        )
    finally:
        await offerer.close()
        await answerer.close()


def aiortc_datachannel(
    server_url: str,
    user: str | None,
    password: str | None,
    timeout: float = 20.0,
    messages: Sequence[str] = ("one", "two", "three"),
) -> list[str]:
    """Two aiortc ``RTCPeerConnection``s in one event loop, both configured with only the
    TURN server ``server_url`` (e.g. ``"turn:127.0.0.1:3478?transport=udp"``) and
    ``iceTransportPolicy=RELAY`` -- which aiortc supports (aioice's TransportPolicy.RELAY:
    no host or server-reflexive candidates are even gathered, so no SDP filtering is
    needed).  Offer and answer are exchanged in-process, a data channel is opened and
    ``messages`` are sent; returns what the answerer received within ``timeout``.
    :func:`aiortc_datachannel_async` also returns the candidate types and the nominated
    pair, to check that the path is relay-to-relay.
    """
    return asyncio.run(
        aiortc_datachannel_async(server_url, user, password, timeout, messages)
    ).received


if __name__ == "__main__":
    sys.exit(_main())
