"""What the TURN server asks the IO layer to do: send bytes, bind or close a relay socket.

Every input of :class:`~anyedge.proto.turn.server.TurnServer` returns a list of these, in
the order they are to be carried out.  They are plain slotted dataclasses, not frozen:
a frozen one costs three times as much to build and one is built per relayed packet.
Treat them as values all the same.

Addresses are ``(host, port)`` with ``host`` written as ``str(ipaddress.ip_address(h))``
writes it; a transport is ``"udp"``, ``"tcp"``, ``"tls"`` or ``"dtls"``.
"""

from __future__ import annotations

from dataclasses import dataclass

Addr = tuple[str, int]


@dataclass(slots=True)
class ToClient:
    """Send ``data`` to a client over the connection or socket of this 5-tuple."""

    transport: str
    client_addr: Addr
    server_addr: Addr
    data: bytes


@dataclass(slots=True)
class ToPeer:
    """Send ``data`` as one UDP datagram from the relay socket ``relay_addr`` to a peer."""

    relay_addr: Addr
    peer_addr: Addr
    data: bytes


@dataclass(slots=True)
class OpenRelay:
    """Start reading the UDP relay socket ``relay_addr`` for allocation ``allocation``.

    ``relay_addr`` came from the server's :class:`~anyedge.proto.turn.ports.RelayPorts`,
    which may already have bound it.  ``dont_fragment``: the client asked for the DF bit
    on datagrams to peers (``IP_MTU_DISCOVER`` = ``IP_PMTUDISC_DO`` on Linux).
    """

    allocation: int
    relay_addr: Addr
    family: int
    dont_fragment: bool = False
    tcp: bool = False  # RFC 6062: listen for peers' TCP connections there instead


@dataclass(slots=True)
class CloseRelay:
    """Stop reading and close the relay socket; its port is already given back."""

    allocation: int
    relay_addr: Addr


@dataclass(slots=True)
class ConnectPeer:
    """RFC 6062: open a TCP connection from ``relay_addr`` to ``peer_addr`` and report
    the outcome with ``TurnServer.peer_connected(connection, ok)``."""

    connection: int
    relay_addr: Addr
    peer_addr: Addr


@dataclass(slots=True)
class Splice:
    """RFC 6062: the client connection of this 5-tuple carries ``connection``'s bytes
    from now on, both ways, unframed (after the ConnectionBind answer before it)."""

    transport: str
    client_addr: Addr
    server_addr: Addr
    connection: int


@dataclass(slots=True)
class ClosePeer:
    """RFC 6062: close peer connection ``connection`` and the client connection
    spliced to it, if any."""

    connection: int


Output = ToClient | ToPeer | OpenRelay | CloseRelay | ConnectPeer | Splice | ClosePeer
