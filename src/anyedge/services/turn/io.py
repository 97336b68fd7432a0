"""The TURN relay on asyncio: sockets around the sans-IO core.

One :class:`TurnService` owns one :class:`~anyedge.proto.turn.TurnServer` and every
socket it needs:

* **listeners** — a UDP endpoint per ``listen`` entry of transport ``udp``; a TCP or TLS
  server per ``tcp``/``tls`` entry, each connection cutting its byte stream into STUN
  and ChannelData messages (:class:`~anyedge.proto.stun.StreamFramer`);
* **relay sockets** — one UDP socket per relayed address.  They are bound when the core
  takes a port (:class:`BindingPorts` wraps the core's port allocator, so a port the
  kernel refuses is skipped, not handed to a client) and read from the ``OpenRelay``
  output on;
* **time** — the core is ticked twice a second to expire permissions, channels and
  allocations.

Data flows in one direction per callback: a datagram or stream message goes into the
core with ``time.time()``, and the outputs that come back are carried out at once —
``ToClient`` on the listener or connection of the 5-tuple, ``ToPeer`` from the relay
socket, ``OpenRelay``/``CloseRelay`` on the relay sockets.  Nothing here decides
anything about TURN.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from ...proto.stun import StreamFramer, StunError
from ...proto.turn import CloseRelay, OpenRelay, PortRange, ToClient, ToPeer, TurnServer
from ...proto.turn.outputs import Addr, Output
from .config import ServiceConfig

log = logging.getLogger("anyedge.turn")

TICK = 0.5  # seconds between expiry sweeps
RELAY_BUFFER = 1 << 20  # receive buffer of each relay socket
BIND_ATTEMPTS = 32  # ports tried before an allocation gives up (508)
IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2  # Linux <linux/in.h>: set the DF bit, never fragment


def _event(name: str, **fields: Any) -> None:
    """One structured log line: a JSON object with the event's name and fields."""
    if log.isEnabledFor(logging.INFO):
        log.info(json.dumps({"event": name, **fields}))


def _addr(a: Any) -> Addr:
    """An address as the core writes it: (host, port), IPv6 without scope or flow."""
    return (a[0], a[1])


class BindingPorts:
    """The core's port allocator, binding each relay socket as the port is taken.

    A port some other program holds is kept out of the pool (not given back) and the
    next one is tried; the bound sockets wait here until ``OpenRelay`` asks for them.
    """

    def __init__(self, inner: PortRange) -> None:
        self.inner = inner
        self.sockets: dict[Addr, socket.socket] = {}

    def families(self) -> frozenset[int]:
        return self.inner.families()

    def take(self, family: int, even: bool = False) -> Addr | None:
        for _ in range(BIND_ATTEMPTS):
            addr = self.inner.take(family, even)
            if addr is None:
                return None
            s = socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                if family == 6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RELAY_BUFFER)
                s.bind(addr)
            except OSError as e:
                s.close()
                if e.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
                continue  # held by someone else: leave it out of the pool
            s.setblocking(False)
            self.sockets[addr] = s
            return addr
        return None

    def give_back(self, addr: Addr) -> None:
        s = self.sockets.pop(addr, None)
        if s is not None:
            s.close()
        self.inner.give_back(addr)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, service: TurnService, local: Addr) -> None:
        self.service = service
        self.local = local
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        svc = self.service
        svc.carry_out(svc.core.receive(time.time(), "udp", _addr(addr), self.local, data))

    def error_received(self, exc: Exception) -> None:
        log.debug("udp listener error: %s", exc)


class _Relay(asyncio.DatagramProtocol):
    def __init__(self, service: TurnService, relay: Addr) -> None:
        self.service = service
        self.relay = relay
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        svc = self.service
        svc.carry_out(svc.core.receive_from_peer(time.time(), self.relay, _addr(addr), data))

    def error_received(self, exc: Exception) -> None:
        log.debug("relay %s error: %s", self.relay, exc)


class _Stream(asyncio.Protocol):
    """One TCP or TLS client connection."""

    def __init__(self, service: TurnService, transport_name: str, local: Addr) -> None:
        self.service = service
        self.name = transport_name
        self.local = local
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Addr = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer = _addr(transport.get_extra_info("peername"))
        self.service.streams[(self.name, self.peer, self.local)] = self.transport

    def data_received(self, data: bytes) -> None:
        svc = self.service
        try:
            frames = self.framer.feed(data)
        except StunError as e:
            log.info("closing %s connection from %s: %s", self.name, self.peer, e)
            assert self.transport is not None
            self.transport.close()
            return
        for frame in frames:
            svc.carry_out(svc.core.receive(time.time(), self.name, self.peer, self.local, frame))

    def connection_lost(self, exc: Exception | None) -> None:
        svc = self.service
        svc.streams.pop((self.name, self.peer, self.local), None)
        svc.carry_out(svc.core.connection_lost(time.time(), self.name, self.peer, self.local))


