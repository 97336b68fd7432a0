"""Batched UDP (``udp_batch:``, ``services/turn/batched.py`` and ``mmsg.py``): a real relay
in this process (its event loop in a thread), real TURN clients and peer sockets on
loopback, and the ring's system calls against real sockets.

The relay's loop is held still while a client sends, so the datagrams wait in the
listener's buffer and are read in full batches and a partial last one -- what a busy
relay sees.  Shown: every datagram arrives, in order, with the core never asked and its
counters and the allocation's exact; a batch mixing lane datagrams and one for the core
keeps their order; the bandwidth bucket is charged exactly as without batches; a dead
peer (ICMP port unreachable) does not disturb the others; an IPv6 client's lanes work;
``sendmmsg`` skips a message the kernel refuses and drops, counted, what finds no room
(``EAGAIN``); same-size datagrams to one destination leave as one segmented send
(``UDP_SEGMENT``), and one the kernel will not segment is sent one datagram at a time;
and ``udp_batch: 0`` (asyncio's transports) relays the same."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from anyedge.services.turn import mmsg
from anyedge.services.turn.io import TurnService
from turn_peers import TurnUdpClient
from turn_support import ThreadedRelay, serving

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="no recvmmsg/sendmmsg here")

T = TypeVar("T")
WAIT = 2.0  # seconds a datagram that should arrive is waited for


class Relay(ThreadedRelay):
    """The relay, with ways to hold its loop still and to see its batches."""

    def __init__(self, service: TurnService, loop: asyncio.AbstractEventLoop, port: int) -> None:
        super().__init__(service, loop, port)
        self.batches: list[int] = []  # what each recvmmsg returned

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The event loop stands still inside the block: what is sent waits in buffers."""
        started, release = threading.Event(), threading.Event()

        def hold() -> None:
            started.set()
            release.wait(10)

        self.loop.call_soon_threadsafe(hold)
        assert started.wait(10)
        try:
            yield
        finally:
            release.set()

    def record_batches(self) -> None:
        ring = self.service.ring
        assert ring is not None
        recv = ring.recv

        def recorded(fd: int, family: int) -> int:
            got = recv(fd, family)
            if got > 0:
                self.batches.append(got)
            return got

        self.call(lambda: setattr(ring, "recv", recorded))


def _free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def relay(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Relay]:
    """``@pytest.mark.parametrize("relay", [{...}], indirect=True)``: ``batch`` (udp_batch),
    ``limits`` (YAML appended to the limits), ``listen`` (the listener's address)."""
    opts: dict[str, Any] = getattr(request, "param", {})
    host = opts.get("listen", "127.0.0.1")
    port = _free_port(host)
    conf = tmp_path / "turn.yaml"
    conf.write_text(
        "realm: batch.test\n"
        f"listen: [{{transport: udp, address: '{host}', port: {port}}}]\n"
        "relay: {ipv4: 127.0.0.1, ports: [22000, 22999]}\n"  # below the ephemeral ports
        "auth: {fleet_keys: [a-fleet-key], users: {alice: wonderland}}\n"
        f"limits: {{allow_peers: [127.0.0.0/8]{opts.get('limits', '')}}}\n"
        f"udp_batch: {opts.get('batch', 8)}\n"
        "workers: 1\n"
    )
    with serving(conf) as (service, loop):
        yield Relay(service, loop, port)


def _peer() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # a burst waits whole
    s.bind(("127.0.0.1", 0))
    s.settimeout(WAIT)
    return s


@pytest.fixture
def peer() -> Iterator[socket.socket]:
    with _peer() as s:
        yield s


def _client(relay: Relay, host: str = "127.0.0.1") -> TurnUdpClient:
    c = TurnUdpClient(("127.0.0.1", relay.port), "alice", "wonderland")
    if ":" in host:  # the harness's client speaks IPv4: give it an IPv6 socket
        c.sock.close()
        c.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        c.sock.bind(("::1", 0))
        c.sock.connect((host, relay.port))
    c.allocate()
    return c


