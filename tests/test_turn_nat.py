"""NAT behaviour discovery (RFC 5780) and classic RFC 3489 Binding answers.

In memory: a server with a second address answers Bindings with RESPONSE-ORIGIN and
OTHER-ADDRESS and honours CHANGE-REQUEST and RESPONSE-PORT; one without refuses them
with 420; RFC 3489 Bindings (no magic cookie) get MAPPED-ADDRESS and CHANGED-ADDRESS,
rate limited like every unauthenticated answer.  For real: ``anyedge turn serve`` with
``stun: {other_address: 127.0.0.2, ...}`` and two clients nobody here wrote — pystun3,
which reported "Blocked" before, and coturn's ``turnutils_stunclient -f``.
"""

from __future__ import annotations

import random
import struct
import subprocess
from collections.abc import Iterator

import pytest

import turn_peers as tp
from anyedge.proto.stun import Attr, Class, Message, Method, decode, encode
from anyedge.proto.turn import Credentials, PortRange, ToClient, TurnConfig, TurnServer
from test_turn_server import CLIENT, FLEET, REALM, RELAY4, T0, USERS, attr, error_code

PRIMARY, OTHER = ("85.20.0.1", 3478), ("85.20.0.9", 3479)


def nat_server(pairs: bool = True, **config: object) -> TurnServer:
    turn = TurnConfig(nat_pairs=((PRIMARY, OTHER),) if pairs else (), **config)  # type: ignore[arg-type]
    ports = PortRange(RELAY4, None, 50000, 50099, random.Random(1))
    return TurnServer(turn, Credentials(REALM, FLEET, USERS), ports, T0)


def binding(
    server: TurnServer, *attrs: tuple[int, bytes], to: tuple[str, int] = PRIMARY
) -> tuple[ToClient, Message]:
    msg = Message(Method.BINDING, Class.REQUEST, random.randbytes(12), attrs)
    (out,) = server.receive(T0, "udp", CLIENT, to, encode(msg))
    assert isinstance(out, ToClient)
    return out, decode(out.data)


def change(flags: int) -> tuple[int, bytes]:
    return Attr.CHANGE_REQUEST, struct.pack("!I", flags)


def test_rfc5780_answers_name_both_addresses_and_change_where_asked() -> None:
    server = nat_server()
    out, resp = binding(server)
    assert out.server_addr == PRIMARY
    assert attr(resp, Attr.XOR_MAPPED_ADDRESS) == CLIENT
    assert attr(resp, Attr.RESPONSE_ORIGIN) == PRIMARY
    assert attr(resp, Attr.OTHER_ADDRESS) == OTHER
    for flags, origin in (
        (0x6, OTHER),
        (0x4, (OTHER[0], PRIMARY[1])),
        (0x2, (PRIMARY[0], OTHER[1])),
    ):
        out, resp = binding(server, change(flags))
        assert out.server_addr == origin, flags
        assert attr(resp, Attr.RESPONSE_ORIGIN) == origin
    # a request to the other address: OTHER-ADDRESS is the primary
    out, resp = binding(server, change(0x6), to=OTHER)
    assert out.server_addr == PRIMARY
    assert attr(resp, Attr.OTHER_ADDRESS) == PRIMARY
    # RESPONSE-PORT: the answer goes to another port of the client's IP
    out, resp = binding(server, (Attr.RESPONSE_PORT, struct.pack("!HH", 40000, 0)))
    assert out.client_addr == (CLIENT[0], 40000)
    assert attr(resp, Attr.XOR_MAPPED_ADDRESS) == CLIENT


def test_without_a_second_address_change_request_is_420() -> None:
    server = nat_server(pairs=False)
    _, resp = binding(server)
    assert resp.get(Attr.OTHER_ADDRESS) is None
    _, resp = binding(server, change(0x6))
    assert error_code(resp) == 420
    assert attr(resp, Attr.UNKNOWN_ATTRIBUTES) == (Attr.CHANGE_REQUEST,)


def classic(flags: int | None = None) -> tuple[bytes, bytes]:
    tid = random.randbytes(16)
    body = b"" if flags is None else struct.pack("!HHI", 0x0003, 4, flags)
    return tid, struct.pack("!HH", 0x0001, len(body)) + tid + body