class TurnService:
    """The relay of one process: the core, its listeners and its relay sockets."""

    def __init__(self, config: ServiceConfig, worker: int = 0, workers: int = 1) -> None:
        self.config = config
        relay = config.doc.relay
        first, last = config.relay_ports(worker, workers)
        self.ports = BindingPorts(PortRange(relay.ipv4, relay.ipv6, first, last))
        self.core = TurnServer(config.turn, config.credentials, self.ports, time.time())
        self.listeners: dict[Addr, asyncio.DatagramTransport] = {}
        self.servers: list[asyncio.Server] = []
        self.streams: dict[tuple[str, Addr, Addr], asyncio.Transport] = {}
        self.relays: dict[Addr, asyncio.DatagramTransport] = {}
        self.pending: dict[Addr, list[tuple[bytes, Addr]]] = {}  # relays being opened
        self._ticker: asyncio.Task[None] | None = None
        self._reuse_port = workers > 1

    # ------------------------------------------------------------------ outputs

    def carry_out(self, outputs: Iterable[Output]) -> None:
        for out in outputs:
            if type(out) is ToPeer:
                relay = self.relays.get(out.relay_addr)
                if relay is not None:
                    relay.sendto(out.data, out.peer_addr)
                else:
                    waiting = self.pending.get(out.relay_addr)
                    if waiting is not None:  # its endpoint is being made: send it then
                        waiting.append((out.data, out.peer_addr))
            elif type(out) is ToClient:
                if out.transport == "udp":
                    listener = self.listeners.get(out.server_addr)
                    if listener is not None:
                        listener.sendto(out.data, out.client_addr)
                else:
                    stream = self.streams.get((out.transport, out.client_addr, out.server_addr))
                    if stream is not None:
                        stream.write(out.data)
            elif type(out) is OpenRelay:
                self._open(out)
            elif type(out) is CloseRelay:
                relay = self.relays.pop(out.relay_addr, None)
                self.pending.pop(out.relay_addr, None)
                if relay is not None:
                    relay.close()
                log.info(
                    json.dumps(
                        {
                            "event": "relay_closed",
                            "allocation": out.allocation,
                            "relay": list(out.relay_addr),
                        }
                    )
                )

    def _open(self, out: OpenRelay) -> None:
        sock = self.ports.sockets.pop(out.relay_addr, None)
        if sock is None:  # the allocator did not bind it (should not happen): bind now
            family = socket.AF_INET if out.family == 4 else socket.AF_INET6
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.bind(out.relay_addr)
            sock.setblocking(False)
        if out.dont_fragment and out.family == 4:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        loop = asyncio.get_running_loop()
        relay = out.relay_addr
        protocol = _Relay(self, relay)
        self.pending[relay] = []
        # the socket is bound already; datagrams that come before the endpoint is made
        # wait in its buffer
        fut = asyncio.ensure_future(loop.create_datagram_endpoint(lambda: protocol, sock=sock))
        fut.add_done_callback(lambda f: self._opened(relay, f))
        log.info(
            json.dumps(
                {"event": "relay_opened", "allocation": out.allocation, "relay": list(relay)}
            )
        )

    def _opened(self, relay: Addr, fut: asyncio.Future[Any]) -> None:
        waiting = self.pending.pop(relay, None)
        if fut.cancelled() or fut.exception() is not None:
            log.warning("relay %s did not open: %s", relay, fut.exception())
            return
        transport, _ = fut.result()
        if waiting is None:  # closed while it was being opened
            transport.close()
            return
        self.relays[relay] = transport
        for data, peer in waiting:
            transport.sendto(data, peer)

    # ------------------------------------------------------------------ running

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for lis in self.config.doc.listen:
            local = (lis.address, lis.port)
            family = socket.AF_INET6 if ":" in lis.address else socket.AF_INET
            if lis.transport == "udp":
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if self._reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RELAY_BUFFER)
                sock.bind(local)
                transport, _ = await loop.create_datagram_endpoint(
                    self._udp_factory(local), sock=sock
                )
                self.listeners[local] = transport
            else:
                ctx = None
                if lis.transport == "tls":
                    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                    assert lis.cert is not None
                    assert lis.key is not None
                    ctx.load_cert_chain(self.config.path(lis.cert), self.config.path(lis.key))
                server = await loop.create_server(
                    self._stream_factory(lis.transport, local),
                    lis.address,
                    lis.port,
                    ssl=ctx,
                    reuse_address=True,
                    reuse_port=self._reuse_port or None,
                )
                self.servers.append(server)
            log.info(
                json.dumps(
                    {
                        "event": "listening",
                        "transport": lis.transport,
                        "address": lis.address,
                        "port": lis.port,
                    }
                )
            )
        self._ticker = asyncio.ensure_future(self._tick())

    def _udp_factory(self, local: Addr) -> Callable[[], _Udp]:
        return lambda: _Udp(self, local)

    def _stream_factory(self, name: str, local: Addr) -> Callable[[], _Stream]:
        return lambda: _Stream(self, name, local)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self.carry_out(self.core.tick(time.time()))

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for s in self.servers:
            s.close()
        for t in list(self.streams.values()):
            t.close()
        for s in self.servers:
            await s.wait_closed()
        for d in [*self.listeners.values(), *self.relays.values()]:
            d.close()
        for sock in self.ports.sockets.values():
            sock.close()
        self.ports.sockets.clear()
        self.relays.clear()
        self.listeners.clear()
