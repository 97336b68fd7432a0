"""The user-space fast path (``services/turn/shortcut.py``): established channels relayed
by lanes the core's answers were written down in, on a real relay in this process (its
event loop in a thread), a real TURN client and a real peer socket on loopback.

What is shown: after the first ChannelData each way the core is not asked again, and
what the lanes relayed is in the core's counters and the allocation's at once; a
deleted allocation, an expired permission and a user over ``user_bandwidth`` are no
longer relayed by them."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from turn_peers import TurnError, TurnUdpClient
from turn_support import ThreadedRelay, serving

PEER_WAIT = 2.0  # seconds a datagram that should arrive is waited for


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def relay(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ThreadedRelay]:
    """The relay; ``@pytest.mark.parametrize("relay", [{...}], indirect=True)`` passes
    ``limits`` (YAML text) and ``turn`` (TurnConfig fields) to change it."""
    opts: dict[str, Any] = getattr(request, "param", {})
    limits, port = opts.get("limits", ""), _free_port()
    conf = tmp_path / "turn.yaml"
    conf.write_text(
        "realm: shortcut.test\n"
        f"listen: [{{transport: udp, address: 127.0.0.1, port: {port}}}]\n"
        "relay: {ipv4: 127.0.0.1, ports: [21000, 21999]}\n"  # below the ephemeral ports
        "auth: {fleet_keys: [a-fleet-key], users: {alice: wonderland}}\n"
        f"limits: {{allow_peers: [127.0.0.0/8]{limits}}}\n"
        "workers: 1\n"
    )
    with serving(conf, **opts.get("turn", {})) as (service, loop):
        yield ThreadedRelay(service, loop, port)


@pytest.fixture
def peer() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(PEER_WAIT)
    yield s
    s.close()


def _client(relay: ThreadedRelay, peer: socket.socket) -> TurnUdpClient:
    c = TurnUdpClient(("127.0.0.1", relay.port), "alice", "wonderland")
    c.allocate()
    c.channel_bind(0x4001, peer.getsockname())
    return c


def _establish(relay: ThreadedRelay, c: TurnUdpClient, peer: socket.socket) -> int:
    """One datagram each way through the core, until it has taught both lanes (a relay
    socket still being opened gets none yet); returns how many went each way."""
    assert c.relayed is not None
    for sent in range(1, 11):
        c.send_channel(0x4001, b"first")
        assert peer.recvfrom(100)[0] == b"first"
        peer.sendto(b"back", c.relayed)
        assert c.receive()[1:] == (b"back", "ChannelData")
        if relay.call(lambda: len(relay.service.shortcuts)) == 2:
            return sent
    raise AssertionError("no lanes learnt")


def _nothing_arrives(sock: socket.socket, timeout: float = 0.5) -> bool:
    sock.settimeout(timeout)
    try:
        sock.recvfrom(2000)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(PEER_WAIT)
    return False


def test_established_channels_bypass_the_core_and_count_in_it(
    relay: ThreadedRelay, peer: socket.socket
) -> None:
    with _client(relay, peer) as c:
        assert c.relayed is not None
        k = _establish(relay, c, peer)  # through the core, which teaches the lanes
        calls = relay.count_core_calls()

        for i in range(20):
            c.send_channel(0x4001, b"up %02d" % i)
        assert [peer.recvfrom(100)[0] for _ in range(20)] == [b"up %02d" % i for i in range(20)]
        for i in range(10):
            peer.sendto(b"down %d" % i, c.relayed)
        assert [c.receive()[1:] for _ in range(10)] == [
            (b"down %d" % i, "ChannelData") for i in range(10)
        ]

        assert calls == {"channel_data": 0, "from_peer": 0}
        core = relay.service.core
        counters = relay.counters()
        assert counters["packets_to_peer"] == k + 20
        assert counters["bytes_to_peer"] == k * 5 + 20 * 5
        assert counters["packets_to_client"] == k + 10
        assert counters["bytes_to_client"] == k * 4 + 10 * 6
        (session,) = relay.call(lambda: core.sessions(0.0))
        assert session["to_peer"] == {"packets": k + 20, "bytes": k * 5 + 100}
        assert session["to_client"] == {"packets": k + 10, "bytes": k * 4 + 60}


def test_a_deleted_allocation_takes_its_lanes_with_it(
    relay: ThreadedRelay, peer: socket.socket
) -> None:
    with _client(relay, peer) as c:
        relayed = c.relayed
        assert relayed is not None
        _establish(relay, c, peer)

        c.release()
        assert relay.call(lambda: len(relay.service.shortcuts)) == 0
        c.send_channel(0x4001, b"after")
        peer.sendto(b"after", relayed)
        assert _nothing_arrives(peer)
        with pytest.raises(TimeoutError):
            c.receive(timeout=0.5)
        dropped = relay.call(lambda: relay.service.core.counters.dropped_no_allocation)
        assert dropped == 1  # the client's; the peer's never reached a relay socket


@pytest.mark.parametrize("relay", [{"turn": {"permission_lifetime": 1}}], indirect=True)
def test_an_expired_permission_is_not_relayed_by_its_lane(
    relay: ThreadedRelay, peer: socket.socket
) -> None:
    with _client(relay, peer) as c:
        assert c.relayed is not None
        k = _establish(relay, c, peer)
        c.send_channel(0x4001, b"by the lane")
        assert peer.recvfrom(100)[0] == b"by the lane"

        threading.Event().wait(1.5)  # the permission (1 s) runs out; the channel does not
        c.send_channel(0x4001, b"too late")
        peer.sendto(b"too late", c.relayed)
        assert _nothing_arrives(peer)
        with pytest.raises(TimeoutError):
            c.receive(timeout=0.5)
        counters = relay.counters()
        assert counters["dropped_no_permission"] == 2
        assert counters["packets_to_peer"] == k + 1


@pytest.mark.parametrize("relay", [{"limits": ", user_bandwidth: 1000"}], indirect=True)
def test_a_user_over_its_bandwidth_is_not_relayed_by_its_lanes(
    relay: ThreadedRelay, peer: socket.socket
) -> None:
    """1,000 B/s with a 64 KiB burst: of 100 KB sent at once about 65 KB get through,
    the lanes charging the same bucket the core does, and the rest is counted dropped."""
    payload = bytes(1000)
    with _client(relay, peer) as c:
        k = _establish(relay, c, peer)
        calls = relay.count_core_calls()
        for _ in range(100):
            c.send_channel(0x4001, payload)
        got = 0
        while not _nothing_arrives(peer, 0.3):
            got += 1
        assert got < 100
        counters = relay.counters()
        assert counters["packets_to_peer"] == k + got
        assert counters["dropped_bandwidth"] == 100 - got
        assert counters["bytes_to_peer"] + counters["dropped_bandwidth_bytes"] == 100_000 + k * 5
        # what the bucket refused went to the core, which refused it again and counted it
        assert calls["channel_data"] >= 100 - got


@pytest.mark.parametrize(
    "relay", [{"turn": {"channel_lifetime": 1, "channel_quarantine": 1}}], indirect=True
)
def test_a_channel_number_bound_again_to_another_peer_goes_there(
    relay: ThreadedRelay, peer: socket.socket
) -> None:
    """RFC 8656 §12: once a channel has expired and sat out its quarantine its number
    may name another peer; the old lane must not send to the old one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other, _client(relay, peer) as c:
        other.bind(("127.0.0.1", 0))
        other.settimeout(PEER_WAIT)
        _establish(relay, c, peer)
        for _ in range(20):  # expiry (1 s), quarantine (1 s), the sweep that ends it
            threading.Event().wait(0.25)
            try:
                c.channel_bind(0x4001, other.getsockname())
                break
            except TurnError:  # still quarantined
                continue
        else:
            raise AssertionError("the number was never free again")
        c.send_channel(0x4001, b"to the new peer")
        c.send_channel(0x4001, b"and again")
        assert other.recvfrom(100)[0] == b"to the new peer"
        assert other.recvfrom(100)[0] == b"and again"
        assert _nothing_arrives(peer, 0.3)
