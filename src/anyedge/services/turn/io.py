"""The TURN relay on asyncio: sockets around the sans-IO core.

One :class:`TurnService` owns one :class:`~anyedge.proto.turn.TurnServer` and every
socket it needs:

* **listeners** — a UDP endpoint per ``listen`` entry of transport ``udp``; a DTLS one
  per ``dtls`` entry (:mod:`.dtls`: pyOpenSSL on memory BIOs); a TCP or TLS
  server per ``tcp``/``tls`` entry, each connection cutting its byte stream into STUN
  and ChannelData messages (:class:`~anyedge.proto.stun.StreamFramer`);
* **relay sockets** — one UDP socket per relayed address.  They are bound when the core
  takes a port (:class:`BindingPorts` wraps the core's port allocator, so a port the
  kernel refuses is skipped, not handed to a client) and read from the ``OpenRelay``
  output on;
* **TCP allocations** (RFC 6062) — :mod:`.tcp_relay`: a listener on each TCP relayed
  address, connections to and from peers, and client data connections spliced to them
  (``ConnectPeer``, ``Splice``, ``ClosePeer``); spliced bytes bypass the core;
* **reload** — SIGHUP (:meth:`TurnService.reload`) reads the configuration file again
  and hands the core new users, REST secrets and fleet keys and the TLS listeners new
  certificates, or keeps all the old ones when anything fails to load;
* **time** — the core is ticked twice a second to expire permissions, channels and
  allocations;
* **the kernel fast path** (``fast_path:``) — when the program is loaded, the same tick
  reconciles its maps with the core's channels and charges its counters back
  (:mod:`.fastpath`), and a closed relay leaves the maps at once.

Data flows in one direction per callback: a datagram or stream message goes into the
core with ``time.time()``, and the outputs that come back are carried out at once —
``ToClient`` on the listener or connection of the 5-tuple, ``ToPeer`` from the relay
socket, ``OpenRelay``/``CloseRelay`` on the relay sockets.  Nothing here decides
anything about TURN.  Datagrams of established UDP channels take a shortcut: the UDP
listener and relay protocols look their source up in the lanes the core's answers
were written down in (:mod:`.shortcut`) and send at once, until the core's deadline;
whatever is not there goes to the core, and a lane is learnt after it.  With
``udp_batch`` (the default) UDP listeners and relay sockets are not asyncio transports
but :mod:`.batched` sockets, read with ``recvmmsg`` and written with ``sendmmsg`` a batch
at a time, the same lanes deciding.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

from OpenSSL import SSL

from ...proto.stun import StreamFramer, StunError
from ...proto.turn import CloseRelay, OpenRelay, PortRange, ToClient, ToPeer, TurnServer
from ...proto.turn.outputs import Addr, ClosePeer, ConnectPeer, Output, Splice
from ...proto.turn.server import QuotaLedger
from .batched import BatchedListener, BatchedRelay, BatchedSocket
from .config import ListenIn, ServiceConfig, load_config
from .dtls import DtlsListener, dtls_context
from .fastpath import FastPath, TurnFast
from .mmsg import Ring, available
from .shortcut import Shortcuts
from .tcp_relay import PeerStream, connect_peer, listening_socket, serve_relay

log = logging.getLogger("anyedge.turn")

TICK = 0.5  # seconds between expiry sweeps
RELAY_BUFFER = 1 << 20  # receive buffer of each relay socket
BIND_ATTEMPTS = 32  # ports tried before an allocation gives up (508)
STREAM_HIGH_WATER = 256 * 1024  # bytes queued to a TCP/TLS client before relayed data drops
STREAM_HARD_LIMIT = 4 * 1024 * 1024  # ...and before the connection is closed
STREAM_IDLE = 30.0  # seconds a TCP/TLS connection may stay without an allocation
TLS_HANDSHAKE = 10.0  # seconds
LISTEN_BACKLOG = 4096  # TCP/TLS connections waiting to be accepted (the kernel caps it)
IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2  # Linux <linux/in.h>: set the DF bit, never fragment


def _event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """One structured log line: a JSON object with the event's name and fields."""
    if log.isEnabledFor(level):
        log.log(level, json.dumps({"event": name, **fields}))


