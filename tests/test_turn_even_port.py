"""EVEN-PORT with its R bit and RESERVATION-TOKEN (RFC 8656 §7.1, §14.6, §14.9), sans-IO.

An RTP allocation asks for an even port and the reservation of the next; the RTCP
allocation claims that port with the token.  The server is driven in memory with the
test client of tests/test_turn_server.py; coturn's ``turnutils_uclient`` does the same
on the wire in tests/test_turn_interop_coturn.py.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

import turn_peers as tp
from anyedge.proto.stun import Attr, Class, Method
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
    assert server.next_deadline() == T0 + 32  # 30 s, and 2 s of grace
    late = Client(server, addr=("85.10.0.1", 9))
    assert error_code(late.allocate(T0 + 30, (Attr.RESERVATION_TOKEN, token))[0]) == 508
    server.tick(T0 + 32)
    assert (ports.free(4), server.reservations) == (1, 0)
    # the port is an ordinary one again
    assert late.allocate(T0 + 32)[0].cls == Class.SUCCESS


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


def test_a_forged_token_is_refused() -> None:
    server = make_server()
    resp, _ = Client(server).allocate(T0, RESERVE)
    token = bytearray(token_of(resp))
    token[1] ^= 1  # another port, same MAC
    other = Client(server, addr=("85.10.0.1", 8))
    assert error_code(other.allocate(T0, (Attr.RESERVATION_TOKEN, bytes(token)))[0]) == 508


def test_another_worker_of_the_site_honours_the_token() -> None:
    """The RTCP Allocate comes from another client port and may reach another worker:
    the token names the port and is checked with the key the workers share."""
    creds = Credentials(REALM, FLEET, USERS)
    first = PortRange(RELAY4, None, 50000, 50099, random.Random(1))
    second = PortRange(RELAY4, None, 50100, 50199, random.Random(2))
    worker0 = TurnServer(TurnConfig(), creds, first, T0)
    worker1 = TurnServer(TurnConfig(), creds, second, T0)
    resp, _ = Client(worker0).allocate(T0, RESERVE)
    ((_, port),) = relays_of(resp)
    token = token_of(resp)
    rtcp = Client(worker1, addr=(CLIENT[0], CLIENT[1] + 1))
    resp2, _ = rtcp.allocate(T0 + 1, (Attr.RESERVATION_TOKEN, token))
    assert relays_of(resp2) == [(RELAY4, port + 1)]
    again = Client(worker1, addr=(CLIENT[0], CLIENT[1] + 2))
    assert error_code(again.allocate(T0 + 1, (Attr.RESERVATION_TOKEN, token))[0]) == 508
    # worker 1 gives a port of worker 0's slice back to nobody's pool but worker 0's
    rtcp.ok(T0 + 2, Method.REFRESH, [(Attr.LIFETIME, b"\x00\x00\x00\x00")])
    assert second.free(4) == 100


@pytest.mark.slow
def test_uclient_rtp_rtcp_pairs_with_two_workers(tmp_path: Path) -> None:
    """With two workers the kernel spreads a client's RTP and RTCP Allocates over both
    (their client ports differ); every pair still gets its reserved port."""
    if (why := tp.coturn_missing()) is not None:
        pytest.skip(why)
    with tp.anyedge_server(
        tmp_path,
        tp.free_port(),
        users={"user": "pass"},
        relay_ports=tp.free_port_range(200),
        workers=2,
    ) as relay:
        r = tp.run_uclient(
            tp.LOOPBACK, relay.port, "user", "pass", messages=5, clients=4, rtcp=True
        )
    assert r["returncode"] == 0, r["output"][-2000:]
    assert r["errors"] == []
    assert (r["sent"], r["received"], r["lost"]) == (20, 20, 0)


def test_a_port_another_worker_holds_is_taken_back_only_once_free() -> None:
    from anyedge.services.turn.io import BindingPorts

    lo, hi = tp.free_port_range(10)
    ports = BindingPorts(PortRange("127.0.0.1", None, lo, hi, random.Random(4)))
    even, spare = ports.take_pair(4) or pytest.fail("no pair")
    try:
        assert even in ports.sockets
        assert spare not in ports.sockets  # set aside, not bound: any worker may bind it
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the worker that claimed it
        other.bind(spare)
        assert ports.take_exact(4, spare[1]) is None  # the kernel says it is taken
        assert ports.reclaim(spare) is False
        other.close()
        assert ports.reclaim(spare) is True
        assert ports.inner.free(4) == hi - lo  # all but the even port
    finally:
        ports.give_back(even)
