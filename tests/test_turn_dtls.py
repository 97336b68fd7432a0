"""TURN over DTLS (RFC 7350).

In memory: a pyOpenSSL DTLS client shakes hands with a :class:`DtlsListener` through
plain byte strings; a new address is answered with a HelloVerifyRequest and no state
kept until it returns the cookie, and a Binding sent over the association is answered
over it.  For real: coturn's ``turnutils_uclient -S`` (DTLS for UDP) allocates and
relays through a DTLS listener of ``anyedge turn serve``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from OpenSSL import SSL

import turn_peers as tp
from anyedge.proto.stun import Attr, Class, Message, Method, decode, encode
from anyedge.proto.turn import Credentials, PortRange, TurnConfig, TurnServer
from anyedge.services.turn.dtls import DtlsListener, dtls_context
from test_turn_server import CLIENT, FLEET, REALM, RELAY4, SERVER, T0, USERS, attr
from test_turn_service import self_signed


class _Wire:
    """A stand-in for the listener's UDP transport: what it sends, by destination."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))

    def take(self) -> list[bytes]:
        out = [d for d, _ in self.sent]
        self.sent.clear()
        return out

    def close(self) -> None:
        pass


def _client() -> SSL.Connection:
    ctx = SSL.Context(SSL.DTLS_CLIENT_METHOD)
    conn = SSL.Connection(ctx, None)
    conn.set_connect_state()
    return conn


def _flights(conn: SSL.Connection) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(conn.bio_read(65535))
        except SSL.WantReadError:
            return out


def shake_hands(client: SSL.Connection, listener: DtlsListener, wire: _Wire) -> None:
    """Carry flights both ways until both ends have finished the handshake."""
    for _ in range(10):
        try:
            client.do_handshake()
            done = True
        except SSL.WantReadError:
            done = False
        for flight in _flights(client):
            listener.datagram_received(flight, CLIENT)
        for record in wire.take():
            client.bio_write(record)
        peer = listener.clients.get(CLIENT)
        if done and peer is not None and peer.ready:
            return
    raise AssertionError("the DTLS handshake did not finish")


def test_a_dtls_client_is_verified_statelessly_and_then_served(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    core = TurnServer(
        TurnConfig(),
        Credentials(REALM, FLEET, USERS),
        PortRange(RELAY4, None, 50000, 50099, random.Random(1)),
        T0,
    )
    wire = _Wire()
    answers: list[Any] = []  # what the core asked the IO layer to do
    listener = DtlsListener(dtls_context(str(cert), str(key)), SERVER, lambda: core, answers.extend)
    listener.connection_made(wire)  # type: ignore[arg-type]
    client = _client()
    with pytest.raises(SSL.WantReadError):
        client.do_handshake()
    (hello,) = _flights(client)
    listener.datagram_received(hello, CLIENT)
    (verify,) = wire.take()
    assert listener.clients == {}  # nothing kept for an address not yet proven
    assert len(verify) <= len(hello)  # no amplification
    client.bio_write(verify)
    shake_hands(client, listener, wire)
    assert listener.clients[CLIENT].ready
    request = Message(Method.BINDING, Class.REQUEST, random.randbytes(12), ())
    client.send(encode(request))
    for flight in _flights(client):
        listener.datagram_received(flight, CLIENT)
    (out,) = answers
    assert out.transport == "dtls"
    listener.send(out.client_addr, out.data)
    for record in wire.take():
        client.bio_write(record)
    resp = decode(client.recv(65535))
    assert attr(resp, Attr.XOR_MAPPED_ADDRESS) == CLIENT


@pytest.mark.slow
def test_uclient_relays_over_dtls(tmp_path: Path) -> None:
    if (why := tp.coturn_missing()) is not None:
        pytest.skip(why)
    self_signed(tmp_path)
    dtls_port = tp.free_port()
    with tp.anyedge_server(
        tmp_path,
        tp.free_port(),
        users={"user": "pass"},
        relay_ports=tp.free_port_range(20),
        dtls_port=dtls_port,
    ) as relay:
        r = tp.run_uclient(tp.LOOPBACK, dtls_port, "user", "pass", messages=5, extra=["-S"])
        assert r["returncode"] == 0, r["output"][-2000:]
        assert "method=DTLSv1.2" in r["output"]
        assert (r["sent"], r["received"], r["lost"]) == (5, 5, 0)
        assert '"transport": "dtls"' in relay.log_tail()
