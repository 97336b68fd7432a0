"""What the core lets a kernel fast path relay (``anyedge.proto.turn.offload``): live
channels of UDP allocations with live permissions, until the earlier expiry; and what
the fast path relayed, charged back to the counters and the user's bandwidth bucket,
which pauses an allocation that went over it until the bucket is full again."""

from __future__ import annotations

from anyedge.proto.turn import Counters
from anyedge.proto.turn.allocation import Allocation, Channel, UserState
from anyedge.proto.turn.offload import account, offloadable, offloadable_permissions
from anyedge.proto.turn.policy import TokenBucket

PEER, OTHER = ("203.0.113.5", 6000), ("203.0.113.6", 6000)
RELAY = ("198.51.100.7", 50000)


def alloc(transport: str = "udp", bucket: TokenBucket | None = None) -> Allocation:
    a = Allocation(
        id=1,
        transport=transport,
        client=("192.0.2.10", 40000),
        server=("198.51.100.7", 3478),
        username="alice",
        user="alice",
        key=b"k",
        algorithm=1,
        quota=UserState(1, bucket),
        expires=1600.0,
        relays={4: RELAY},
    )
    for number, peer, expires in ((0x4000, PEER, 1600.0), (0x4001, OTHER, 1100.0)):
        a.channels[number] = a.by_peer[peer] = Channel(number, peer, RELAY, expires)
    a.perms = {PEER[0]: 1300.0, OTHER[0]: 1300.0}
    return a


def test_live_channels_until_the_earliest_of_channel_permission_and_allocation() -> None:
    a = alloc()
    got = [(ch.number, until) for _, ch, until in offloadable([a], 1000.0)]
    assert got == [(0x4000, 1300.0), (0x4001, 1100.0)]
    a.expires = 1050.0
    assert [until for _, _, until in offloadable([a], 1000.0)] == [1050.0, 1050.0]


def test_expired_channels_permissions_and_allocations_are_not_offloaded() -> None:
    a = alloc()
    assert [ch.number for _, ch, _ in offloadable([a], 1200.0)] == [0x4000]  # 0x4001 expired
    del a.perms[PEER[0]]
    assert list(offloadable([a], 1000.0)) == [(a, a.channels[0x4001], 1100.0)]
    a.channels[0x4001].live = False  # in its quarantine
    assert list(offloadable([a], 1000.0)) == []
    b = alloc()
    b.dead = True
    assert list(offloadable([b], 1000.0)) == []


def test_only_udp_allocations_are_offloaded() -> None:
    for transport in ("tcp", "tls", "dtls"):
        assert list(offloadable([alloc(transport)], 1000.0)) == []


def test_what_the_kernel_relayed_is_counted_like_user_space() -> None:
    c, a = Counters(), alloc()
    assert account(c, a, 1000.0, to_peer=(3, 300), to_client=(2, 50))
    assert (c.packets_to_peer, c.bytes_to_peer, c.packets_to_client, c.bytes_to_client) == (
        3,
        300,
        2,
        50,
    )
    assert (a.packets_to_peer, a.bytes_to_peer, a.packets_to_client, a.bytes_to_client) == (
        3,
        300,
        2,
        50,
    )


def test_over_its_bandwidth_an_allocation_returns_to_user_space_until_paid_back() -> None:
    bucket = TokenBucket(rate=1000.0, burst=2000.0, now=1000.0)
    c, a = Counters(), alloc(bucket=bucket)
    assert account(c, a, 1000.0, to_peer=(1, 1500))
    assert not account(c, a, 1000.0, to_peer=(2, 2000))  # 3,500 bytes of a 2,000 burst
    assert a.fast_paused
    assert bucket.tokens == 500.0 - 2000.0
    assert list(offloadable([a], 1001.0)) == []  # a second of refill: still in debt
    assert not bucket.take(1001.0, 1.0)  # ...and user space drops meanwhile
    assert [ch.number for _, ch, _ in offloadable([a], 1004.0)] == [0x4000, 0x4001]
    assert not a.fast_paused


def test_live_permissions_until_the_earlier_of_permission_and_allocation() -> None:
    a = alloc()
    a.perms["203.0.113.7"] = 999.0  # expired
    a.perms["2001:db8::7"] = 1300.0  # the other family than the client's
    a.perms["198.51.100.7"] = 1300.0  # the relay's own IP: its ports are the core's to check
    got = list(offloadable_permissions([a], 1000.0, excluded={"198.51.100.7"}))
    assert got == [(a, PEER[0], RELAY, 1300.0), (a, OTHER[0], RELAY, 1300.0)]
    a.expires = 1200.0
    assert {until for *_, until in offloadable_permissions([a], 1000.0)} == {1200.0}
    # refreshed by CreatePermission (300 s more): the deadline follows
    a.perms[PEER[0]] = 1500.0
    a.expires = 1600.0
    got = {host: until for _, host, _, until in offloadable_permissions([a], 1250.0)}
    assert got == {PEER[0]: 1500.0, OTHER[0]: 1300.0, "198.51.100.7": 1300.0}
    assert list(offloadable_permissions([a], 1600.0)) == []


def test_no_permissions_of_paused_tcp_or_dead_allocations() -> None:
    paused, tcp, dead = alloc(), alloc("tcp"), alloc()
    paused.fast_paused = True
    dead.dead = True
    assert list(offloadable_permissions([paused, tcp, dead], 1000.0)) == []
