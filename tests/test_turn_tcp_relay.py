"""TCP allocations (RFC 6062): Connect, ConnectionBind, ConnectionAttempt.

In memory, the core's decisions: a TCP allocation only over TCP or TLS, a Connect
answered when the IO layer reports the peer connection, a ConnectionBind from a new
client connection spliced to it once (signed with the allocation's key, whatever its
nonce), peers' connections let in by permission, unbound connections closed after
30 s and every connection closed with its allocation.  For real: coturn's
``turnutils_uclient -T`` (two clients reaching each other's TCP relayed addresses,
data over spliced connections) against ``anyedge turn serve``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import turn_peers as tp
from anyedge.proto.stun import Attr, Class, Method, decode, pack
from anyedge.proto.turn import OpenRelay, ToClient, TurnConfig
from anyedge.proto.turn.outputs import ClosePeer, ConnectPeer, Splice
from anyedge.services.turn.config import load_config
from anyedge.services.turn.tcp_relay import HOLD, PeerStream
from test_turn_server import CLIENT, PEER, PEER2, T0, Client, attr, error_code, make_server

TCP = (Attr.REQUESTED_TRANSPORT, bytes((6, 0, 0, 0)))


def tcp_allocation() -> tuple[Client, tuple[str, int]]:
    client = Client(make_server(), transport="tcp")
    resp, out = client.request(T0, Method.ALLOCATE, [TCP])
    assert resp.cls == Class.SUCCESS, error_code(resp)
    (opened,) = [o for o in out if isinstance(o, OpenRelay)]
    assert opened.tcp
    return client, opened.relay_addr


def connect(client: Client, now: float, peer: tuple[str, int]) -> list[object]:
    attrs = [(int(Attr.XOR_PEER_ADDRESS), pack(Attr.XOR_PEER_ADDRESS, peer, b""))]
    _, data = client.build(Method.CONNECT, attrs)
    return list(client.send(now, data))


def data_connection(client: Client, port: int) -> Client:
    """A new connection of the same client, knowing its credentials."""
    return Client(client.server, transport="tcp", addr=(CLIENT[0], port), nonce=client.nonce)


def bind(conn: Client, now: float, connection: int) -> tuple[int | None, list[object]]:
    _, data = conn.build(
        Method.CONNECTION_BIND, [(int(Attr.CONNECTION_ID), connection.to_bytes(4, "big"))]
    )
    out = conn.send(now, data)
    (resp,) = [decode(o.data) for o in out if isinstance(o, ToClient)]
    return error_code(resp), list(out)


def test_a_tcp_allocation_needs_a_stream() -> None:
    resp, _ = Client(make_server()).request(T0, Method.ALLOCATE, [TCP])  # over UDP
    assert error_code(resp) == 400
    resp, _ = Client(make_server(), transport="tcp").request(
        T0, Method.ALLOCATE, [TCP, (Attr.EVEN_PORT, b"\x00")]
    )
    assert error_code(resp) == 400
    # several workers: TCP relaying is off (442), its data connections could miss
    off = Client(make_server(TurnConfig(tcp_relay=False)), transport="tcp")
    assert error_code(off.request(T0, Method.ALLOCATE, [TCP])[0]) == 442


def test_tcp_relaying_is_on_with_one_worker_only(tmp_path: Path) -> None:
    conf = tmp_path / "turn.yaml"
    base = (
        "realm: x\nlisten: [{transport: udp, address: 127.0.0.1}]\n"
        "auth: {fleet_keys: [a-fleet-key], users: {a: b}}\n"
    )
    conf.write_text(base + "workers: 1\n")
    assert load_config(conf).turn.tcp_relay
    conf.write_text(base + "workers: 2\n")
    assert not load_config(conf).turn.tcp_relay


def test_connect_bind_and_data_connection() -> None:
    client, relay = tcp_allocation()
    (cp,) = connect(client, T0, PEER)
    assert isinstance(cp, ConnectPeer)
    assert (cp.relay_addr, cp.peer_addr) == (relay, PEER)
    (dup,) = connect(client, T0, PEER)  # one connection per peer
    assert error_code(decode(dup.data)) == 446  # type: ignore[attr-defined]
    (answer,) = client.server.peer_connected(T0 + 0.1, cp.connection, True)
    resp = decode(answer.data)  # type: ignore[attr-defined]
    assert resp.cls == Class.SUCCESS
    assert attr(resp, Attr.CONNECTION_ID) == cp.connection
    assert PEER[0] in client.server.allocation("tcp", CLIENT, client.server_addr).perms  # type: ignore[union-attr]

    conn = data_connection(client, 41000)
    code, out = bind(conn, T0 + 1, cp.connection)
    assert code is None
    assert out[-1] == Splice("tcp", (CLIENT[0], 41000), client.server_addr, cp.connection)
    again = data_connection(client, 41001)
    assert bind(again, T0 + 1, cp.connection)[0] == 400  # bound already: no replay
    # the allocation ends: its connection with it
    _, out = client.ok(T0 + 2, Method.REFRESH, [(Attr.LIFETIME, bytes(4))])
    assert ClosePeer(cp.connection) in out


def test_a_failed_connect_is_447_and_a_stranger_cannot_bind() -> None:
    client, _ = tcp_allocation()
    (cp,) = connect(client, T0, PEER)
    (answer,) = client.server.peer_connected(T0 + 10, cp.connection, False)
    assert error_code(decode(answer.data)) == 447  # type: ignore[attr-defined]
    (cp2,) = connect(client, T0 + 10, PEER2)
    client.server.peer_connected(T0 + 10, cp2.connection, True)  # type: ignore[attr-defined]
    bob = Client(
        client.server,
        username="bob",
        password="bob-password",
        transport="tcp",
        addr=(CLIENT[0], 42000),
        nonce=client.nonce,
    )
    assert bind(bob, T0 + 11, cp2.connection)[0] == 401  # type: ignore[attr-defined]


def test_peers_connect_in_by_permission_and_unbound_ones_are_closed() -> None:
    client, relay = tcp_allocation()
    server = client.server
    assert server.peer_accepted(T0, relay, PEER) == (None, [])
    assert client.permit(T0, PEER).cls == Class.SUCCESS
    connection, out = server.peer_accepted(T0 + 1, relay, PEER)
    assert connection is not None
    (attempt,) = [decode(o.data) for o in out if isinstance(o, ToClient)]
    assert (attempt.method, attempt.cls) == (Method.CONNECTION_ATTEMPT, Class.INDICATION)
    assert attr(attempt, Attr.CONNECTION_ID) == connection
    assert attr(attempt, Attr.XOR_PEER_ADDRESS) == PEER
    assert ClosePeer(connection) in server.tick(T0 + 31)  # never bound
    assert bind(data_connection(client, 43000), T0 + 32, connection)[0] == 401


class _Transport:
    """A stand-in for an asyncio transport: what was written, whether reading pauses."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.paused = False
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> object:
        return None