def _establish(relay: Relay, c: TurnUdpClient, peer: socket.socket, channel: int) -> int:
    """Datagrams each way through the core until both lanes are learnt; how many."""
    assert c.relayed is not None
    c.channel_bind(channel, peer.getsockname())
    lanes = relay.call(lambda: len(relay.service.shortcuts))
    for sent in range(1, 11):
        c.send_channel(channel, b"first")
        assert peer.recvfrom(100)[0] == b"first"
        peer.sendto(b"back", c.relayed)
        assert c.receive()[1:] == (b"back", "ChannelData")
        if relay.call(lambda: len(relay.service.shortcuts)) == lanes + 2:
            return sent
    raise AssertionError("no lanes learnt")


def _drain(sock: socket.socket, quiet: float = 0.5) -> list[bytes]:
    got = []
    sock.settimeout(quiet)
    with contextlib.suppress(TimeoutError):
        while True:
            got.append(sock.recvfrom(70000)[0])
    sock.settimeout(WAIT)
    return got


@pytest.mark.parametrize("relay", [{"batch": 8}, {"batch": 0}], indirect=True)
def test_bursts_arrive_in_order_without_the_core_and_count_exactly(
    relay: Relay, peer: socket.socket
) -> None:
    batched = relay.service.ring is not None
    with _client(relay) as c:
        assert c.relayed is not None
        k = _establish(relay, c, peer, 0x4001)
        if batched:
            relay.record_batches()
        calls = relay.count_core_calls()
        with relay.held():
            for i in range(203):
                c.send_channel(0x4001, b"up %03d" % i)
        assert _drain(peer) == [b"up %03d" % i for i in range(203)]
        with relay.held():
            for i in range(157):
                peer.sendto(b"down %03d" % i, c.relayed)
        assert [c.receive()[1:] for _ in range(157)] == [
            (b"down %03d" % i, "ChannelData") for i in range(157)
        ]

        assert calls == {"channel_data": 0, "from_peer": 0}
        counters = relay.counters()
        assert counters["packets_to_peer"] == k + 203
        assert counters["bytes_to_peer"] == 5 * k + 6 * 203
        assert counters["packets_to_client"] == k + 157
        assert counters["bytes_to_client"] == 4 * k + 8 * 157
        (session,) = relay.call(lambda: relay.service.core.sessions(0.0))
        assert session["to_peer"] == {"packets": k + 203, "bytes": 5 * k + 6 * 203}
        assert session["to_client"] == {"packets": k + 157, "bytes": 4 * k + 8 * 157}
        if batched:  # 203 = 25 full batches of 8 and a partial one of 3; 157 = 19 x 8 + 5
            assert relay.batches == [8] * 25 + [3] + [8] * 19 + [5]
            assert relay.service.dropped_send == 0


def test_a_batch_mixing_lanes_and_the_core_keeps_the_order(
    relay: Relay, peer: socket.socket
) -> None:
    with _client(relay) as c:
        k = _establish(relay, c, peer, 0x4001)
        calls = relay.count_core_calls()
        with relay.held():  # one batch of 8 and one of 3: the indication is in the first
            for i in range(5):
                c.send_channel(0x4001, b"lane %d" % i)
            c.send_indication(peer.getsockname(), b"by the core")
            for i in range(5, 10):
                c.send_channel(0x4001, b"lane %d" % i)
        expected = [b"lane %d" % i for i in range(5)] + [b"by the core"]
        expected += [b"lane %d" % i for i in range(5, 10)]
        assert _drain(peer) == expected
        assert calls["channel_data"] == 0
        assert relay.counters()["packets_to_peer"] == k + 11


