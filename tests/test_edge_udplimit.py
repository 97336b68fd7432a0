"""UDP rate limits per source with a socket filter (SO_ATTACH_BPF).

The program is run on hand-built datagrams with ``BPF_PROG_TEST_RUN`` (bytes in,
kept length or 0 out), then on a real UDP socket (marker ``lab``): in a namespace with
four source addresses from 198.51.100.0/24 on one interface (``lo``), one source floods the
service while three others send at the same time.  Every assertion is about counts:
with ``rate=0`` a source gets exactly ``burst`` datagrams through, whenever it sends
them.
"""

from __future__ import annotations

import ctypes
import os
import re
import secrets
import select
import socket
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from anyedge.adapters import netns
from anyedge.edge import build
from anyedge.edge.udplimit import Bucket, Config, SourceKey, UdpLimit
from edge_packets import udp4, udp6

SERVICE = "192.0.2.53"
SO_RCVBUFFORCE = 33  # asm-generic/socket.h; not in Python's socket module


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "BPF programs need root (CAP_BPF and CAP_NET_ADMIN)"
    lacking = build.missing_tools()
    return "cannot build BPF programs, missing: " + ", ".join(lacking) if lacking else None


@pytest.fixture
def limit() -> Iterator[UdpLimit]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    with UdpLimit(rate=0, burst=3) as loaded:
        yield loaded


def kept(limit: UdpLimit, frame: bytes) -> bool:
    """Whether the program keeps ``frame``: it returns the datagram's length or 0."""
    return limit.program.test_run(frame).retval != 0