def _warn(name: str, **fields: Any) -> None:
    _event(name, logging.WARNING, **fields)


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
            bound = self._bind(family, addr)
            if bound is None:
                return None
            if bound:
                return addr
        return None

    def take_pair(self, family: int) -> tuple[Addr, Addr] | None:
        """An even port, bound, and the next set aside unbound: whichever worker the
        token comes to binds it then (the kernel makes sure only one does)."""
        for _ in range(BIND_ATTEMPTS):
            pair = self.inner.take_pair(family)
            if pair is None:
                return None
            if not self._free_now(family, pair[1]):  # someone else's: leave it out
                self.inner.reserved[family].discard(pair[1][1])
                self.inner.give_back(pair[0])
                continue
            bound = self._bind(family, pair[0])
            if bound:
                return pair
            self.inner.reclaim(pair[1])
            if bound is None:
                return None
        return None

    def take_exact(self, family: int, port: int) -> Addr | None:
        addr = self.inner.take_exact(family, port)
        if addr is None:
            return None
        if not self._bind(family, addr, give_back=False):
            self.inner.unclaim(family, port)  # claimed already (by another worker)
            return None
        return addr

    def reclaim(self, addr: Addr) -> bool:
        family = 6 if ":" in addr[0] else 4
        if addr[1] in self.inner.reserved.get(family, ()) and not self._free_now(family, addr):
            return False  # another worker claimed it and holds it still
        return self.inner.reclaim(addr)

    def _free_now(self, family: int, addr: Addr) -> bool:
        """Whether nobody holds ``addr`` (a bind to it succeeds)."""
        with socket.socket(
            socket.AF_INET if family == 4 else socket.AF_INET6, socket.SOCK_DGRAM
        ) as s:
            try:
                if family == 6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind(addr)
            except OSError:
                return False
        return True

    def _bind(self, family: int, addr: Addr, give_back: bool = True) -> bool | None:
        """Bind a socket to ``addr``: True; False if someone else holds the port (it is
        left out of the pool); None on another failure (the port is given back unless
        ``give_back`` is false)."""
        try:
            s = socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6, socket.SOCK_DGRAM)
        except OSError as e:  # out of descriptors, say: no allocation now (508)
            if give_back:
                self.inner.give_back(addr)
            log.warning(json.dumps({"event": "relay_socket_failed", "error": str(e)}))
            return None
        try:
            if family == 6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RELAY_BUFFER)
            s.bind(addr)
        except OSError as e:
            s.close()
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False  # held by someone else: leave it out of the pool
            if give_back:
                self.inner.give_back(addr)
            log.warning(json.dumps({"event": "relay_bind_failed", "error": str(e)}))
            return None
        s.setblocking(False)
        self.sockets[addr] = s
        return True

    def give_back(self, addr: Addr) -> None:
        s = self.sockets.pop(addr, None)
        if s is not None:
            s.close()
        self.inner.give_back(addr)


def _guarded(service: TurnService, call: Callable[[], list[Output]]) -> None:
    """Run one input through the core and carry out what it says.  A bug or a hostile
    input the core did not expect must not kill a listener or a connection: it is
    counted and logged (at most once a second), and the input is dropped."""
    try:
        outputs = call()
    except Exception as e:
        service.errors += 1
        now = time.monotonic()
        if now - service._last_error_log >= 1.0:
            service._last_error_log = now
            _warn("input_failed", error=repr(e)[:300], errors=service.errors)
        return
    service.carry_out(outputs)