@pytest.mark.parametrize("relay", [{"limits": ", user_bandwidth: 1000"}], indirect=True)
def test_the_bandwidth_bucket_is_charged_exactly_under_batching(
    relay: Relay, peer: socket.socket
) -> None:
    """1,000 B/s with a 64 KiB burst: of 100 x 1,000 B read in batches about 65 go
    through, and every one is in exactly one of the counters."""
    with _client(relay) as c:
        k = _establish(relay, c, peer, 0x4001)
        with relay.held():
            for i in range(100):
                c.send_channel(0x4001, b"%03d" % i + bytes(997))
        got = _drain(peer)
        assert 60 <= len(got) < 100
        assert got == [b"%03d" % i + bytes(997) for i in range(len(got))]  # the first ones
        counters = relay.counters()
        assert counters["packets_to_peer"] == k + len(got)
        assert counters["dropped_bandwidth"] == 100 - len(got)
        assert counters["bytes_to_peer"] + counters["dropped_bandwidth_bytes"] == 100_000 + 5 * k


def test_a_dead_peer_does_not_disturb_the_others(relay: Relay, peer: socket.socket) -> None:
    """The second peer's socket is closed: each datagram to it brings an ICMP port
    unreachable back to the relay socket, which must not stop the first peer's."""
    dead = _peer()
    with _client(relay) as c:
        k = _establish(relay, c, peer, 0x4001)
        k2 = _establish(relay, c, dead, 0x4002)
        dead.close()
        for _round in range(2):  # the second after the ICMP errors of the first came back
            with relay.held():
                for i in range(20):
                    c.send_channel(0x4001 + i % 2, b"%d" % i)
            assert _drain(peer) == [b"%d" % i for i in range(0, 20, 2)]
        counters = relay.counters()
        assert counters["packets_to_peer"] == k + k2 + 40
        assert relay.service.dropped_send == 0


@pytest.mark.parametrize("relay", [{"listen": "::1"}], indirect=True)
def test_an_ipv6_client_has_lanes_too(relay: Relay, peer: socket.socket) -> None:
    with _client(relay, "::1") as c:
        assert c.relayed is not None
        k = _establish(relay, c, peer, 0x4001)
        calls = relay.count_core_calls()
        with relay.held():
            for i in range(20):
                c.send_channel(0x4001, b"v6 %d" % i)
                peer.sendto(b"back %d" % i, c.relayed)
        assert _drain(peer) == [b"v6 %d" % i for i in range(20)]
        assert [c.receive()[1] for _ in range(20)] == [b"back %d" % i for i in range(20)]
        assert calls == {"channel_data": 0, "from_peer": 0}
        assert relay.counters()["packets_to_client"] == k + 20


class _UnixName:
    """A ``sockaddr_un`` for :meth:`mmsg.Ring.queue` (it takes any ``ptr``/``length``)."""

    def __init__(self, name: bytes) -> None:
        import ctypes

        raw = socket.AF_UNIX.to_bytes(2, "little") + name
        self.buf = ctypes.create_string_buffer(raw, len(raw))
        self.ptr = ctypes.addressof(self.buf)
        self.length = len(raw)


def _fill(ring: mmsg.Ring, count: int, size: int) -> list[int]:
    """Write ``count`` distinct payloads into the ring's slots; their offsets."""
    offsets = []
    for i in range(count):
        off = i * mmsg.SLOT + mmsg.HEADROOM
        ring.view[off : off + size] = bytes([i]) * size
        offsets.append(off)
    return offsets


def test_sendmmsg_skips_a_refused_message_and_goes_on() -> None:
    ring = mmsg.Ring(4)
    with _peer() as a, _peer() as b, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        offs = _fill(ring, 3, 10)
        # broadcast without SO_BROADCAST: EACCES for that message only
        dests = [a.getsockname(), ("255.255.255.255", 9), b.getsockname()]
        for off, dest in zip(offs, dests, strict=True):
            ring.queue(s.fileno(), mmsg.Destination(dest), off, 10)
        assert ring.flush() == 2
        assert (ring.send_failed, ring.last_send_error) == (1, errno.EACCES)
        assert a.recv(100) == bytes([0]) * 10
        assert b.recv(100) == bytes([2]) * 10


