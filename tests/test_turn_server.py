"""The sans-IO TURN server, driven in memory with a deterministic clock.

A small test client signs requests the way a real one does (401 challenge, then
long-term credentials with the realm and nonce it was given) and reads the outputs.
Addresses are written in literals only: nothing here touches a network.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anyedge.proto.stun import (
    CHANNEL_MIN,
    Attr,
    Class,
    Message,
    Method,
    PasswordAlgorithm,
    check_fingerprint,
    check_integrity,
    decode,
    decode_channel_data,
    encode,
    encode_channel_data,
    long_term_key,
    pack,
    unpack,
    userhash,
)
from anyedge.proto.turn import (
    CloseRelay,
    Credentials,
    OpenRelay,
    Output,
    PeerPolicy,
    PortRange,
    ToClient,
    ToPeer,
    TurnConfig,
    TurnServer,
    port_slice,
    rest_password,
    rest_username,
    slice_owner,
)
from anyedge.proto.turn.auth import mint_nonce, nonce_valid

T0 = 1_700_000_000.0
REALM = "anyedge.test"
FLEET = (b"fleet key one",)
USERS = {"alice": "alice-password", "bob": "bob-password"}
SECRETS = (b"new rest secret", b"old rest secret")
CLIENT = ("85.10.0.1", 50000)
CLIENT6 = ("2a02:8070::1", 50000)
SERVER = ("85.20.0.1", 3478)
RELAY4, RELAY6 = "85.20.0.2", "2a01:4f8::2"
PEER = ("81.2.69.142", 6000)
PEER2 = ("81.2.69.143", 6001)
PEER6 = ("2a00:1450:4001:81b::200e", 7000)
Addr = tuple[str, int]
_CLIENT_SEEDS = itertools.count(1)  # every test client draws distinct transaction ids


def make_server(config: TurnConfig | None = None, fleet: tuple[bytes, ...] = FLEET) -> TurnServer:
    creds = Credentials(REALM, fleet, USERS, SECRETS)
    ports = PortRange(RELAY4, RELAY6, 50000, 50999, random.Random(7))
    return TurnServer(config or TurnConfig(), creds, ports, T0, random.Random(1))


def responses(outputs: Sequence[Output]) -> list[Message]:
    return [decode(o.data) for o in outputs if isinstance(o, ToClient)]


def error_code(msg: Message) -> int | None:
    raw = msg.get(Attr.ERROR_CODE)
    return None if raw is None else int(unpack(Attr.ERROR_CODE, raw)[0])


def attr(msg: Message, a: Attr) -> object:
    raw = msg.get(a)
    assert raw is not None, f"{a.rfc_name} missing"
    return unpack(a, raw, msg.transaction_id)


@dataclass
class Client:
    """A TURN client on one 5-tuple, enough to drive every flow."""

    server: TurnServer
    username: str = "alice"
    password: str = USERS["alice"]
    transport: str = "udp"
    addr: Addr = CLIENT
    server_addr: Addr = SERVER
    nonce: str | None = None
    integrity: Literal["sha1", "sha256"] = "sha1"
    algorithm: int = PasswordAlgorithm.MD5
    rng: random.Random = field(default_factory=lambda: random.Random(next(_CLIENT_SEEDS)))
    last: bytes = b""

    @property
    def key(self) -> bytes:
        return long_term_key(self.username, REALM, self.password, self.algorithm)

    def send(self, now: float, data: bytes) -> list[Output]:
        return self.server.receive(now, self.transport, self.addr, self.server_addr, data)

    def build(
        self, method: int, attrs: Sequence[tuple[int, bytes]], signed: bool = True
    ) -> tuple[bytes, bytes]:
        tid = self.rng.randbytes(12)
        extra: list[tuple[int, bytes]] = []
        if signed:
            assert self.nonce is not None
            extra = [
                (Attr.USERNAME, self.username.encode()),
                (Attr.REALM, REALM.encode()),
                (Attr.NONCE, self.nonce.encode()),
            ]
            if self.algorithm != PasswordAlgorithm.MD5:
                extra.append(
                    (Attr.PASSWORD_ALGORITHM, pack(Attr.PASSWORD_ALGORITHM, (self.algorithm, b"")))
                )
        msg = Message(method, Class.REQUEST, tid, (*attrs, *extra))
        key = self.key if signed else None
        data = encode(msg, key, self.integrity if signed else None, fingerprint=True)
        return tid, data

    def request(
        self, now: float, method: int, attrs: Sequence[tuple[int, bytes]] = (), signed: bool = True
    ) -> tuple[Message, list[Output]]:
        """Send a request (learning the nonce first if need be); the response and outputs."""
        if signed and self.nonce is None:
            challenge, _ = self.request(now, method, attrs, signed=False)
            assert error_code(challenge) == 401
            self.nonce = str(attr(challenge, Attr.NONCE))
        tid, data = self.build(method, attrs, signed)
        self.last = data
        out = self.send(now, data)
        (resp,) = responses(out)
        assert resp.transaction_id == tid
        assert resp.method == method
        assert check_fingerprint(next(o.data for o in out if isinstance(o, ToClient)))
        return resp, out

    def ok(
        self, now: float, method: int, attrs: Sequence[tuple[int, bytes]] = ()
    ) -> tuple[Message, list[Output]]:
        """A request that must succeed; a stale nonce is renewed as a real client would."""
        resp, out = self.request(now, method, attrs)
        if error_code(resp) == 438:
            self.nonce = str(attr(resp, Attr.NONCE))
            resp, out = self.request(now, method, attrs)
        assert resp.cls == Class.SUCCESS, error_code(resp)
        data = next(o.data for o in out if isinstance(o, ToClient))
        assert check_integrity(data, resp, self.key)
        return resp, out

    def allocate(self, now: float, *attrs: tuple[int, bytes]) -> tuple[Message, list[Output]]:
        return self.request(
            now, Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, bytes((17, 0, 0, 0))), *attrs]
        )

    def permit(self, now: float, *peers: Addr) -> Message:
        return self._peer_request(now, Method.CREATE_PERMISSION, [], peers)

    def bind(self, now: float, channel: int, peer: Addr) -> Message:
        attrs = [(int(Attr.CHANNEL_NUMBER), pack(Attr.CHANNEL_NUMBER, channel))]
        return self._peer_request(now, Method.CHANNEL_BIND, attrs, [peer])

    def _peer_request(
        self,
        now: float,
        method: int,
        attrs: list[tuple[int, bytes]],
        peers: Sequence[Addr],
    ) -> Message:
        # XOR-PEER-ADDRESS of an IPv6 peer depends on the transaction id: build by hand
        if self.nonce is None:
            challenge, _ = self.request(now, method, [], signed=False)
            self.nonce = str(attr(challenge, Attr.NONCE))
        tid = self.rng.randbytes(12)
        body = [
            *attrs,
            *((Attr.XOR_PEER_ADDRESS, pack(Attr.XOR_PEER_ADDRESS, p, tid)) for p in peers),
        ]
        body += [
            (Attr.USERNAME, self.username.encode()),
            (Attr.REALM, REALM.encode()),
            (Attr.NONCE, self.nonce.encode()),
        ]
        data = encode(Message(method, Class.REQUEST, tid, tuple(body)), self.key, fingerprint=True)
        (resp,) = responses(self.send(now, data))
        if error_code(resp) == 438:  # renew the nonce and try again, as a real client would
            self.nonce = str(attr(resp, Attr.NONCE))
            return self._peer_request(now, method, attrs, peers)
        return resp

    def send_indication(self, now: float, peer: Addr, payload: bytes) -> list[Output]:
        tid = self.rng.randbytes(12)
        attrs = (
            (Attr.XOR_PEER_ADDRESS, pack(Attr.XOR_PEER_ADDRESS, peer, tid)),
            (Attr.DATA, payload),
        )
        return self.send(now, encode(Message(Method.SEND, Class.INDICATION, tid, attrs)))


def allocated(
    server: TurnServer | None = None, *attrs: tuple[int, bytes], **kw: object
) -> tuple[Client, Message, list[Output]]:
    client = Client(server or make_server(), **kw)  # type: ignore[arg-type]
    resp, out = client.allocate(T0, *attrs)
    assert resp.cls == Class.SUCCESS, error_code(resp)
    return client, resp, out


def relays_of(resp: Message) -> list[Addr]:
    return [
        unpack(Attr.XOR_RELAYED_ADDRESS, raw, resp.transaction_id)
        for raw in resp.get_all(Attr.XOR_RELAYED_ADDRESS)
    ]


DUAL = (Attr.ADDITIONAL_ADDRESS_FAMILY, bytes((2, 0, 0, 0)))


# --- Binding and authentication ------------------------------------------------------


def test_binding_answers_with_xor_mapped_address_without_auth() -> None:
    server = make_server()
    for addr in (CLIENT, CLIENT6):
        client = Client(server, addr=addr)
        resp, out = client.request(T0, Method.BINDING, signed=False)
        assert resp.cls == Class.SUCCESS
        assert attr(resp, Attr.XOR_MAPPED_ADDRESS) == addr
        assert out[0] == ToClient("udp", addr, SERVER, out[0].data)  # type: ignore[union-attr]


def test_allocate_without_credentials_gets_401_with_realm_and_nonce() -> None:
    server = make_server()
    resp, _ = Client(server).request(
        T0, Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, bytes((17, 0, 0, 0)))], signed=False
    )
    assert resp.cls == Class.ERROR
    assert error_code(resp) == 401
    assert attr(resp, Attr.REALM) == REALM
    nonce = str(attr(resp, Attr.NONCE))
    assert nonce_valid(FLEET, nonce, T0, CLIENT)
    assert not resp.has(Attr.MESSAGE_INTEGRITY)
    assert server.counters.challenges == 1
    assert server.allocation("udp", CLIENT, SERVER) is None


def test_wrong_password_gets_401() -> None:
    server = make_server()
    resp, _ = Client(server, password="not the password").allocate(T0)
    assert error_code(resp) == 401
    assert resp.has(Attr.NONCE)
    assert server.counters.auth_failures == 1
    resp, _ = Client(server, username="mallory", password="x").allocate(T0)
    assert error_code(resp) == 401
    assert server.counters.auth_failures == 2


def test_stale_nonce_gets_438_with_a_fresh_one() -> None:
    server = make_server()
    client = Client(server)
    client.nonce = mint_nonce(FLEET[0], T0 - 700, CLIENT, 600)  # expired at T0 - 100
    resp, _ = client.allocate(T0)
    assert error_code(resp) == 438
    assert attr(resp, Attr.REALM) == REALM
    client.nonce = str(attr(resp, Attr.NONCE))
    resp, _ = client.allocate(T0)
    assert resp.cls == Class.SUCCESS
    assert server.counters.stale_nonces == 1


def test_nonce_is_bound_to_the_client_address_and_the_fleet_key() -> None:
    server = make_server()
    client = Client(server)
    client.nonce = mint_nonce(FLEET[0], T0, ("85.10.0.99", CLIENT[1]), 600)
    assert error_code(client.allocate(T0)[0]) == 438
    client.nonce = mint_nonce(FLEET[0], T0, (CLIENT[0], CLIENT[1] + 1), 600)  # another port
    assert error_code(client.allocate(T0)[0]) == 438
    client.nonce = mint_nonce(b"another fleet", T0, CLIENT, 600)
    assert error_code(client.allocate(T0)[0]) == 438
    for bad in ("", "zz" * 16, "f" * 32, "x"):
        assert not nonce_valid(FLEET, bad, T0, CLIENT)


def test_a_captured_allocate_replayed_from_another_port_is_refused() -> None:
    server = make_server()
    victim, _, _ = allocated(server)
    captured = victim.last  # the signed Allocate, as an on-path attacker saw it
    other = (CLIENT[0], CLIENT[1] + 7)  # the same IP (a shared NAT), another port
    (resp,) = responses(server.receive(T0 + 1, "udp", other, SERVER, captured))
    assert error_code(resp) == 438  # stale: its nonce names the victim's port
    assert server.allocation("udp", other, SERVER) is None
    assert server.counters.allocations == 1


def test_nonce_minted_at_one_site_is_verified_at_another() -> None:
    site_a = make_server(fleet=FLEET)
    site_b = make_server(fleet=(b"new fleet key", *FLEET))  # B rotated: still accepts A's
    client = Client(site_a)
    challenge, _ = client.request(
        T0, Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, bytes((17, 0, 0, 0)))], signed=False
    )
    client.nonce = str(attr(challenge, Attr.NONCE))
    client.server = site_b  # the route flips: the next packet lands at site B
    resp, _ = client.allocate(T0 + 30)
    assert resp.cls == Class.SUCCESS
    assert site_b.counters.stale_nonces == 0
    assert site_a.counters.allocations == 0
    assert site_b.counters.allocations == 1
    # and a nonce past its 600 s is stale at every site
    resp, _ = Client(site_b, addr=("85.10.0.2", 1), nonce=client.nonce).allocate(T0 + 601)
    assert error_code(resp) == 438


def test_nonce_lifetime_is_at_most_600_s() -> None:
    with pytest.raises(ValueError, match="nonce lifetime"):
        Credentials(REALM, FLEET, nonce_lifetime=601)
    with pytest.raises(ValueError, match="fleet key"):
        Credentials(REALM, ())
    nonce = mint_nonce(FLEET[0], T0, CLIENT, 600)
    assert nonce_valid(FLEET, nonce, T0 + 599, CLIENT)
    assert not nonce_valid(FLEET, nonce, T0 + 600, CLIENT)
    # a nonce claiming a far expiry is refused even with a good MAC
    far = mint_nonce(FLEET[0], T0, CLIENT, 5000)
    assert not nonce_valid(FLEET, far, T0, CLIENT)


@pytest.mark.parametrize("secret", SECRETS, ids=["current secret", "rotated secret"])
def test_rest_credentials(secret: bytes) -> None:
    server = make_server()
    username = rest_username(int(T0) + 3600, "carol")
    client = Client(server, username=username, password=rest_password(secret, username))
    resp, _ = client.allocate(T0)
    assert resp.cls == Class.SUCCESS, error_code(resp)
    alloc = server.allocation("udp", CLIENT, SERVER)
    assert alloc is not None
    assert alloc.user == "carol"  # quotas count the REST user, not the timestamped name


def test_rest_credential_expiring_far_in_the_future_gets_401() -> None:
    # a leaked credential must not last for years: at most 30 days (rest_max_ttl) ahead
    server = make_server()
    for ahead, ok in ((30 * 86400, True), (30 * 86400 + 61, False), (10 * 365 * 86400, False)):
        username = rest_username(int(T0) + ahead, "carol")
        client = Client(server, username=username, password=rest_password(SECRETS[0], username))
        resp, _ = client.allocate(T0)
        assert (resp.cls == Class.SUCCESS) is ok, (ahead, error_code(resp))
    assert server.counters.auth_failures == 2


def test_expired_rest_credential_gets_401() -> None:
    server = make_server()
    username = rest_username(int(T0) - 1, "carol")
    resp, _ = Client(
        server, username=username, password=rest_password(SECRETS[0], username)
    ).allocate(T0)
    assert error_code(resp) == 401
    unknown = rest_username(int(T0) + 60, "carol")
    resp, _ = Client(
        server, username=unknown, password=rest_password(b"not ours", unknown)
    ).allocate(T0)
    assert error_code(resp) == 401
    assert server.counters.auth_failures == 2


def test_sha256_integrity_and_password_algorithm_accepted() -> None:
    server = make_server()
    client = Client(server, integrity="sha256", algorithm=PasswordAlgorithm.SHA256)
    resp, out = client.allocate(T0)
    assert resp.cls == Class.SUCCESS, error_code(resp)
    data = next(o.data for o in out if isinstance(o, ToClient))
    assert resp.has(Attr.MESSAGE_INTEGRITY_SHA256)
    assert not resp.has(Attr.MESSAGE_INTEGRITY)
    assert check_integrity(data, resp, client.key)
    client2 = Client(server, addr=("85.10.0.3", 1), integrity="sha256")
    assert client2.allocate(T0)[0].cls == Class.SUCCESS


def test_userhash_identifies_a_static_user() -> None:
    server = make_server()
    client = Client(server)
    client.request(T0, Method.BINDING, signed=False)
    challenge, _ = client.request(T0, Method.ALLOCATE, [], signed=False)
    nonce = str(attr(challenge, Attr.NONCE))
    attrs = (
        (Attr.REQUESTED_TRANSPORT, bytes((17, 0, 0, 0))),
        (Attr.USERHASH, userhash("alice", REALM)),
        (Attr.REALM, REALM.encode()),
        (Attr.NONCE, nonce.encode()),
    )
    data = encode(Message(Method.ALLOCATE, Class.REQUEST, bytes(12), attrs), client.key)
    (resp,) = responses(client.send(T0, data))
    assert resp.cls == Class.SUCCESS


def test_signed_request_missing_realm_gets_400() -> None:
    server = make_server()
    nonce = mint_nonce(FLEET[0], T0, CLIENT, 600)
    attrs = ((Attr.USERNAME, b"alice"), (Attr.NONCE, nonce.encode()))
    data = encode(Message(Method.ALLOCATE, Class.REQUEST, bytes(12), attrs), b"k")
    (resp,) = responses(server.receive(T0, "udp", CLIENT, SERVER, data))
    assert error_code(resp) == 400


# --- Allocate, Refresh, lifetimes ------------------------------------------------------


def test_allocate_success() -> None:
    client, resp, out = allocated()
    (relay,) = relays_of(resp)
    assert relay[0] == RELAY4
    assert 50000 <= relay[1] <= 50999
    assert attr(resp, Attr.XOR_MAPPED_ADDRESS) == CLIENT
    assert attr(resp, Attr.LIFETIME) == 600
    assert attr(resp, Attr.SOFTWARE) == "anyedge"
    assert out[0] == OpenRelay(1, relay, 4, False)
    data = out[1].data  # type: ignore[union-attr]
    assert check_integrity(data, resp, client.key)
    assert client.server.counters.allocations == 1
    assert client.server.next_deadline() == T0 + 40  # the cached response goes first


@pytest.mark.parametrize(
    ("asked", "granted"), [(7200, 3600), (3600, 3600), (1200, 1200), (60, 600), (0, 600)]
)
def test_allocate_lifetime_is_capped(asked: int, granted: int) -> None:
    _, resp, _ = allocated(None, (Attr.LIFETIME, pack(Attr.LIFETIME, asked)))
    assert attr(resp, Attr.LIFETIME) == granted


def test_refresh_extends_and_zero_deletes() -> None:
    client, resp, _ = allocated()
    (relay,) = relays_of(resp)
    server = client.server
    r, _ = client.ok(T0 + 500, Method.REFRESH, [(Attr.LIFETIME, pack(Attr.LIFETIME, 7200))])
    assert attr(r, Attr.LIFETIME) == 3600
    alloc = server.allocation("udp", CLIENT, SERVER)
    assert alloc is not None
    assert alloc.expires == T0 + 500 + 3600
    r, out = client.ok(T0 + 600, Method.REFRESH, [(Attr.LIFETIME, pack(Attr.LIFETIME, 0))])
    assert attr(r, Attr.LIFETIME) == 0
    assert out[-1] == CloseRelay(1, relay)
    assert server.allocation("udp", CLIENT, SERVER) is None
    assert server.counters.allocations == 0
    # the port is free again, and Refresh without an allocation is a mismatch
    r, _ = client.request(T0 + 601, Method.REFRESH)
    assert error_code(r) == 437
    assert client.server.tick(T0 + 10_000) == []


def test_allocation_expiry_closes_the_relay() -> None:
    client, resp, _ = allocated()
    (relay,) = relays_of(resp)
    server = client.server
    assert server.tick(T0 + 599) == []
    assert server.next_deadline() == T0 + 600
    assert server.tick(T0 + 600) == [CloseRelay(1, relay)]
    assert server.allocation("udp", CLIENT, SERVER) is None
    assert server.counters.allocations == 0
    assert server.counters.allocations_expired == 1
    assert server.next_deadline() is None
    assert server.receive_from_peer(T0 + 601, relay, PEER, b"late") == []


def test_retransmission_is_answered_identically() -> None:
    client, _, out = allocated()
    first = out[-1]
    again = client.send(T0 + 1, client.last)
    assert again == [first]  # same bytes, and no second OpenRelay
    assert client.server.counters.retransmissions == 1
    assert client.server.counters.allocations == 1
    # after 40 s the cache has forgotten, and the same request is a 437
    client.server.tick(T0 + 41)
    (resp,) = responses(client.send(T0 + 41, client.last))
    assert error_code(resp) == 437


def test_second_allocate_on_the_same_five_tuple_is_437() -> None:
    client, _, _ = allocated()
    resp, out = client.allocate(T0 + 1)
    assert error_code(resp) == 437
    assert not any(isinstance(o, OpenRelay) for o in out)
    # another 5-tuple of the same user is fine
    other = Client(client.server, transport="tcp")
    assert other.allocate(T0 + 1)[0].cls == Class.SUCCESS


@pytest.mark.parametrize(
    ("attrs", "code"),
    [
        ([(Attr.REQUESTED_TRANSPORT, bytes((6, 0, 0, 0)))], 400),  # TCP over UDP (RFC 6062)
        ([(Attr.REQUESTED_TRANSPORT, bytes((132, 0, 0, 0)))], 442),  # SCTP
        ([(Attr.REQUESTED_TRANSPORT, bytes((17, 0)))], 400),
        ([], 400),
        (
            [
                (Attr.REQUESTED_TRANSPORT, bytes((17, 0, 0, 0))),
                (Attr.REQUESTED_ADDRESS_FAMILY, bytes((3, 0, 0, 0))),
            ],
            440,
        ),
        (
            [
                (Attr.REQUESTED_TRANSPORT, bytes((17, 0, 0, 0))),
                (Attr.REQUESTED_ADDRESS_FAMILY, bytes((2, 0, 0, 0))),
                DUAL,
            ],
            400,
        ),
        (
            [
                (Attr.REQUESTED_TRANSPORT, bytes((17, 0, 0, 0))),
                (Attr.ADDITIONAL_ADDRESS_FAMILY, bytes((1, 0, 0, 0))),
            ],
            400,
        ),
        ([(Attr.REQUESTED_TRANSPORT, bytes((17, 0, 0, 0))), (Attr.RESERVATION_TOKEN, b"tok")], 400),
        ([(Attr.REQUESTED_TRANSPORT, bytes((17, 0, 0, 0))), (Attr.EVEN_PORT, b"\x00"), DUAL], 400),
        (
            [(Attr.REQUESTED_TRANSPORT, bytes((17, 0, 0, 0))), (Attr.RESERVATION_TOKEN, bytes(8))],
            508,
        ),
        (
            [
                (Attr.REQUESTED_TRANSPORT, bytes((17, 0, 0, 0))),
                (Attr.RESERVATION_TOKEN, bytes(8)),
                (Attr.EVEN_PORT, b"\x00"),
            ],
            400,
        ),
        ([(Attr.REQUESTED_TRANSPORT, bytes((17, 0, 0, 0))), (0x0030, b"what")], 420),
        ([(Attr.REQUESTED_TRANSPORT, bytes((17, 0, 0, 0))), (Attr.LIFETIME, b"\x00")], 400),
    ],
    ids=[
        "tcp transport over udp",
        "sctp transport",
        "short transport",
        "no transport",
        "family 3",
        "family and additional",
        "additional ipv4",
        "short reservation token",
        "even port dual",
        "reservation token",
        "token and even port",
        "unknown attribute",
        "short lifetime",
    ],
)
def test_allocate_errors(attrs: list[tuple[int, bytes]], code: int) -> None:
    server = make_server()
    resp, out = Client(server).request(T0, Method.ALLOCATE, attrs)
    assert error_code(resp) == code
    assert check_integrity(out[-1].data, resp, Client(server).key)  # type: ignore[union-attr]
    assert server.counters.allocations == 0
    if code == 420:
        assert attr(resp, Attr.UNKNOWN_ATTRIBUTES) == (0x0030,)


def test_even_port_and_dont_fragment() -> None:
    _, resp, out = allocated(None, (Attr.EVEN_PORT, b"\x00"), (Attr.DONT_FRAGMENT, b""))
    (relay,) = relays_of(resp)
    assert relay[1] % 2 == 0
    assert out[0] == OpenRelay(1, relay, 4, True)
    server = make_server(TurnConfig(dont_fragment=False))
    r, _ = Client(server).allocate(T0, (Attr.DONT_FRAGMENT, b""))
    assert error_code(r) == 420
    assert attr(r, Attr.UNKNOWN_ATTRIBUTES) == (Attr.DONT_FRAGMENT,)


def test_ipv6_allocation() -> None:
    client, resp, out = allocated(
        None, (Attr.REQUESTED_ADDRESS_FAMILY, bytes((2, 0, 0, 0))), addr=CLIENT6
    )
    (relay,) = relays_of(resp)
    assert relay[0] == RELAY6
    assert attr(resp, Attr.XOR_MAPPED_ADDRESS) == CLIENT6
    assert out[0] == OpenRelay(1, relay, 6, False)
    assert client.permit(T0, PEER6).cls == Class.SUCCESS
    assert error_code(client.permit(T0, PEER)) == 443  # no IPv4 relay to reach it


def test_dual_stack_allocation_gives_two_relayed_addresses() -> None:
    client, resp, out = allocated(None, DUAL)
    r4, r6 = relays_of(resp)
    assert (r4[0], r6[0]) == (RELAY4, RELAY6)
    assert out[:2] == [OpenRelay(1, r4, 4, False), OpenRelay(1, r6, 6, False)]
    assert not resp.has(Attr.ADDRESS_ERROR_CODE)
    assert client.permit(T0, PEER, PEER6).cls == Class.SUCCESS
    assert client.server.receive_from_peer(T0, r4, PEER, b"4") != []
    assert client.server.receive_from_peer(T0, r6, PEER6, b"6") != []
    # refreshing IPv6 away with lifetime 0 keeps the IPv4 half
    r, out = client.ok(
        T0 + 1,
        Method.REFRESH,
        [(Attr.REQUESTED_ADDRESS_FAMILY, bytes((2, 0, 0, 0))), (Attr.LIFETIME, bytes(4))],
    )
    assert out[-1] == CloseRelay(1, r6)
    assert client.server.receive_from_peer(T0 + 1, r6, PEER6, b"6") == []
    assert client.server.receive_from_peer(T0 + 1, r4, PEER, b"4") != []
    assert client.server.counters.permissions == 1
    r, _ = client.request(
        T0 + 2, Method.REFRESH, [(Attr.REQUESTED_ADDRESS_FAMILY, bytes((2, 0, 0, 0)))]
    )
    assert error_code(r) == 443


def test_dual_stack_without_ipv6_gives_ipv4_and_an_address_error() -> None:
    creds = Credentials(REALM, FLEET, USERS)
    server = TurnServer(TurnConfig(), creds, PortRange(RELAY4, None, 50000, 50009), T0)
    _, resp, _ = allocated(server, DUAL)
    assert len(relays_of(resp)) == 1
    assert attr(resp, Attr.ADDRESS_ERROR_CODE) == (2, 440, "Address Family not Supported")
    r, _ = Client(server, addr=CLIENT6).allocate(
        T0, (Attr.REQUESTED_ADDRESS_FAMILY, bytes((2, 0, 0, 0)))
    )
    assert error_code(r) == 440


# --- permissions, channels, relaying -------------------------------------------------


def test_create_permission_then_peer_datagram_becomes_a_data_indication() -> None:
    client, resp, _ = allocated()
    (relay,) = relays_of(resp)
    server = client.server
    assert server.receive_from_peer(T0, relay, PEER, b"too early") == []
    assert server.counters.dropped_no_permission == 1
    assert client.permit(T0, PEER).cls == Class.SUCCESS
    assert server.counters.permissions == 1
    for payload in (b"hello", b"", b"x" * 1201):
        (out,) = server.receive_from_peer(T0 + 1, relay, PEER, payload)
        assert isinstance(out, ToClient)
        assert (out.transport, out.client_addr, out.server_addr) == ("udp", CLIENT, SERVER)
        ind = decode(out.data)
        assert (ind.method, ind.cls) == (Method.DATA, Class.INDICATION)
        assert attr(ind, Attr.XOR_PEER_ADDRESS) == PEER
        assert ind.get(Attr.DATA) == payload
    # the permission is per IP: another port of the same host may send too
    assert server.receive_from_peer(T0 + 1, relay, (PEER[0], 1), b"p") != []
    # another host may not
    assert server.receive_from_peer(T0 + 1, relay, PEER2, b"no") == []
    assert server.counters.packets_to_client == 4


def test_data_indications_to_ipv6_peers_have_fresh_transaction_ids() -> None:
    client, resp, _ = allocated(None, DUAL)
    _, r6 = relays_of(resp)
    client.permit(T0, PEER6)
    outs = [client.server.receive_from_peer(T0, r6, PEER6, b"abc")[0] for _ in range(3)]
    msgs = [decode(o.data) for o in outs]  # type: ignore[union-attr]
    assert len({m.transaction_id for m in msgs}) == 3
    assert all(attr(m, Attr.XOR_PEER_ADDRESS) == PEER6 for m in msgs)


def test_send_indication_reaches_a_permitted_peer_only() -> None:
    client, resp, _ = allocated()
    (relay,) = relays_of(resp)
    assert client.send_indication(T0, PEER, b"no permission yet") == []
    client.permit(T0, PEER)
    assert client.send_indication(T0, PEER, b"hi") == [ToPeer(relay, PEER, b"hi")]
    assert client.server.counters.packets_to_peer == 1
    assert client.server.counters.bytes_to_peer == 2
    # a Send without DATA is dropped as malformed
    tid = bytes(12)
    bad = Message(
        Method.SEND,
        Class.INDICATION,
        tid,
        ((Attr.XOR_PEER_ADDRESS, pack(Attr.XOR_PEER_ADDRESS, PEER, tid)),),
    )
    assert client.send(T0, encode(bad)) == []


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_channel_bind_then_channel_data_both_ways(transport: str) -> None:
    client, resp, _ = allocated(None, transport=transport)
    (relay,) = relays_of(resp)
    server = client.server
    assert client.bind(T0, 0x4001, PEER).cls == Class.SUCCESS
    assert server.counters.channels == 1
    assert server.counters.permissions == 1  # ChannelBind installs the permission
    frame = encode_channel_data(0x4001, b"to the peer", pad=transport == "tcp")
    assert client.send(T0 + 1, frame) == [ToPeer(relay, PEER, b"to the peer")]
    (out,) = server.receive_from_peer(T0 + 1, relay, PEER, b"to the client")
    assert isinstance(out, ToClient)
    assert decode_channel_data(out.data) == (0x4001, b"to the client")
    assert len(out.data) == (20 if transport == "tcp" else 17)  # padded over TCP only
    # an unbound channel, a short frame, another 5-tuple: dropped
    assert client.send(T0 + 1, encode_channel_data(0x4002, b"x")) == []
    assert client.send(T0 + 1, encode_channel_data(0x4001, b"xyz")[:-1]) == []
    assert server.receive(T0 + 1, transport, ("85.10.0.77", 1), SERVER, frame) == []
    assert server.counters.packets_to_peer == 1


def test_channel_bind_rules() -> None:
    client, _, _ = allocated()
    assert client.bind(T0, 0x4001, PEER).cls == Class.SUCCESS
    assert client.bind(T0 + 10, 0x4001, PEER).cls == Class.SUCCESS  # refresh
    assert error_code(client.bind(T0, 0x4001, PEER2)) == 400  # number taken by another peer
    assert error_code(client.bind(T0, 0x4002, PEER)) == 400  # peer has another number
    assert error_code(client.bind(T0, 0x3FFF, PEER2)) == 400
    assert error_code(client.bind(T0, 0x8000, PEER2)) == 400
    assert client.bind(T0, 0x4FFF, PEER2).cls == Class.SUCCESS
    assert client.server.counters.channels == 2


def test_rfc5766_channels_are_accepted_unless_configured_away() -> None:
    # coturn's turnutils_uclient binds channels up to 0x7FFF, as RFC 5766 allowed
    client, _, _ = allocated()
    assert client.bind(T0, 0x7FFF, PEER).cls == Class.SUCCESS
    assert client.send(T0 + 1, encode_channel_data(0x7FFF, b"legacy")) != []
    strict, _, _ = allocated(make_server(config=TurnConfig(max_channel=0x4FFF)))
    assert error_code(strict.bind(T0, 0x5000, PEER)) == 400


def test_permission_and_channel_expire_on_tick() -> None:
    client, resp, _ = allocated(None, (Attr.LIFETIME, pack(Attr.LIFETIME, 3600)))
    (relay,) = relays_of(resp)
    server = client.server
    client.permit(T0, PEER2)
    client.bind(T0, 0x4001, PEER)
    assert server.next_deadline() == T0 + 40
    server.tick(T0 + 40)
    assert server.next_deadline() == T0 + 300
    assert server.tick(T0 + 300) == []
    assert server.counters.permissions == 0
    assert server.counters.channels == 1
    assert server.receive_from_peer(T0 + 301, relay, PEER2, b"x") == []
    # the channel is bound, but its peer's permission lapsed: nothing passes
    assert client.send(T0 + 301, encode_channel_data(0x4001, b"x")) == []
    client.permit(T0 + 301, PEER)
    assert client.send(T0 + 302, encode_channel_data(0x4001, b"x")) != []
    server.tick(T0 + 600)
    assert server.counters.channels == 0
    assert client.send(T0 + 600, encode_channel_data(0x4001, b"x")) == []
    (out,) = server.receive_from_peer(T0 + 600, relay, PEER, b"via data indication")
    assert decode(out.data).method == Method.DATA  # type: ignore[union-attr]
    # quarantine: 0x4001 and PEER may not be bound to anything else for 300 s more
    assert error_code(client.bind(T0 + 601, 0x4001, PEER2)) == 400
    assert client.bind(T0 + 602, 0x4001, PEER).cls == Class.SUCCESS  # the same pair may
    assert server.counters.channels == 1
    client.bind(T0 + 602, 0x4001, PEER)
    server.tick(T0 + 602 + 600)
    server.tick(T0 + 602 + 900)
    assert client.bind(T0 + 1503, 0x4001, PEER2).cls == Class.SUCCESS


def test_connection_lost_ends_a_tcp_allocation() -> None:
    client, resp, _ = allocated(None, transport="tcp")
    (relay,) = relays_of(resp)
    out = client.server.connection_lost(T0 + 5, "tcp", CLIENT, SERVER)
    assert out == [CloseRelay(1, relay)]
    assert client.server.connection_lost(T0 + 5, "tcp", CLIENT, SERVER) == []


def test_requests_of_another_user_on_the_allocation_get_441() -> None:
    client, _, _ = allocated()
    intruder = Client(client.server, username="bob", password=USERS["bob"])
    resp, _ = intruder.request(T0, Method.REFRESH)
    assert error_code(resp) == 441


# --- refused peers: every special-purpose range, in every disguise, on every path -----

V4_SPECIAL = [
    "0.1.2.3",
    "10.1.2.3",
    "100.64.1.2",
    "100.127.255.254",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",
    "172.16.0.1",
    "172.31.255.254",
    "192.0.0.8",
    "192.0.2.1",
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.1",
    "198.19.255.254",
    "198.51.100.1",
    "203.0.113.1",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
]


def _v4_int(host: str) -> int:
    return int(ipaddress.IPv4Address(host))


def _forms(host: str) -> list[str]:
    """The address and its IPv6 disguises: mapped, compatible, NAT64, 6to4, Teredo."""
    v = _v4_int(host)
    return [
        host,
        str(ipaddress.IPv6Address((0xFFFF << 32) | v)),  # ::ffff:a.b.c.d
        str(ipaddress.IPv6Address(v)),  # ::a.b.c.d
        str(ipaddress.IPv6Address((0x64FF9B << 96) | v)),  # 64:ff9b::a.b.c.d
        str(ipaddress.IPv6Address((0x2002 << 112) | (v << 80) | 1)),  # 2002:aabb:ccdd::1
        str(ipaddress.IPv6Address((0x20010000 << 96) | (0x51020304 << 64) | (~v & 0xFFFFFFFF))),
    ]


V6_SPECIAL = [
    "::",
    "::1",
    "::ffff:81.2.69.142",  # IPv4-mapped, even of a public address
    "::81.2.69.142",  # IPv4-compatible
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "febf::1",
    "fec0::1",
    "ff02::1",
    "ff0e::1",
    "100::1",
    "5f00::1",
    "64:ff9b:1::1",
    "2001:db8::1",
    "2001:2::1",
    "2001:10::1",
    "2001:20::1",
    "3fff::1",
    "4000::1",
    "2002:c0a8:101::1",
]
REFUSED = sorted({f for h in V4_SPECIAL for f in _forms(h)} | set(V6_SPECIAL))
ALLOWED = [
    "81.2.69.142",
    "8.8.8.8",
    "2a00:1450:4001:81b::200e",
    "64:ff9b::5102:458e",  # NAT64 of a public address
    "2002:5102:458e::1",  # 6to4 of a public address
    "2001:0:5102:458e::aefd:bb71",  # Teredo, server and client public
]


def test_the_refused_table_is_big() -> None:
    assert len(REFUSED) >= 120


@pytest.mark.parametrize("host", REFUSED)
def test_policy_refuses(host: str) -> None:
    reason = PeerPolicy().refusal(host)
    assert reason is not None, host


@pytest.mark.parametrize("host", ALLOWED)
def test_policy_allows_public_peers(host: str) -> None:
    assert PeerPolicy().refusal(host) is None


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("::ffff:127.0.0.1", "ipv4-mapped loopback"),
        ("::ffff:7f00:1", "ipv4-mapped loopback"),
        ("::127.0.0.1", "ipv4-compatible loopback"),
        ("64:ff9b::a9fe:a9fe", "nat64 link-local"),
        ("2002:0a00:0001::1", "6to4 private"),
        ("fe80::1", "not global unicast"),
        ("2001:db8::1", "documentation"),
        ("not-an-ip", "not an address"),
    ],
)
def test_policy_names_the_reason(host: str, reason: str) -> None:
    assert PeerPolicy().refusal(host) == reason


@pytest.mark.parametrize("path", ["CreatePermission", "ChannelBind", "Send"])
@pytest.mark.parametrize("host", REFUSED)
def test_refused_peers_get_403_on_every_path(path: str, host: str) -> None:
    client, _, _ = allocated(None, DUAL)
    server = client.server
    peer = (host, 9)
    if path == "CreatePermission":
        assert error_code(client.permit(T0, peer)) == 403
    elif path == "ChannelBind":
        assert error_code(client.bind(T0, CHANNEL_MIN, peer)) == 403
    else:
        assert client.send_indication(T0, peer, b"attack") == []
    assert server.counters.refused_peer == 1
    assert server.counters.permissions == 0
    assert server.counters.packets_to_peer == 0


def test_refused_peer_in_a_list_refuses_the_whole_create_permission() -> None:
    client, _, _ = allocated()
    assert error_code(client.permit(T0, PEER, ("10.0.0.1", 1))) == 403
    assert client.server.counters.permissions == 0


def test_allow_list_lets_loopback_and_cgnat_through() -> None:
    server = make_server(TurnConfig(allow_peers=("127.0.0.0/8", "100.64.0.0/10")))
    client, resp, _ = allocated(server)
    (relay,) = relays_of(resp)
    assert client.permit(T0, ("127.0.0.1", 5000), ("100.64.0.7", 1)).cls == Class.SUCCESS
    assert client.send_indication(T0, ("127.0.0.1", 5000), b"lab") == [
        ToPeer(relay, ("127.0.0.1", 5000), b"lab")
    ]
    # the allow list matches the address as written: the mapped form is still refused
    assert error_code(client.permit(T0, ("::ffff:127.0.0.1", 5000))) == 403
    assert error_code(client.permit(T0, ("10.0.0.1", 1))) == 403
    # and the operator's own ranges stay refused whatever the allow list says
    strict = make_server(TurnConfig(allow_peers=("0.0.0.0/0",), deny_peers=("81.2.69.0/24",)))
    c2, _, _ = allocated(strict)
    assert error_code(c2.permit(T0, PEER)) == 403
    assert c2.permit(T0, ("10.0.0.1", 1)).cls == Class.SUCCESS


# --- quotas and limits ----------------------------------------------------------------


def test_allocation_quota_per_user_486() -> None:
    server = make_server(TurnConfig(user_quota=2))
    for port in (1, 2):
        assert Client(server, addr=("85.10.0.1", port)).allocate(T0)[0].cls == Class.SUCCESS
    resp, _ = Client(server, addr=("85.10.0.1", 3)).allocate(T0)
    assert error_code(resp) == 486
    assert server.counters.refused_user_quota == 1
    # another user is not affected, and a freed allocation frees quota
    assert (
        Client(server, "bob", USERS["bob"], addr=("85.10.0.1", 4)).allocate(T0)[0].cls
        == Class.SUCCESS
    )
    c1 = Client(server, addr=("85.10.0.1", 1))
    c1.ok(T0 + 1, Method.REFRESH, [(Attr.LIFETIME, bytes(4))])
    assert Client(server, addr=("85.10.0.1", 3)).allocate(T0 + 2)[0].cls == Class.SUCCESS


def test_global_allocation_cap_508() -> None:
    server = make_server(TurnConfig(max_allocations=2))
    assert Client(server, addr=("85.10.0.1", 1)).allocate(T0)[0].cls == Class.SUCCESS
    assert (
        Client(server, "bob", USERS["bob"], addr=("85.10.0.1", 2)).allocate(T0)[0].cls
        == Class.SUCCESS
    )
    resp, _ = Client(server, addr=("85.10.0.1", 3)).allocate(T0)
    assert error_code(resp) == 508
    assert server.counters.refused_capacity == 1


def test_port_exhaustion_is_508_and_ports_come_back() -> None:
    creds = Credentials(REALM, FLEET, USERS)
    server = TurnServer(TurnConfig(), creds, PortRange(RELAY4, None, 50000, 50001), T0)
    assert Client(server, addr=("85.10.0.1", 1)).allocate(T0)[0].cls == Class.SUCCESS
    assert Client(server, addr=("85.10.0.1", 2)).allocate(T0)[0].cls == Class.SUCCESS
    assert error_code(Client(server, addr=("85.10.0.1", 3)).allocate(T0)[0]) == 508
    server.tick(T0 + 600)
    assert Client(server, addr=("85.10.0.1", 3)).allocate(T0 + 600)[0].cls == Class.SUCCESS


def test_bandwidth_quota_drops_excess() -> None:
    server = make_server(TurnConfig(user_bandwidth=10_000, user_burst=10_000))
    client, resp, _ = allocated(server)
    (relay,) = relays_of(resp)
    client.bind(T0, 0x4001, PEER)
    frame = encode_channel_data(0x4001, bytes(1000))
    sent = sum(len(client.send(T0 + 1, frame)) for _ in range(20))
    assert sent == 10  # the 10 kB burst, then nothing
    assert server.counters.dropped_bandwidth == 10
    assert server.counters.dropped_bandwidth_bytes == 10_000
    # the other direction draws on the same bucket
    assert server.receive_from_peer(T0 + 1, relay, PEER, bytes(1000)) == []
    # half a second later 5 kB more may pass, either way
    got = [server.receive_from_peer(T0 + 1.5, relay, PEER, bytes(1000)) for _ in range(6)]
    assert sum(map(len, got)) == 5
    assert server.counters.bytes_to_peer == 10_000
    assert server.counters.bytes_to_client == 5_000


def test_unauthenticated_flood_from_one_ip_meets_silence() -> None:
    server = make_server(TurnConfig(unauth_rate=2, unauth_burst=5))
    flooder = Client(server, addr=("85.10.0.66", 1234))
    answered = 0
    for i in range(50):
        _, data = flooder.build(Method.ALLOCATE, [], signed=False)
        answered += len(server.receive(T0 + i * 0.001, "udp", flooder.addr, SERVER, data))
    assert answered == 5
    assert server.counters.dropped_rate_limited == 45
    # Binding requests and bad credentials count against the same bucket
    _, data = flooder.build(Method.BINDING, [], signed=False)
    assert server.receive(T0 + 0.05, "udp", flooder.addr, SERVER, data) == []
    # another IP is unaffected, and the bucket refills with time
    assert Client(server, addr=("85.10.0.67", 1)).allocate(T0 + 0.5)[0].cls == Class.SUCCESS
    assert server.receive(T0 + 2, "udp", flooder.addr, SERVER, data) != []
    # a legitimate client's authenticated requests do not spend tokens
    client, _, _ = allocated(server, addr=("85.10.0.68", 1))
    for i in range(20):
        assert client.permit(T0 + 3 + i * 0.001, PEER).cls == Class.SUCCESS


def test_rate_limiter_forgets_idle_ips_and_caps_its_table() -> None:
    server = make_server(TurnConfig(max_rate_keys=3))
    for i in range(3):
        Client(server, addr=(f"85.10.1.{i}", 1)).request(T0, Method.BINDING, signed=False)
    _, data = Client(server).build(Method.BINDING, [], signed=False)
    # the table is full: the oldest bucket makes room, the newcomer is answered
    assert server.receive(T0, "udp", ("85.10.1.9", 1), SERVER, data) != []
    assert len(server._limiter) == 3
    assert server.counters.rate_limiter_evictions == 1
    server.tick(T0 + 60)
    assert len(server._limiter) == 0


def test_a_spoofed_flood_of_100000_sources_locks_nobody_out() -> None:
    server = make_server()  # the default table: 100,000 client IPs
    known, _, _ = allocated(server, addr=("85.10.0.70", 4000))
    flood = Client(server)
    _, data = flood.build(Method.BINDING, [], signed=False)
    for i in range(100_000):  # one window, every source new
        src = (f"{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.1", 9)
        server.receive(T0 + 1, "udp", src, SERVER, data)
    assert len(server._limiter) <= TurnConfig().max_rate_keys
    # a new client is challenged and allocates
    resp, _ = Client(server, addr=("85.10.0.71", 1)).allocate(T0 + 1)
    assert resp.cls == Class.SUCCESS
    # a known client whose nonce went stale gets its 438 re-challenge and refreshes
    known.nonce = mint_nonce(FLEET[0], T0 - 700, known.addr, 600)
    resp, _ = known.request(T0 + 1, Method.REFRESH, [(Attr.LIFETIME, pack(Attr.LIFETIME, 600))])
    assert error_code(resp) == 438
    known.ok(T0 + 1, Method.REFRESH, [(Attr.LIFETIME, pack(Attr.LIFETIME, 600))])
    assert server.counters.dropped_rate_limited == 0


def test_authenticated_requests_never_spend_unauthenticated_tokens() -> None:
    server = make_server(TurnConfig(unauth_rate=1, unauth_burst=3))
    client, _, _ = allocated(server, addr=("85.10.0.72", 1))  # challenge: one token
    for i in range(50):
        assert client.permit(T0 + i * 0.001, PEER).cls == Class.SUCCESS
    # two tokens are left for the unauthenticated answers of this IP
    _, data = client.build(Method.BINDING, [], signed=False)
    answered = [server.receive(T0 + 0.1, "udp", client.addr, SERVER, data) for _ in range(3)]
    assert [bool(a) for a in answered] == [True, True, False]


# --- relay ports ------------------------------------------------------------------------


def test_port_slices_partition_the_range() -> None:
    first, last, count = 49152, 65535, 7
    slices = [port_slice(first, last, i, count) for i in range(count)]
    assert slices[0][0] == first
    assert slices[-1][1] == last
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(slices))
    for i, (lo, hi) in enumerate(slices):
        assert slice_owner(lo, first, last, count) == i
        assert slice_owner(hi, first, last, count) == i
    assert slice_owner(first - 1, first, last, count) is None
    with pytest.raises(ValueError, match="slice"):
        port_slice(first, first + 2, 0, 4)


@given(st.integers(1, 60000), st.integers(0, 5000), st.integers(1, 50), st.data())
def test_slice_owner_inverts_port_slice(
    first: int, span: int, count: int, data: st.DataObject
) -> None:
    last = min(65535, first + span)
    if last - first + 1 < count:
        return
    index = data.draw(st.integers(0, count - 1))
    lo, hi = port_slice(first, last, index, count)
    port = data.draw(st.integers(lo, hi))
    assert slice_owner(port, first, last, count) == index


def test_site_slices_hand_out_disjoint_ports() -> None:
    sites = [
        PortRange.site_slice(i, 3, RELAY4, RELAY6, 50000, 50029, random.Random(i)) for i in range(3)
    ]
    taken: list[set[int]] = []
    for i, ports in enumerate(sites):
        got = {ports.take(4)[1] for _ in range(10)}  # type: ignore[index]
        assert ports.take(4) is None
        assert {slice_owner(p, 50000, 50029, 3) for p in got} == {i}
        taken.append(got)
    assert len(set().union(*taken)) == 30
    ports = sites[0]
    ports.give_back((RELAY4, 50003))
    assert ports.take(4) == (RELAY4, 50003)
    with pytest.raises(ValueError, match="handed out"):
        ports.give_back(("192.0.2.99", 50000))
    ports.give_back((RELAY4, 50004))
    with pytest.raises(ValueError, match="already free"):
        ports.give_back((RELAY4, 50004))


def test_even_ports() -> None:
    ports = PortRange(RELAY4, None, 50001, 50010, random.Random(5))
    evens = [ports.take(4, even=True) for _ in range(5)]
    assert sorted(p[1] for p in evens if p) == [50002, 50004, 50006, 50008, 50010]
    assert ports.take(4, even=True) is None
    assert ports.free(4) == 5
    assert ports.take(6) is None
    assert ports.families() == frozenset({4})


# --- the whole server under garbage: 12,000 inputs ------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**64 - 1))
def test_fuzz_server_never_raises(seed: int) -> None:
    rng = random.Random(seed)
    server = make_server(TurnConfig(unauth_burst=1000))
    client, resp, _ = allocated(server)
    (relay,) = relays_of(resp)
    client.bind(T0, 0x4001, PEER)
    valid = [
        client.last,
        encode_channel_data(0x4001, b"abc"),
        encode_channel_data(0x4001, b"abcdefg", pad=True),
    ]
    for i in range(30):
        if rng.random() < 0.2:
            data = rng.randbytes(rng.randrange(0, 80))
        else:
            buf = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 4)):
                if buf:
                    buf[rng.randrange(len(buf))] = rng.randrange(256)
            if rng.random() < 0.3:
                del buf[rng.randrange(len(buf) + 1) :]
            data = bytes(buf)
        now = T0 + i
        outs = server.receive(now, "udp", CLIENT, SERVER, data)
        outs += server.receive_from_peer(now, relay, PEER, data)
        outs += server.tick(now)
        for o in outs:
            assert isinstance(o, ToClient | ToPeer | OpenRelay | CloseRelay)


# ------------------------------------------------------------- hostile input (a review)


def test_a_non_ascii_nonce_is_stale_not_a_crash() -> None:
    server = make_server()
    client = Client(server)
    client.nonce = f"{int(T0) + 300:08x}" + "é" * 24  # 32 characters, not ASCII
    resp, _ = client.request(
        T0, Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, bytes((17, 0, 0, 0)))]
    )
    assert error_code(resp) == 438


@pytest.mark.parametrize("stamp", ["²" * 10, "9" * 5000, "1" * 13])
def test_odd_rest_usernames_are_refused_not_a_crash(stamp: str) -> None:
    server = make_server()
    client = Client(server, username=f"{stamp}:mallory", password="x")
    resp, _ = client.allocate(T0)
    assert error_code(resp) in (400, 401)


def test_a_request_with_too_many_attributes_is_dropped() -> None:
    server = make_server()
    msg = Message(
        Method.BINDING, Class.REQUEST, bytes(12), tuple((0x8022, b"x") for _ in range(65))
    )
    assert server.receive(T0, "udp", CLIENT, SERVER, encode(msg)) == []
    assert server.counters.dropped_malformed == 1


def test_permissions_are_capped_per_request() -> None:
    client, _, _ = allocated()
    peers = [(f"81.2.{i // 200}.{1 + i % 200}", 6000) for i in range(33)]
    assert error_code(client.permit(T0, *peers)) == 400
    assert client.permit(T0, *peers[:32]).cls == Class.SUCCESS


def test_the_unauthenticated_rate_limit_counts_an_ipv6_64_as_one_client() -> None:
    server = make_server(config=TurnConfig(unauth_rate=1.0, unauth_burst=2.0))
    answered = 0
    for i in range(10):  # ten addresses of one /64: one client to the limiter
        client = Client(server, addr=(f"2001:db8:1:2::{i + 1}", 50000))
        _, data = client.build(Method.BINDING, [], signed=False)
        answered += len(client.send(T0, data))
    assert answered == 2
    other = Client(server, addr=("2001:db8:1:3::1", 50000))  # another /64 is not held back
    _, data = other.build(Method.BINDING, [], signed=False)
    assert len(other.send(T0, data)) == 1


@pytest.mark.parametrize(
    "peer", ["203.0.114.5", "::ffff:203.0.114.5", "64:ff9b::cb00:7205", "2002:cb00:7205::1"]
)
def test_a_denied_ipv4_range_stays_denied_inside_ipv6(peer: str) -> None:
    policy = PeerPolicy(extra_deny=["203.0.114.0/24"])
    assert "denied by operator" in (policy.refusal(peer) or "")
    assert PeerPolicy().refusal("2002:cb00:7205::1") is None  # a public 6to4 peer, not denied


def _own_relay_server() -> TurnServer:
    """A relay that denies its own address (as ``turn serve`` does) but knows which of
    its ports are relayed addresses: 50000-50999 here, 49000-49999 another site's."""
    return make_server(
        TurnConfig(
            deny_peers=(f"{RELAY4}/32", f"{SERVER[0]}/32"),
            relayed_peers=((RELAY4, 49000, 50999),),
        )
    )