class _Host:
    def __init__(self) -> None:
        self.peer_conns: dict[int, PeerStream] = {}
        self.closed: list[int] = []

    def peer_closed(self, connection: int) -> None:
        self.closed.append(connection)


def test_spliced_connections_hold_a_bounded_amount() -> None:
    host, peer, client = _Host(), _Transport(), _Transport()
    pc = PeerStream(host, 7)  # type: ignore[arg-type]
    pc.connection_made(peer)  # type: ignore[arg-type]
    assert host.peer_conns == {7: pc}
    pc.data_received(bytes(HOLD + 1))  # the peer talks before the client has bound
    assert peer.paused
    pc.splice(client)  # type: ignore[arg-type]
    assert (len(client.written), peer.paused) == (HOLD + 1, False)
    pc.pause_writing()  # the peer stops reading: so does the relay, from the client
    assert client.paused
    pc.resume_writing()
    assert not client.paused
    pc.connection_lost(None)  # one side goes: the other with it
    assert (host.closed, client.closed, host.peer_conns) == ([7], True, {})


@pytest.mark.slow
def test_uclient_relays_over_tcp_allocations(tmp_path: Path) -> None:
    if (why := tp.coturn_missing()) is not None:
        pytest.skip(why)
    with tp.anyedge_server(
        tmp_path, tp.free_port(), users={"user": "pass"}, relay_ports=tp.free_port_range(20)
    ) as relay:
        # -T: TCP allocations, two clients connecting to each other's relayed addresses
        r = tp.run_uclient(tp.LOOPBACK, relay.port, "user", "pass", messages=5, extra=["-T"])
    assert r["returncode"] == 0, r["output"][-2000:]
    assert r["errors"] == []
    assert (r["sent"], r["received"], r["lost"]) == (10, 10, 0)
