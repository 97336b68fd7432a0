"""TURN over DTLS (RFC 7350): a UDP listener whose datagrams are DTLS records.

Python's ``ssl`` has no DTLS, so each client is a pyOpenSSL ``Connection`` on memory
BIOs: a datagram from the client goes into the connection (``bio_write``), the
records it completes come out as STUN messages or ChannelData for the core
(``recv``, one record each), and whatever the connection has to send — handshake
flights, alerts, the core's answers and relayed data after ``send`` — is read from the
BIO and sent to the client as datagrams.

A new client address is answered statelessly until it proves it can receive at that
address: ``DTLSv1_listen`` on a throwaway connection answers its ClientHello with a
HelloVerifyRequest carrying a cookie (an HMAC of the address under a per-process key),
and only a ClientHello that returns the cookie gets a kept connection.  So spoofed
sources cost no state and the reply to them is no bigger than their request.
Handshake retransmissions run on the service's tick; a client silent for
``IDLE`` seconds without an allocation is forgotten, one with an allocation is kept
while the allocation lives.  The core sees transport ``"dtls"``, datagram-framed like
UDP.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from OpenSSL import SSL

from ...proto.turn.outputs import Addr, Output

log = logging.getLogger("anyedge.turn")

IDLE = 60.0  # seconds a DTLS client without an allocation is kept
MAX_CLIENTS = 100_000  # DTLS associations per listener; beyond it new ones are refused


class Core(Protocol):
    def receive(
        self, now: float, transport: str, client_addr: Addr, server_addr: Addr, data: bytes
    ) -> list[Output]: ...

    def allocation(self, transport: str, client_addr: Addr, server_addr: Addr) -> Any: ...


def dtls_context(cert: str, key: str) -> SSL.Context:
    """A DTLS server context with the certificate and key, and cookie exchange on."""
    ctx = SSL.Context(SSL.DTLS_SERVER_METHOD)
    ctx.use_certificate_chain_file(cert)
    ctx.use_privatekey_file(key)
    ctx.check_privatekey()
    ctx.set_options(int(SSL.OP_COOKIE_EXCHANGE or 0x2000))  # SSL_OP_COOKIE_EXCHANGE
    secret = os.urandom(32)

    def cookie(conn: SSL.Connection) -> bytes:
        addr = conn.get_app_data()
        return hmac.new(secret, repr(addr).encode(), hashlib.sha256).digest()[:16]

    ctx.set_cookie_generate_callback(cookie)
    ctx.set_cookie_verify_callback(lambda conn, c: hmac.compare_digest(c, cookie(conn)))
    return ctx


class _Client:
    __slots__ = ("conn", "ready", "seen")

    def __init__(self, conn: SSL.Connection) -> None:
        self.conn = conn
        self.ready = False
        self.seen = time.monotonic()


class DtlsListener(asyncio.DatagramProtocol):
    """One ``dtls`` listener: DTLS associations in, core inputs and outputs through."""

    def __init__(
        self,
        ctx: SSL.Context,
        local: Addr,
        core: Callable[[], Core],
        carry_out: Callable[[list[Output]], None],
    ) -> None:
        self.ctx = ctx
        self.local = local
        self.core = core
        self.carry_out = carry_out
        self.clients: dict[Addr, _Client] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        peer: Addr = (addr[0], addr[1])
        client = self.clients.get(peer)
        if client is None:
            client = self._hello(peer, data)
            if client is None:
                return
        else:
            client.conn.bio_write(data)
        client.seen = time.monotonic()
        try:
            self._pump(peer, client)
        except SSL.Error as e:  # a broken record or handshake: forget the association
            self.errors += 1
            log.debug('{"event": "dtls_error", "error": "%s"}', str(e)[:200])
            self.clients.pop(peer, None)
        self._flush(peer, client)

    def _hello(self, peer: Addr, data: bytes) -> _Client | None:
        """A datagram from an address with no association: answer with a cookie, or
        (the cookie came back) start one."""
        if len(self.clients) >= MAX_CLIENTS:
            return None
        conn = SSL.Connection(self.ctx, None)
        conn.set_app_data(peer)
        conn.set_accept_state()
        conn.bio_write(data)
        try:
            conn.DTLSv1_listen()
        except SSL.WantReadError:  # HelloVerifyRequest written (or nothing to say)
            self._flush(peer, _Client(conn))
            return None
        except SSL.Error:
            return None
        client = self.clients[peer] = _Client(conn)
        return client

    def _pump(self, peer: Addr, client: _Client) -> None:
        conn = client.conn
        if not client.ready:
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                return
            client.ready = True
        while True:
            try:
                record = conn.recv(65535)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:  # close_notify: the allocation lives on until it expires
                self.clients.pop(peer, None)
                return
            outputs = self.core().receive(time.time(), "dtls", peer, self.local, record)
            self.carry_out(outputs)

    def _flush(self, peer: Addr, client: _Client) -> None:
        if self.transport is None:
            return
        while True:
            try:
                out = client.conn.bio_read(65535)
            except SSL.WantReadError:
                return
            self.transport.sendto(out, peer)

    def send(self, peer: Addr, data: bytes) -> None:
        """One STUN message or ChannelData to a client, as one DTLS record."""
        client = self.clients.get(peer)
        if client is None or not client.ready:
            return
        try:
            client.conn.send(data)
        except SSL.Error:
            self.errors += 1
            return
        self._flush(peer, client)

    def tick(self) -> None:
        """Handshake retransmissions, and forgetting idle clients without allocations."""
        limit = time.monotonic() - IDLE
        core = self.core()
        for peer, client in list(self.clients.items()):
            if not client.ready:
                try:
                    client.conn.DTLSv1_handle_timeout()
                except SSL.Error:
                    self.clients.pop(peer, None)
                    continue
                self._flush(peer, client)
            if client.seen < limit and core.allocation("dtls", peer, self.local) is None:
                del self.clients[peer]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
