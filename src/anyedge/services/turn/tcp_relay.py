"""TCP allocations (RFC 6062) on asyncio: the relayed address's listener, connections
to and from peers, and splicing them to clients' data connections.

A TCP allocation's relayed address is a listening TCP socket (``OpenRelay`` with
``tcp``); a peer that connects there is reported to the core
(``TurnServer.peer_accepted``), which names the connection or has it closed.  A
client's Connect becomes ``ConnectPeer``: a TCP connection from the relayed address
(``SO_REUSEPORT`` beside the listener) to the peer, whose outcome goes back to the core
(``peer_connected``).  Once the client binds a new connection to it (ConnectionBind,
``Splice``), bytes pass between the two connections untouched, without the core; until
then what the peer sends waits here (reading pauses beyond ``HOLD`` bytes).  Either
side closing closes the other (``ClosePeer`` too, when the allocation ends).  Spliced,
each side stops reading while the other's send buffer is above asyncio's high-water
mark (``pause_writing``/``resume_writing``), so a side that does not read makes the
relay hold at most that much, not everything the other sends.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from ...proto.turn.outputs import Addr, Output

HOLD = 256 * 1024  # bytes from a peer held before its connection is bound
CONNECT_TIMEOUT = 10.0  # seconds for a peer to accept the relay's connection


class Host(Protocol):
    """What the TCP relay needs of :class:`~.io.TurnService`."""

    peer_conns: dict[int, PeerStream]

    def carry_out(self, outputs: list[Output]) -> None: ...

    def core_call(self, call: Callable[[], list[Output]]) -> None: ...

    def peer_accepted(self, relay: Addr, peer: Addr) -> int | None: ...

    def peer_closed(self, connection: int) -> None: ...


class PeerStream(asyncio.Protocol):
    """One TCP connection between a relayed address and a peer."""

    def __init__(self, host: Host, connection: int | None, relay: Addr | None = None) -> None:
        self.host = host
        self.connection = connection
        self.relay = relay  # set for connections peers opened (accepted on the listener)
        self.transport: asyncio.Transport | None = None
        self.held = bytearray()
        self.client: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.relay is not None:  # a peer connected to the relayed address
            peer = transport.get_extra_info("peername")
            self.connection = self.host.peer_accepted(self.relay, (peer[0], peer[1]))
            if self.connection is None:
                self.transport.close()
                return
        if self.connection is not None:
            self.host.peer_conns[self.connection] = self

    def data_received(self, data: bytes) -> None:
        if self.client is not None:
            self.client.write(data)
            return
        self.held += data
        if len(self.held) > HOLD and self.transport is not None:
            self.transport.pause_reading()

    def splice(self, client: asyncio.Transport) -> None:
        """From now on the peer's bytes go to ``client``."""
        self.client = client
        if self.held:
            client.write(bytes(self.held))
            self.held.clear()
        if self.transport is not None:
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        """The peer does not read what the client sends: stop reading the client."""
        if self.client is not None:
            self.client.pause_reading()

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connection is not None:
            self.host.peer_conns.pop(self.connection, None)
            self.host.peer_closed(self.connection)
        if self.client is not None:
            self.client.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def listening_socket(addr: Addr) -> socket.socket:
    """A TCP socket listening on a relayed address; connections from it to peers bind
    the same address beside it (``SO_REUSEPORT``)."""
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(addr)
        s.listen(128)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


async def connect_peer(host: Host, connection: int, relay: Addr, peer: Addr) -> None:
    """Open the connection a Connect asked for and tell the core how it went."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in relay[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(relay)
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, peer), CONNECT_TIMEOUT)
        protocol = PeerStream(host, connection)
        await loop.create_connection(lambda: protocol, sock=sock)
    except (OSError, TimeoutError):
        sock.close()
        host.core_call(lambda: _connected(host, connection, False))
        return
    host.core_call(lambda: _connected(host, connection, True))


def _connected(host: Any, connection: int, ok: bool) -> list[Output]:
    outputs: list[Output] = host.core.peer_connected(time.time(), connection, ok)
    return outputs


async def serve_relay(host: Host, sock: socket.socket, addr: Addr) -> asyncio.Server:
    """Accept peers' connections on a TCP allocation's listening socket."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: PeerStream(host, None, addr), sock=sock)