def classic_attrs(data: bytes) -> dict[int, tuple[str, int]]:
    out, pos = {}, 20
    while pos < len(data):
        t, n = struct.unpack_from("!HH", data, pos)
        port = struct.unpack_from("!H", data, pos + 6)[0]
        out[t] = (".".join(str(b) for b in data[pos + 8 : pos + 12]), port)
        pos += 4 + n
    return out


def test_classic_bindings_get_mapped_and_changed_address() -> None:
    server = nat_server()
    tid, req = classic()
    (out,) = server.receive(T0, "udp", CLIENT, PRIMARY, req)
    assert isinstance(out, ToClient)
    assert out.data[:2] == b"\x01\x01"
    assert out.data[4:20] == tid
    assert classic_attrs(out.data) == {0x0001: CLIENT, 0x0004: PRIMARY, 0x0005: OTHER}
    _, req = classic(0x6)
    (out,) = server.receive(T0, "udp", CLIENT, PRIMARY, req)
    assert out.server_addr == OTHER  # type: ignore[union-attr]
    # no second address: the change cannot be made, and nothing is answered
    plain = nat_server(pairs=False)
    assert plain.receive(T0, "udp", CLIENT, PRIMARY, classic(0x6)[1]) == []
    (out,) = plain.receive(T0, "udp", CLIENT, PRIMARY, classic()[1])
    assert set(classic_attrs(out.data)) == {0x0001, 0x0004}  # type: ignore[union-attr]


def test_classic_answers_are_rate_limited_and_garbage_dropped() -> None:
    server = nat_server(unauth_rate=1.0, unauth_burst=1.0)
    assert len(server.receive(T0, "udp", CLIENT, PRIMARY, classic()[1])) == 1
    assert server.receive(T0, "udp", CLIENT, PRIMARY, classic()[1]) == []
    assert server.counters.dropped_rate_limited == 1
    bad = struct.pack("!HH", 0x0001, 8) + random.randbytes(16) + b"\x00\x03\x00\x09"
    assert server.receive(T0 + 5, "udp", CLIENT, PRIMARY, bad) == []
    assert server.counters.dropped_malformed == 1


@pytest.fixture(scope="module")
def nat_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tp.ServerProcess]:
    other_port = tp.free_port("127.0.0.2")
    while not tp.port_free(other_port):  # (127.0.0.1, other port) is answered on too
        other_port = tp.free_port("127.0.0.2")
    with tp.anyedge_server(
        tmp_path_factory.mktemp("nat"),
        tp.free_port(),
        users={"user": "pass"},
        relay_ports=tp.free_port_range(20),
        extra_yaml=f"stun: {{other_address: 127.0.0.2, other_port: {other_port}}}\n",
    ) as relay:
        relay.other_port = other_port  # type: ignore[attr-defined]
        yield relay


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "verdict"), [("127.0.0.1", "Open Internet"), ("0.0.0.0", "Full Cone")]
)
def test_pystun3_tells_a_nat_type_not_blocked(
    nat_relay: tp.ServerProcess, source: str, verdict: str
) -> None:
    import stun

    # the mapped address is 127.0.0.1: bound to it, pystun3 sees no NAT ("Open
    # Internet"); bound to the wildcard it sees one that lets the other address in
    nat_type, ip, _ = stun.get_ip_info(source, tp.free_port(), "127.0.0.1", nat_relay.port)
    assert (nat_type, ip) == (verdict, "127.0.0.1")


@pytest.mark.slow
def test_turnutils_stunclient_rfc5780(nat_relay: tp.ServerProcess) -> None:
    if (why := tp.coturn_missing()) is not None:
        pytest.skip(why)
    r = subprocess.run(
        ["turnutils_stunclient", "-f", "-p", str(nat_relay.port), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    other = f"127.0.0.2:{nat_relay.other_port}"  # type: ignore[attr-defined]
    assert "RFC 5780 response 3" in r.stdout
    assert f"Other addr: : {other}" in r.stdout
    assert f"Response origin: : {other}" in r.stdout  # the CHANGE-REQUEST was honoured