def test_object_matches_the_python_records() -> None:
    lacking = build.missing_tools()
    if lacking:
        pytest.skip("cannot build BPF programs, missing: " + ", ".join(lacking))
    dump = subprocess.run(
        ["bpftool", "btf", "dump", "file", str(build.object_path("udp_limit")), "format", "raw"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name, record in (("udl_config", Config), ("udl_source", SourceKey), ("udl_bucket", Bucket)):
        size = ctypes.sizeof(record)
        block = dump.split(f"STRUCT '{name}' size={size}")[1].split("\n[")[0]
        members = dict(re.findall(r"'(\w+)' type_id=\d+ bits_offset=(\d+)", block))
        assert {n: int(b) // 8 for n, b in members.items()} == {
            f: getattr(record, f).offset for f, _ in record._fields_
        }


def test_each_source_gets_exactly_its_burst(limit: UdpLimit) -> None:
    a = udp4("198.51.100.7", SERVICE, 40000, 53, b"query")
    b = udp4("198.51.100.8", SERVICE, 40000, 53, b"query")
    v6 = udp6("2001:db8::7", "2001:db8::53", 40000, 53, b"query")
    assert [kept(limit, a) for _ in range(5)] == [True] * 3 + [False] * 2
    assert [kept(limit, b) for _ in range(4)] == [True] * 3 + [False]  # its own bucket
    assert [kept(limit, v6) for _ in range(4)] == [True] * 3 + [False]
    assert limit.program.test_run(a[:14] + a[14:]).retval == 0  # still empty
    assert limit.counters() == {"kept": 9, "dropped": 5, "other": 0}
    top = limit.top()
    assert [(s.address, s.kept, s.dropped, s.tokens) for s in top] == [
        ("198.51.100.7", 3, 3, 0.0),
        ("198.51.100.8", 3, 1, 0.0),
        ("2001:db8::7", 3, 1, 0.0),
    ]
    assert limit.top(1) == top[:1]


def test_a_kept_datagram_keeps_its_whole_length(limit: UdpLimit) -> None:
    frame = udp4("198.51.100.7", SERVICE, 40000, 53, bytes(100))
    assert limit.program.test_run(frame).retval == len(frame) - 14  # the IP packet


def test_what_is_not_ip_is_kept_and_counted_apart(limit: UdpLimit) -> None:
    arp = bytes(12) + b"\x08\x06" + bytes(28)
    assert all(kept(limit, arp) for _ in range(5))
    assert limit.counters() == {"kept": 0, "dropped": 0, "other": 5}
    assert limit.sources() == []


def test_refill_burst_change_and_reset(limit: UdpLimit) -> None:
    a = udp4("198.51.100.7", SERVICE, 40000, 53, b"q")
    assert sum(kept(limit, a) for _ in range(10)) == 3
    limit.set_limit(rate=0, burst=5)  # an empty bucket stays empty without refill
    assert not kept(limit, a)
    limit.reset()  # a new bucket is full: the new burst
    assert sum(kept(limit, a) for _ in range(10)) == 5
    # at 10^9 a second, any time at all between two datagrams refills a whole token
    limit.set_limit(rate=10**9, burst=1)
    assert all(kept(limit, a) for _ in range(50))
    # and never holds more than the burst: microseconds at 10^9 a second would be
    # thousands of tokens; the bucket is cut to 2, and one is taken
    limit.set_limit(rate=10**9, burst=2)
    assert kept(limit, a)
    assert [s.tokens for s in limit.sources()] == [1.0]


def test_two_cpus_at_once_never_spend_a_token_twice(limit: UdpLimit) -> None:
    """Two threads, pinned to two CPUs, run the program 200,000 times each at once on
    datagrams from one source with a burst of 100,000 and no refill: exactly 100,000
    are kept.  A bucket read and written without atomic instructions would keep more
    (two CPUs taking the same token) or fewer (a store undoing another's)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    limit.set_limit(rate=0, burst=100_000)
    frame = udp4("198.51.100.7", SERVICE, 40000, 53, b"q")
    start = threading.Barrier(2)

    def hammer(cpu: int) -> None:
        os.sched_setaffinity(threading.get_native_id(), {cpu})
        start.wait()
        limit.program.test_run(frame, repeat=200_000)  # ctypes lets go of the GIL

    threads = [threading.Thread(target=hammer, args=(cpu,)) for cpu in cpus[:2]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert limit.counters() == {"kept": 100_000, "dropped": 300_000, "other": 0}
    [source] = limit.sources()
    assert (source.kept, source.dropped, source.tokens) == (100_000, 300_000, 0.0)


def test_bad_limits_are_refused(limit: UdpLimit) -> None:
    with pytest.raises(ValueError, match="rate and burst are 0 to"):
        limit.set_limit(-1, 3)
    with pytest.raises(ValueError, match="rate and burst are 0 to"):
        limit.set_limit(1, 10**10)
    assert (limit.rate, limit.burst) == (0, 3)


# -- a real socket ------------------------------------------------------------------------

SERVER = "198.51.100.1"
FLOODER = "198.51.100.2"
OTHERS = ["198.51.100.3", "198.51.100.4", "198.51.100.5"]
BURST = 1000
FLOOD = 5000  # datagrams from the flooder
EACH = 500  # datagrams from each other source


@pytest.fixture
def namespace() -> Iterator[str]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    ns = "ae-sk-" + secrets.token_hex(3)
    try:
        netns.add(ns)
        netns.batch(
            ns,
            [f"addr add {a}/32 dev lo" for a in [SERVER, FLOODER, *OTHERS]],
        )
        yield ns
    finally:
        netns.remove(ns)
        assert not netns.exists(ns)


def _drain(sock: socket.socket, got: Counter[str], wait: float = 0.0) -> None:
    """Read every datagram queued (waiting up to ``wait`` seconds for the first)."""
    while select.select([sock], [], [], wait)[0]:
        try:
            while True:
                _data, (addr, _port) = sock.recvfrom(64, socket.MSG_DONTWAIT)
                got[addr] += 1
        except BlockingIOError:
            pass
        wait = 0.0 if wait == 0.0 else min(wait, 0.2)


@pytest.mark.lab
def test_a_flooding_source_is_limited_and_the_others_get_through(namespace: str) -> None:
    """One source sends 5,000 datagrams while three send 500 each, interleaved, to one
    socket limited to a burst of 1,000 per source (no refill): the flooder gets
    exactly 1,000 through, every other source all of its 500; the program's counters
    are the difference, datagram for datagram."""
    got: Counter[str] = Counter()
    sent: Counter[str] = Counter()
    clients: dict[str, socket.socket] = {}
    with netns.entered(namespace):
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        server.bind((SERVER, 5300))
        server.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 24)  # no queue drops
        for addr in [FLOODER, *OTHERS]:
            with netns.entered(namespace):
                clients[addr] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            clients[addr].bind((addr, 0))
        with UdpLimit(rate=0, burst=BURST) as limit:
            limit.attach(server)
            for _round in range(EACH // 5):  # 100 rounds: 50 from the flooder, 5 from each
                for _ in range(FLOOD // (EACH // 5)):
                    clients[FLOODER].sendto(b"flood", (SERVER, 5300))
                    sent[FLOODER] += 1
                for addr in OTHERS:
                    for _ in range(5):
                        clients[addr].sendto(b"query", (SERVER, 5300))
                        sent[addr] += 1
                _drain(server, got)
            _drain(server, got, wait=1.0)
            counters = limit.counters()
            top = limit.top(2)
            limit.detach(server)
    finally:
        server.close()
        for c in clients.values():
            c.close()
    assert sent == Counter({FLOODER: FLOOD, **dict.fromkeys(OTHERS, EACH)})
    assert got[FLOODER] == BURST
    for addr in OTHERS:
        assert got[addr] == EACH  # 100 %, well over the 99 % asked for
    assert counters == {"kept": BURST + 3 * EACH, "dropped": FLOOD - BURST, "other": 0}
    assert sum(sent.values()) - sum(got.values()) == counters["dropped"]
    assert (top[0].address, top[0].kept, top[0].dropped) == (FLOODER, BURST, FLOOD - BURST)
    assert (top[1].kept, top[1].dropped) == (EACH, 0)