def _same(protocol: DtlsListener) -> DtlsListener:
    return protocol


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, service: TurnService, local: Addr) -> None:
        self.service = service
        self.local = local
        self.lanes = service.shortcuts.listener(local)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        chans = self.lanes.get(addr)  # a client with established channels (.shortcut)
        if chans is not None and len(data) >= 4:
            lane = chans.get((data[0] << 8) | data[1])
            if lane is not None:
                n = (data[2] << 8) | data[3]
                if len(data) >= 4 + n and lane.to_peer(time.time(), data, n):
                    return
        self.slow(data, addr, addr)

    def slow(self, data: bytes, addr: Any, key: Any) -> None:
        """A datagram no lane took, to the core; ``key`` is its source as the lanes are
        keyed (the address tuple, or a batched socket's kernel address)."""
        svc, local = self.service, self.local
        now = time.time()
        client = _addr(addr)
        _guarded(svc, lambda: svc.core.receive(now, "udp", client, local, data))
        if len(data) >= 4 and data[0] >= 0x40:  # ChannelData: may it go by a lane now?
            svc.learn_inbound(local, key, client, (data[0] << 8) | data[1], now)

    def error_received(self, exc: Exception) -> None:
        _event("udp_error", logging.DEBUG, error=repr(exc))


class _Relay(asyncio.DatagramProtocol):
    def __init__(self, service: TurnService, relay: Addr) -> None:
        self.service = service
        self.relay = relay
        self.lanes = service.shortcuts.relay(relay)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        lane = self.lanes.get(addr)  # a peer of an established channel (.shortcut)
        if lane is not None and lane.to_client(time.time(), data):
            return
        self.slow(data, addr, addr)

    def slow(self, data: bytes, addr: Any, key: Any) -> None:
        """A datagram no lane took, to the core (see :meth:`_Udp.slow`)."""
        svc, relay = self.service, self.relay
        now = time.time()
        peer = _addr(addr)
        _guarded(svc, lambda: svc.core.receive_from_peer(now, relay, peer, data))
        svc.learn_outbound(relay, key, peer, now)

    def error_received(self, exc: Exception) -> None:
        _event("relay_error", logging.DEBUG, relay=list(self.relay), error=repr(exc))


class _Stream(asyncio.Protocol):
    """One TCP or TLS client connection."""

    def __init__(self, service: TurnService, transport_name: str, local: Addr) -> None:
        self.service = service
        self.name = transport_name
        self.local = local
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Addr = ("", 0)
        self.opened = time.monotonic()
        self.spliced: PeerStream | None = None  # RFC 6062: a data connection's peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer = _addr(transport.get_extra_info("peername"))
        # the address this connection really came to (a wildcard listener has many)
        self.local = _addr(transport.get_extra_info("sockname") or self.local)
        with contextlib.suppress(OSError, AttributeError):
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.service.streams[(self.name, self.peer, self.local)] = self.transport
        self.service.opened[(self.name, self.peer, self.local)] = self.opened
        self.service.stream_protocols[(self.name, self.peer, self.local)] = self

    def data_received(self, data: bytes) -> None:
        svc = self.service
        if self.spliced is not None:  # a data connection: bytes for the peer, as they are
            if self.spliced.transport is not None:
                self.spliced.transport.write(data)
            return
        try:
            frames = self.framer.feed(data)
        except StunError as e:
            _event("stream_closed", transport=self.name, peer=list(self.peer), why=str(e))
            assert self.transport is not None
            self.transport.close()
            return
        name, peer, local = self.name, self.peer, self.local
        for i, frame in enumerate(frames):
            _guarded(
                svc, functools.partial(svc.core.receive, time.time(), name, peer, local, frame)
            )
            if self.spliced is not None:  # that was its ConnectionBind: the rest is data
                rest = b"".join(frames[i + 1 :]) + self.framer.rest()
                if rest and self.spliced.transport is not None:
                    self.spliced.transport.write(rest)
                return

    def pause_writing(self) -> None:
        """A data connection's client does not read: stop reading its peer."""
        if self.spliced is not None and self.spliced.transport is not None:
            self.spliced.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.spliced is not None and self.spliced.transport is not None:
            self.spliced.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        svc = self.service
        key = (self.name, self.peer, self.local)
        svc.streams.pop(key, None)
        svc.opened.pop(key, None)
        svc.stream_protocols.pop(key, None)
        if self.spliced is not None:
            self.spliced.close()
        name, peer, local = key
        _guarded(svc, lambda: svc.core.connection_lost(time.time(), name, peer, local))


