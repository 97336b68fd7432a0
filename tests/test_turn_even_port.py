"""EVEN-PORT with its R bit and RESERVATION-TOKEN (RFC 8656 §7.1, §14.6, §14.9), sans-IO.

An RTP allocation asks for an even port and the reservation of the next; the RTCP
allocation claims that port with the token.  The server is driven in memory with the
test client of tests/test_turn_server.py; coturn's ``turnutils_uclient`` does the same
on the wire in tests/test_turn_interop_coturn.py.
"""

from __future__ import annotations

import random

from anyedge.proto.stun import Attr, Class
from anyedge.proto.turn import Credentials, OpenRelay, PortRange, TurnConfig, TurnServer
from test_turn_server import (
    CLIENT,
    FLEET,
    REALM,
    RELAY4,
    T0,
    USERS,
    Client,
    attr,
    error_code,
    make_server,
    relays_of,
)

RESERVE = (Attr.EVEN_PORT, b"\x80")


def token_of(resp: object) -> bytes:
    raw = resp.get(Attr.RESERVATION_TOKEN)  # type: ignore[attr-defined]
    assert raw is not None, "no RESERVATION-TOKEN"
    assert len(raw) == 8
    return bytes(raw)


def test_even_port_reserves_the_next_port_for_the_token() -> None:
    server = make_server()
    rtp = Client(server)
    resp, _ = rtp.allocate(T0, RESERVE)
    assert resp.cls == Class.SUCCESS, error_code(resp)
    ((host, port),) = relays_of(resp)
    assert port % 2 == 0
    token = token_of(resp)
    assert server.reservations == 1
    rtcp = Client(server, addr=(CLIENT[0], CLIENT[1] + 1))
    resp2, out2 = rtcp.allocate(T0 + 1, (Attr.RESERVATION_TOKEN, token))
    assert resp2.cls == Class.SUCCESS, error_code(resp2)
    assert relays_of(resp2) == [(host, port + 1)]
    assert OpenRelay(2, (host, port + 1), 4, False) in out2
    assert server.reservations == 0
    # a token is used once
    again = Client(server, addr=(CLIENT[0], CLIENT[1] + 2))
    assert error_code(again.allocate(T0 + 2, (Attr.RESERVATION_TOKEN, token))[0]) == 508


def test_a_token_unclaimed_for_30_s_gives_its_port_back() -> None:
    creds = Credentials(REALM, FLEET, USERS)
    ports = PortRange(RELAY4, None, 50000, 50001, random.Random(3))
    server = TurnServer(TurnConfig(), creds, ports, T0)
    resp, _ = Client(server).allocate(T0, RESERVE)
    token = token_of(resp)
    assert ports.free(4) == 0
    assert server.next_deadline() == T0 + 30
    server.tick(T0 + 30)
    assert (ports.free(4), server.reservations) == (1, 0)
    late = Client(server, addr=("85.10.0.1", 9))
    assert error_code(late.allocate(T0 + 31, (Attr.RESERVATION_TOKEN, token))[0]) == 508
    # the port is an ordinary one again
    assert late.allocate(T0 + 31)[0].cls == Class.SUCCESS


def test_only_the_user_who_reserved_may_claim() -> None:
    server = make_server()
    resp, _ = Client(server).allocate(T0, RESERVE)
    token = token_of(resp)
    bob = Client(server, username="bob", password=USERS["bob"], addr=("85.10.0.2", 4000))
    assert error_code(bob.allocate(T0, (Attr.RESERVATION_TOKEN, token))[0]) == 508
    assert server.reservations == 1


def test_no_pair_free_is_508() -> None:
    creds = Credentials(REALM, FLEET, USERS)
    # 50001 and 50002: no even port with a free neighbour
    server = TurnServer(TurnConfig(), creds, PortRange(RELAY4, None, 50001, 50002), T0)
    resp, _ = Client(server).allocate(T0, RESERVE)
    assert error_code(resp) == 508
    assert server.counters.allocations == 0


def test_reservations_are_capped() -> None:
    server = make_server(TurnConfig(max_reservations=1))
    assert Client(server).allocate(T0, RESERVE)[0].cls == Class.SUCCESS
    second = Client(server, addr=("85.10.0.1", 7))
    assert error_code(second.allocate(T0, RESERVE)[0]) == 508
    assert attr(second.allocate(T0)[0], Attr.LIFETIME) == 600  # plain ones still work