def test_two_clients_of_one_relay_reach_each_other() -> None:
    server = _own_relay_server()
    a, resp_a, _ = allocated(server, addr=("85.10.0.80", 1000))
    b, resp_b, _ = allocated(server, addr=("85.10.0.81", 1000))
    (relay_a,), (relay_b,) = relays_of(resp_a), relays_of(resp_b)
    assert a.permit(T0, relay_b).cls == Class.SUCCESS
    assert b.bind(T0, CHANNEL_MIN, relay_a).cls == Class.SUCCESS
    (out,) = a.send_indication(T0, relay_b, b"hello b")
    assert out == ToPeer(relay_a, relay_b, b"hello b")
    # the datagram arrives on B's relay socket, from A's relayed address
    (to_b,) = server.receive_from_peer(T0, relay_b, relay_a, b"hello b")
    assert isinstance(to_b, ToClient)
    assert to_b.client_addr == b.addr
    assert decode_channel_data(to_b.data) == (CHANNEL_MIN, b"hello b")
    # and another site's slice of the anycast relay ports is a peer too
    assert a.bind(T0, CHANNEL_MIN, (RELAY4, 49500)).cls == Class.SUCCESS


@pytest.mark.parametrize("peer", [(RELAY4, 3478), (RELAY4, 51000), (RELAY4, 48999), SERVER])
def test_the_relays_own_listeners_stay_unreachable(peer: Addr) -> None:
    server = _own_relay_server()
    client, _, _ = allocated(server)
    assert error_code(client.bind(T0, CHANNEL_MIN, peer)) == 403
    if peer[0] == RELAY4:  # a permission names the IP only: the port is checked per Send
        assert client.permit(T0, peer).cls == Class.SUCCESS
    else:
        assert error_code(client.permit(T0, peer)) == 403
    refused = server.counters.refused_peer
    assert client.send_indication(T0, peer, b"binding") == []
    assert server.counters.refused_peer == refused + 1