class TurnService:
    """The relay of one process: the core, its listeners and its relay sockets."""

    def __init__(
        self,
        config: ServiceConfig,
        worker: int = 0,
        workers: int = 1,
        ledger: QuotaLedger | None = None,
        fast: TurnFast | None = None,
    ) -> None:
        self.config = config
        self.fast = FastPath(fast) if fast is not None else None
        relay = config.doc.relay
        first, last = config.relay_ports(worker, workers)
        self.ports = BindingPorts(PortRange(relay.ipv4, relay.ipv6, first, last))
        self.core = TurnServer(
            config.turn, config.credentials, self.ports, time.time(), ledger=ledger
        )
        self.shortcuts = Shortcuts(self.core.counters)
        # udp_batch: UDP listeners and relay sockets read and written in batches
        batch = config.doc.udp_batch
        self.ring = Ring(batch, config.doc.udp_gso) if batch > 0 and available() else None
        self.listeners: dict[Addr, asyncio.DatagramTransport | BatchedSocket] = {}
        self.servers: list[asyncio.Server] = []
        self.streams: dict[tuple[str, Addr, Addr], asyncio.Transport] = {}
        self.relays: dict[Addr, asyncio.DatagramTransport | BatchedSocket] = {}
        # relays whose endpoint is being made: their bound sockets, sent from directly
        self.opening: dict[Addr, socket.socket] = {}
        self.opened: dict[tuple[str, Addr, Addr], float] = {}  # when each stream connected
        self.errors = 0  # inputs the core could not take (see _guarded)
        self.dropped_backlog = 0  # relayed data dropped for a client that does not read
        self.dropped_opening = 0  # data to peers a just-bound relay socket could not take
        self._send_failed_closed = 0  # dropped_send of batched sockets since closed
        self._last_error_log = -1.0
        self._ticker: asyncio.Task[None] | None = None
        self._reuse_port = workers > 1
        self.tls: dict[Addr, ssl.SSLContext] = {}  # TLS listener -> its context (reload)
        self.dtls: dict[Addr, DtlsListener] = {}
        # RFC 6062: TCP allocations' listeners, peer connections, client connections
        self.tcp_relays: dict[Addr, socket.socket | asyncio.Server] = {}
        self.peer_conns: dict[int, PeerStream] = {}
        self.stream_protocols: dict[tuple[str, Addr, Addr], _Stream] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        if config.start_draining:
            self.set_draining(True)

    # ------------------------------------------------------------------ outputs

    def carry_out(self, outputs: Iterable[Output]) -> None:
        for out in outputs:
            if type(out) is ToPeer:
                relay = self.relays.get(out.relay_addr)
                if relay is not None:
                    relay.sendto(out.data, out.peer_addr)
                else:
                    sock = self.opening.get(out.relay_addr)
                    if sock is not None:  # its endpoint is being made: send on the socket
                        try:
                            sock.sendto(out.data, out.peer_addr)
                        except OSError:  # a full buffer: dropped, as UDP may be
                            self.dropped_opening += 1
            elif type(out) is ToClient:
                if out.transport == "udp":
                    listener = self.listeners.get(out.server_addr)
                    if listener is not None:
                        listener.sendto(out.data, out.client_addr)
                elif out.transport == "dtls":
                    dtls = self.dtls.get(out.server_addr)
                    if dtls is not None:
                        dtls.send(out.client_addr, out.data)
                else:
                    stream = self.streams.get((out.transport, out.client_addr, out.server_addr))
                    if stream is not None:
                        backlog = stream.get_write_buffer_size()
                        if backlog > STREAM_HARD_LIMIT:
                            stream.close()  # it has stopped reading: end it, and its allocation
                        elif (
                            backlog > STREAM_HIGH_WATER
                            and len(out.data) > 0
                            and (
                                out.data[0] >= 0x40 or out.data[1] == 0x17  # relayed data only
                            )
                        ):
                            self.dropped_backlog += 1
                        else:
                            stream.write(out.data)
            elif type(out) is OpenRelay:
                if out.tcp:
                    self._open_tcp(out)
                else:
                    self._open(out)
            elif type(out) is ConnectPeer:
                self._spawn(connect_peer(self, out.connection, out.relay_addr, out.peer_addr))
            elif type(out) is Splice:
                self._splice(out)
            elif type(out) is ClosePeer:
                pc = self.peer_conns.pop(out.connection, None)
                if pc is not None:
                    pc.close()
            elif type(out) is CloseRelay:
                self.shortcuts.forget(out.relay_addr)
                if self.fast is not None:
                    self.fast.relay_closed(self.core, out.relay_addr, time.time())
                relay = self.relays.pop(out.relay_addr, None)
                self.opening.pop(out.relay_addr, None)  # _opened closes its endpoint
                tcp = self.tcp_relays.pop(out.relay_addr, None)
                if tcp is not None:
                    tcp.close()
                if relay is not None:
                    if isinstance(relay, BatchedSocket):
                        self._send_failed_closed += relay.send_failed
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

    @property
    def dropped_send(self) -> int:
        """Datagrams batched sockets dropped because the kernel refused them or had no
        room (:mod:`.batched`); asyncio's transports queue or log those instead."""
        n = self._send_failed_closed + (self.ring.send_failed if self.ring else 0)
        for d in (*self.listeners.values(), *self.relays.values()):
            if isinstance(d, BatchedSocket):
                n += d.send_failed
        return n

    # ------------------------------------------------------------------ lanes

    def learn_inbound(self, local: Addr, key: Any, client: Addr, number: int, now: float) -> None:
        """After the core took a client's ChannelData: a lane for its channel, if the
        core would relay the next one the same way (:mod:`.shortcut`)."""
        alloc = self.core.allocation("udp", client, local)
        ch = alloc.channels.get(number) if alloc is not None else None
        if ch is None or alloc is None:
            return
        relay = self.relays.get(ch.relay)
        if relay is not None:  # not while its endpoint is being made
            fd = relay.fd if isinstance(relay, BatchedSocket) else -1
            self.shortcuts.learn_inbound(local, key, alloc, ch, relay.sendto, now, fd)

    def learn_outbound(self, relay_addr: Addr, key: Any, peer: Addr, now: float) -> None:
        """After the core took a peer's datagram: a lane back over its channel, if any."""
        alloc = self.core.allocation_at(relay_addr)
        if alloc is None or alloc.transport != "udp":
            return
        ch = alloc.by_peer.get(peer)
        listener = self.listeners.get(alloc.server)
        if ch is not None and listener is not None:
            fd = listener.fd if isinstance(listener, BatchedSocket) else -1
            self.shortcuts.learn_outbound(relay_addr, key, alloc, ch, listener.sendto, now, fd)

    # ------------------------------------------------------------------ RFC 6062

    def core_call(self, call: Callable[[], list[Output]]) -> None:
        _guarded(self, call)

    def peer_accepted(self, relay: Addr, peer: Addr) -> int | None:
        connection, outputs = self.core.peer_accepted(time.time(), relay, peer)
        self.carry_out(outputs)
        return connection

    def peer_closed(self, connection: int) -> None:
        self.core.peer_closed(connection)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _open_tcp(self, out: OpenRelay) -> None:
        """A TCP allocation: listen on its relayed address (the UDP socket the port
        allocator bound only held the number)."""
        sock = self.ports.sockets.pop(out.relay_addr, None)
        if sock is not None:
            sock.close()
        try:
            listener = listening_socket(out.relay_addr)
        except OSError as e:
            _warn("tcp_relay_failed", relay=list(out.relay_addr), error=str(e))
            return
        self.tcp_relays[out.relay_addr] = listener
        relay = out.relay_addr

        async def serve() -> None:
            server = await serve_relay(self, listener, relay)
            if self.tcp_relays.get(relay) is listener:
                self.tcp_relays[relay] = server
            else:  # closed meanwhile
                server.close()

        self._spawn(serve())

    def _splice(self, out: Splice) -> None:
        stream = self.stream_protocols.get((out.transport, out.client_addr, out.server_addr))
        pc = self.peer_conns.get(out.connection)
        if stream is None or pc is None or stream.transport is None:
            if pc is not None:
                pc.close()
            if stream is not None and stream.transport is not None:
                stream.transport.close()
            return
        stream.spliced = pc
        pc.splice(stream.transport)

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
        if self.ring is not None:  # read in batches: ready at once, nothing to wait for
            self.relays[relay] = BatchedRelay(
                loop,
                sock,
                self.ring,
                protocol.slow,
                protocol.error_received,
                lanes=protocol.lanes,
            )
            _event("relay_opened", allocation=out.allocation, relay=list(relay))
            return
        self.opening[relay] = sock
        # the socket is bound already; datagrams that come before the endpoint is made
        # wait in its buffer, and data to peers goes out on the socket itself (nothing
        # is queued here, so nothing is lost if the allocation ends before it is made)
        fut = asyncio.ensure_future(loop.create_datagram_endpoint(lambda: protocol, sock=sock))
        fut.add_done_callback(lambda f: self._opened(relay, f))
        log.info(
            json.dumps(
                {"event": "relay_opened", "allocation": out.allocation, "relay": list(relay)}
            )
        )

    def _opened(self, relay: Addr, fut: asyncio.Future[Any]) -> None:
        still_open = self.opening.pop(relay, None) is not None
        if fut.cancelled() or fut.exception() is not None:
            _warn("relay_open_failed", relay=list(relay), error=repr(fut.exception()))
            return
        transport, _ = fut.result()
        if not still_open:  # closed while it was being opened
            transport.close()
            return
        self.relays[relay] = transport

    # ------------------------------------------------------------------ running

    def reload(self) -> bool:
        """Read the configuration file again (SIGHUP) and take its users, REST secrets,
        fleet keys and TLS certificates.  All or nothing: a file that does not load — a
        bad YAML, a users file with a broken line, a certificate or key that does not
        load — leaves every old one in place and says why in the log.  New TLS
        connections get the new certificate; established ones keep theirs.  Other
        changes (listeners, relay, limits, workers) need a restart and are logged."""
        source = self.config.source
        try:
            if source is None:
                raise ValueError("the configuration was not read from a file")
            new = load_config(source)
            certs: list[tuple[ssl.SSLContext, Path, Path]] = []
            dtls: list[tuple[DtlsListener, SSL.Context]] = []
            for lis in new.doc.listen:
                listener = self.dtls.get((lis.address, lis.port))
                if lis.transport == "dtls" and listener is not None and lis.cert and lis.key:
                    cert, key = new.path(lis.cert), new.path(lis.key)
                    dtls.append((listener, dtls_context(str(cert), str(key))))
                    continue
                ctx = self.tls.get((lis.address, lis.port))
                if lis.transport != "tls" or ctx is None or not lis.cert or not lis.key:
                    continue
                cert, key = new.path(lis.cert), new.path(lis.key)
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
                certs.append((ctx, cert, key))
        except Exception as e:
            _warn("reload_failed", file=str(source), error=str(e)[:500], kept="old credentials")
            return False
        for ctx, cert, key in certs:  # loaded once already: the same files load again
            ctx.load_cert_chain(cert, key)
        for listener, dctx in dtls:  # new DTLS associations get the new certificate
            listener.ctx = dctx
        self.core.set_credentials(new.credentials)
        old, doc = self.config.doc, new.doc
        listeners = [(x.transport, x.address, x.port) for x in doc.listen]
        restart = [
            name
            for name in ("relay", "limits", "workers", "metrics", "drain")
            if getattr(doc, name) != getattr(old, name)
        ]
        if listeners != [(x.transport, x.address, x.port) for x in old.listen]:
            restart.append("listen")
        _event(
            "reloaded",
            users=len(new.credentials.users),
            rest_secrets=len(new.credentials.rest_secrets),
            certificates=len(certs) + len(dtls),
            not_applied_until_restart=restart,
        )
        return True

    def set_draining(self, on: bool) -> None:
        """Drain (new Allocates sent to ``drain.alternates``) or stop draining."""
        drain = self.config.drain() if on else None
        self.core.drain(drain)
        alternates = [list(a) for a in drain.alternates] if drain else []
        _warn("draining" if on else "drain_stopped", alternates=alternates)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # the configured listeners, then RFC 5780's other addresses (stun:)
        listen: list[tuple[str, str, int, ListenIn | None]] = [
            (x.transport, x.address, x.port, x) for x in self.config.doc.listen
        ]
        listen += [("udp", a, p, None) for a, p in self.config.stun_listeners()]
        for transport, address, port, lis in listen:
            local = (address, port)
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            if transport == "dtls":
                assert lis is not None
                assert lis.cert is not None
                assert lis.key is not None
                dctx = dtls_context(str(self.config.path(lis.cert)), str(self.config.path(lis.key)))
                sock = self._udp_socket(family, local)
                dtls = DtlsListener(dctx, local, lambda: self.core, self.carry_out)
                await loop.create_datagram_endpoint(functools.partial(_same, dtls), sock=sock)
                self.dtls[local] = dtls
            elif transport == "udp":
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if self._reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RELAY_BUFFER)
                sock.bind(local)
                if self.ring is not None:
                    udp = _Udp(self, local)
                    self.listeners[local] = BatchedListener(
                        loop, sock, self.ring, udp.slow, udp.error_received, lanes=udp.lanes
                    )
                else:
                    endpoint, _ = await loop.create_datagram_endpoint(
                        self._udp_factory(local), sock=sock
                    )
                    self.listeners[local] = endpoint
            else:
                assert lis is not None
                ctx = None
                if lis.transport == "tls":
                    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                    assert lis.cert is not None
                    assert lis.key is not None
                    ctx.load_cert_chain(self.config.path(lis.cert), self.config.path(lis.key))
                    self.tls[local] = ctx
                server = await loop.create_server(
                    self._stream_factory(lis.transport, local),
                    lis.address,
                    lis.port,
                    ssl=ctx,
                    ssl_handshake_timeout=TLS_HANDSHAKE if ctx is not None else None,
                    backlog=LISTEN_BACKLOG,
                    reuse_address=True,
                    reuse_port=self._reuse_port or None,
                )
                self.servers.append(server)
            log.info(
                json.dumps(
                    {
                        "event": "listening",
                        "transport": transport,
                        "address": address,
                        "port": port,
                    }
                )
            )
        self._ticker = asyncio.ensure_future(self._tick())

    def _udp_socket(self, family: int, local: Addr) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self._reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RELAY_BUFFER)
        sock.bind(local)
        return sock

    def _udp_factory(self, local: Addr) -> Callable[[], _Udp]:
        return lambda: _Udp(self, local)

    def _stream_factory(self, name: str, local: Addr) -> Callable[[], _Stream]:
        return lambda: _Stream(self, name, local)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            _guarded(self, lambda: self.core.tick(time.time()))
            if self.fast is not None:
                _guarded(self, self._sync_fast)
            self._close_idle()
            for dtls in self.dtls.values():
                dtls.tick()

    def _sync_fast(self) -> list[Output]:
        assert self.fast is not None
        self.fast.sync(self.core, time.time())
        return []

    def _close_idle(self) -> None:
        """Close TCP/TLS connections that have held no allocation for STREAM_IDLE s."""
        limit = time.monotonic() - STREAM_IDLE
        for key, since in list(self.opened.items()):
            proto = self.stream_protocols.get(key)
            if proto is not None and proto.spliced is not None:  # an RFC 6062 data connection
                self.opened.pop(key, None)
                continue
            if since < limit and self.core.allocation(*key) is None:
                stream = self.streams.get(key)
                if stream is not None:
                    stream.close()
                self.opened.pop(key, None)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self.fast is not None:
            self.fast.close(self.core, time.time())
        for s in self.servers:
            s.close()
        for t in list(self.streams.values()):
            t.close()
        for s in self.servers:
            await s.wait_closed()
        for d in [*self.listeners.values(), *self.relays.values()]:
            d.close()
        for x in self.dtls.values():
            x.close()
        self.dtls.clear()
        for pc in list(self.peer_conns.values()):
            pc.close()
        for listening in self.tcp_relays.values():
            listening.close()
        self.tcp_relays.clear()
        for sock in self.ports.sockets.values():
            sock.close()
        self.ports.sockets.clear()
        self.relays.clear()
        self.listeners.clear()