def test_sendmmsg_drops_and_counts_what_finds_no_room() -> None:
    """A receiver that does not read and a small send buffer: EAGAIN part-way."""
    ring = mmsg.Ring(32, gso=False)  # a Unix socket takes no UDP segmentation
    name = b"\0anyedge-test-batch-%d" % threading.get_ident()
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as tx,
    ):
        rx.bind(name)
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        tx.setblocking(False)
        dest = _UnixName(name)
        for off in _fill(ring, 32, 1000):
            ring.queue(tx.fileno(), dest, off, 1000)  # type: ignore[arg-type]
        sent = ring.flush()
        assert 0 < sent < 32
        assert ring.send_failed == 32 - sent
        rx.setblocking(False)
        got = []
        with contextlib.suppress(BlockingIOError):
            while True:
                got.append(rx.recv(2000))
        assert got == [bytes([i]) * 1000 for i in range(sent)]
        assert ring.flush() == 0  # nothing left queued


def test_same_size_datagrams_to_one_destination_leave_as_one_segmented_send() -> None:
    """UDP_SEGMENT: ten 100-byte datagrams to one peer are one message for ``sendmmsg``
    and arrive as ten datagrams; a different size, another destination or a datagram
    over 1,232 bytes starts a new message."""
    ring = mmsg.Ring(16)
    with _peer() as a, _peer() as b, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        to_a, to_b = mmsg.Destination(a.getsockname()), mmsg.Destination(b.getsockname())
        offs = _fill(ring, 16, 1500)
        plan = [(to_a, 100)] * 10 + [(to_a, 60), (to_b, 60), (to_b, 60)] + [(to_b, 1400)] * 2
        for off, (dest, size) in zip(offs, plan, strict=False):
            ring.queue(s.fileno(), dest, off, size)
        assert ring._count == [10, 1, 2, 1, 1]  # the messages sendmmsg is given
        assert ring.flush() == 15
        assert ring.send_failed == 0
        assert _drain(a, 0.2) == [bytes([i]) * 100 for i in range(10)] + [bytes([10]) * 60]
        assert _drain(b, 0.2) == [bytes([11]) * 60, bytes([12]) * 60] + [
            bytes([i]) * 1400 for i in (13, 14)
        ]


_REFUSED_GSO = """
import socket, subprocess, sys
sys.path.insert(0, sys.argv[1])
from anyedge.services.turn import mmsg
subprocess.run(["ip", "link", "set", "lo", "up", "mtu", "1100"], check=True)
ring = mmsg.Ring(8)
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rx.bind(("127.0.0.1", 0))
rx.settimeout(2)
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dest = mmsg.Destination(rx.getsockname())
for i in range(5):
    off = i * mmsg.SLOT + mmsg.HEADROOM
    ring.view[off : off + 1200] = bytes([i]) * 1200
    ring.queue(tx.fileno(), dest, off, 1200)
print(list(ring._count), ring.flush(), ring.send_failed, ring.last_send_error)
ring.queue(tx.fileno(), dest, 0, 1200)
ring.queue(tx.fileno(), dest, mmsg.SLOT, 1200)
print(list(ring._count), ring.flush(), ring.send_failed)
print([rx.recv(2000) == bytes([i]) * 1200 for i in range(5)], len(rx.recv(2000) + rx.recv(2000)))
"""


@pytest.mark.lab
def test_a_refused_segmentation_sends_one_by_one() -> None:
    """Segments larger than the route's MTU (loopback at MTU 1,100 in a network namespace
    of its own): the kernel refuses the segmented send (EMSGSIZE); the ring sends those
    datagrams one at a time, which the kernel fragments as it would have without
    segmentation, and nothing is lost."""
    import os
    import subprocess
    import sys

    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace")
    src = str(Path(mmsg.__file__).resolve().parents[3])
    out = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", _REFUSED_GSO, src],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert out == [f"[5] 5 0 {errno.EMSGSIZE}", "[2] 2 0", f"{[True] * 5} 2400"]