def test_a_shared_ledger_holds_the_user_quota_across_servers() -> None:
    from anyedge.services.turn.ledger import SharedLedger

    ledger = SharedLedger(slots=64)
    config = TurnConfig(user_quota=2)
    creds = Credentials(REALM, FLEET, USERS, SECRETS)
    servers = [
        TurnServer(
            config,
            creds,
            PortRange(RELAY4, None, 50000 + 100 * i, 50099 + 100 * i),
            T0,
            ledger=ledger,
        )
        for i in range(2)
    ]
    ok = [
        allocated(servers[0], addr=("85.10.0.90", 1))[0],
        allocated(servers[1], addr=("85.10.0.91", 1))[0],
    ]
    assert ledger.count("alice") == 2
    for server in servers:  # alice holds two, one at each server: no third anywhere
        resp, _ = Client(server, addr=("85.10.0.92", 1)).allocate(T0)
        assert error_code(resp) == 486
    assert (
        allocated(servers[1], addr=("85.10.0.93", 1), username="bob", password=USERS["bob"])[1].cls
        == Class.SUCCESS
    )
    ok[0].ok(T0 + 1, Method.REFRESH, [(Attr.LIFETIME, pack(Attr.LIFETIME, 0))])
    assert ledger.count("alice") == 1
    assert Client(servers[1], addr=("85.10.0.92", 1)).allocate(T0 + 2)[0].cls == Class.SUCCESS
