"""TURN interop: real peer tools against a TURN server on loopback.

Today the only server is coturn, and these tests prove the harness in
``tests/turn_peers.py``: coturn's own ``turnutils_uclient``, aioice's TURN endpoint, two
aiortc peer connections restricted to relayed candidates, and our own small client and
load generator.  The fixtures are parametrized over :data:`turn_peers.TURN_SERVERS`, so
when ``python -m anyedge turn serve`` exists, one line there runs every test here against
it too.  A :class:`turn_peers.WireTap` between client and server shows what each tool
actually puts on the wire.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import turn_peers as tp

pytestmark = [pytest.mark.slow, pytest.mark.interop]

USERS = {"user": "pass", "alice": "wonderland"}
SECRET = "anyedge-interop-secret"


def _start(
    name: str,
    workdir: Path,
    users: dict[str, str] | None = None,
    secret: str | None = None,
) -> tp.TurnServer:
    try:
        return tp.TURN_SERVERS[name](
            workdir,
            tp.free_port(),
            users=users,
            secret=secret,
            relay_ports=tp.free_port_range(200),
            workers=1,
        )
    except tp.ServerUnavailable as exc:
        pytest.skip(str(exc))


def _stopped(server: tp.TurnServer) -> Iterator[tp.TurnServer]:
    with server:
        yield server
    # Ended by its pid and reaped: nothing of it is left running.
    proc = getattr(server, "process", None)
    assert proc is None or proc.poll() is not None


@pytest.fixture(scope="module", params=sorted(tp.TURN_SERVERS))
def turn(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tp.TurnServer]:
    """A TURN server with long-term credentials (``USERS``)."""
    name = request.param
    yield from _stopped(_start(name, tmp_path_factory.mktemp(f"{name}-lt"), users=USERS))


@pytest.fixture(scope="module", params=sorted(tp.TURN_SERVERS))
def turn_rest(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tp.TurnServer]:
    """A TURN server taking TURN REST API credentials made with ``SECRET``."""
    name = request.param
    yield from _stopped(_start(name, tmp_path_factory.mktemp(f"{name}-rest"), secret=SECRET))


@pytest.fixture
def tap(turn: tp.TurnServer) -> Iterator[tp.WireTap]:
    with tp.WireTap((turn.host, turn.port)) as t:
        yield t


def _in_relay_range(server: tp.TurnServer, addr: tuple[str, int]) -> bool:
    lo, hi = server.relay_ports
    return addr[0] == tp.LOOPBACK and lo <= addr[1] <= hi


def _need_uclient() -> None:
    if (why := tp.coturn_missing()) is not None:
        pytest.skip(why)


# -- coturn's turnutils_uclient, against turnutils_peer


def test_uclient_relays_channel_data_without_loss(turn: tp.TurnServer, tap: tp.WireTap) -> None:
    _need_uclient()
    r = tp.run_uclient(tp.LOOPBACK, tap.port, "user", "pass", messages=25, clients=4)
    assert r["returncode"] == 0, r["output"]
    assert r["errors"] == []
    assert (r["sent"], r["received"]) == (100, 100)
    assert (r["sent_bytes"], r["received_bytes"]) == (100 * 100, 100 * 100)
    assert r["lost"] == 0
    assert r["lost_percent"] == 0.0
    assert r["rtt_avg_ms"] < 50
    c2s, s2c = tap.counts("c2s"), tap.counts("s2c")
    # uclient binds channels and sends ChannelData; the echo comes back the same way.
    assert c2s["ChannelBind request"] >= 4
    assert s2c["ChannelBind success"] == c2s["ChannelBind request"]
    assert c2s["ChannelData"] == 100
    assert s2c["ChannelData"] == 100
    assert c2s["Send indication"] == 0
    assert s2c["Allocate success"] >= 4


def test_uclient_relays_send_indications_without_loss(turn: tp.TurnServer, tap: tp.WireTap) -> None:
    _need_uclient()
    r = tp.run_uclient(
        tp.LOOPBACK, tap.port, "alice", "wonderland", messages=20, clients=2, send_indications=True
    )
    assert r["returncode"] == 0, r["output"]
    assert (r["sent"], r["received"], r["lost"]) == (40, 40, 0)
    c2s, s2c = tap.counts("c2s"), tap.counts("s2c")
    assert c2s["CreatePermission request"] >= 2
    assert c2s["Send indication"] == 40
    assert s2c["Data indication"] == 40
    assert c2s["ChannelData"] == s2c["ChannelData"] == 0


def test_uclient_rtp_rtcp_pairs_with_even_port_reservations(
    turn: tp.TurnServer, tap: tp.WireTap
) -> None:
    """Without ``-c`` uclient allocates RTP relays with EVEN-PORT (R bit set) and RTCP
    relays with the RESERVATION-TOKEN it got: anyedge answered 508 to both before."""
    _need_uclient()
    r = tp.run_uclient(tp.LOOPBACK, tap.port, "user", "pass", messages=10, clients=2, rtcp=True)
    assert r["returncode"] == 0, r["output"][-2000:]
    assert r["errors"] == []
    assert (r["sent"], r["received"], r["lost"]) == (20, 20, 0)
    c2s, s2c = tap.counts("c2s"), tap.counts("s2c")
    # per RTP/RTCP pair: the challenged Allocate, the RTP one, the RTCP one with the token
    assert s2c["Allocate success"] >= 3
    assert s2c["Allocate error"] == c2s["Allocate request"] - s2c["Allocate success"]


def test_uclient_with_a_wrong_password_gets_no_allocation(turn: tp.TurnServer) -> None:
    _need_uclient()
    r = tp.run_uclient(tp.LOOPBACK, turn.port, "user", "not-the-password", messages=3)
    assert r["returncode"] != 0
    assert r.get("received", 0) == 0
    assert any("Cannot complete Allocation" in e for e in r["errors"])


# -- aioice


def test_aioice_gets_every_echo_through_a_bound_channel(
    turn: tp.TurnServer, tap: tp.WireTap
) -> None:
    payloads = [bytes([i]) * size for i, size in enumerate((1, 4, 99, 100, 500, 1200) * 3)]
    r = asyncio.run(
        tp.aioice_exchange_async(tp.LOOPBACK, tap.port, "user", "pass", payloads=payloads)
    )
    assert sorted(r.echoes) == sorted(payloads)
    assert _in_relay_range(turn, r.relayed)
    # Everything reached the echo from the allocation's relayed address.
    assert set(r.peer_saw) == {r.relayed}
    assert len(r.peer_saw) == len(payloads)
    time.sleep(0.1)  # the tap's thread counts the last datagrams
    c2s, s2c = tap.counts("c2s"), tap.counts("s2c")
    # aioice binds one channel on the first send (no CreatePermission, no Send) ...
    assert c2s["ChannelBind request"] == 1
    assert c2s["CreatePermission request"] == 0
    assert c2s["Send indication"] == 0
    # ... every payload goes as ChannelData and comes back as ChannelData ...
    assert c2s["ChannelData"] == len(payloads)
    assert s2c["ChannelData"] == len(payloads)
    # ... and closing deletes the allocation (Refresh with LIFETIME 0).
    assert s2c["Refresh success"] == 1


def test_aioice_plain_function_returns_the_echoes(turn: tp.TurnServer) -> None:
    got = tp.aioice_exchange(tp.LOOPBACK, turn.port, "alice", "wonderland", payloads=[b"x", b"y"])
    assert sorted(got) == [b"x", b"y"]


# -- clients of one relay, reaching each other's relayed addresses


@pytest.fixture(scope="module", params=sorted(tp.TURN_SERVERS))
def turn_own_policy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tp.TurnServer]:
    """A TURN server whose peer policy is its default: for anyedge no allow list, so its
    loopback relay address is no peer but its relayed addresses are."""
    name = request.param
    workdir = tmp_path_factory.mktemp(f"{name}-own")
    if name != "anyedge":
        yield from _stopped(_start(name, workdir, users=USERS))
        return
    server = tp.anyedge_server(
        workdir,
        tp.free_port(),
        users=USERS,
        relay_ports=tp.free_port_range(200),
        allow_loopback=False,
    )
    yield from _stopped(server)


def test_uclient_client_to_client_through_one_relay(turn_own_policy: tp.TurnServer) -> None:
    _need_uclient()
    server = turn_own_policy
    r = tp.run_uclient(
        tp.LOOPBACK, server.port, "user", "pass", messages=10, clients=2, extra=["-y"]
    )
    assert r["returncode"] == 0, r["output"][-2000:]
    assert r["errors"] == []
    assert r["sent"] == r["received"] == 20


def test_aiortc_relay_only_peers_on_one_relay_connect(turn_own_policy: tp.TurnServer) -> None:
    url = f"turn:{tp.LOOPBACK}:{turn_own_policy.port}?transport=udp"
    assert tp.aiortc_datachannel(url, "alice", "wonderland", 30, ["a", "b"]) == ["a", "b"]


# -- aiortc


def test_aiortc_data_channel_over_relayed_candidates_only(
    turn: tp.TurnServer, tap: tp.WireTap
) -> None:
    messages = [f"message {i}" for i in range(10)]
    r = asyncio.run(
        tp.aiortc_datachannel_async(
            f"turn:{tp.LOOPBACK}:{tap.port}?transport=udp",
            "user",
            "pass",
            timeout=30,
            messages=messages,
        )
    )
    assert r.received == messages  # a reliable, ordered channel
    assert r.sdp_candidate_types
    assert set(r.sdp_candidate_types) == {"relay"}
    assert set(r.local_candidate_types) == set(r.remote_candidate_types) == {"relay"}
    assert r.selected
    assert set(r.selected) == {("relay", "relay")}
    c2s, s2c = tap.counts("c2s"), tap.counts("s2c")
    # Two allocations (one per peer connection), a channel each towards the other relay;
    # ICE checks, DTLS and SCTP all travel as ChannelData.
    assert s2c["Allocate success"] == 2
    assert c2s["ChannelBind request"] >= 2
    assert c2s["Send indication"] == 0
    assert c2s["ChannelData"] > 10
    assert s2c["ChannelData"] > 10


def test_aiortc_plain_function_returns_the_messages(turn: tp.TurnServer) -> None:
    url = f"turn:{tp.LOOPBACK}:{turn.port}?transport=udp"
    assert tp.aiortc_datachannel(url, "alice", "wonderland", 30, ["a", "b"]) == ["a", "b"]


# -- our own client (the load generator's), which the benchmarks rely on


@pytest.fixture
def peer_socket() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((tp.LOOPBACK, 0))
        s.settimeout(2)
        yield s


def test_own_client_relays_by_send_indication_and_by_channel(
    turn: tp.TurnServer, peer_socket: socket.socket
) -> None:
    peer = peer_socket.getsockname()
    with tp.TurnUdpClient((turn.host, turn.port), "user", "pass") as c:
        relayed = c.allocate()
        assert _in_relay_range(turn, relayed)
        assert c.mapped == c.local
        assert c.lifetime is not None
        assert c.lifetime > 0

        # No permission yet: what the peer sends to the relay is dropped.
        peer_socket.sendto(b"too early", relayed)
        with pytest.raises(TimeoutError):
            c.receive(0.3)

        c.create_permission(peer)
        c.send_indication(peer, b"by Send")
        data, src = peer_socket.recvfrom(2048)
        assert (data, src) == (b"by Send", relayed)
        peer_socket.sendto(b"back by Data", relayed)
        assert c.receive() == (peer, b"back by Data", "Data indication")

        c.channel_bind(0x4321, peer)
        c.send_channel(0x4321, b"by channel")
        data, src = peer_socket.recvfrom(2048)
        assert (data, src) == (b"by channel", relayed)
        peer_socket.sendto(b"back by channel", relayed)
        assert c.receive() == (peer, b"back by channel", "ChannelData")

        assert c.refresh(300) > 0
        c.release()
        # After a Refresh with LIFETIME 0 the relay goes quiet -- coturn only within a
        # second or two (it reaps deleted allocations on a 1 s timer), so poll for it.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            peer_socket.sendto(b"after release", relayed)
            try:
                c.receive(0.25)
            except TimeoutError:
                break
        else:
            pytest.fail("the relay still relays 5 s after the allocation was deleted")


def test_own_client_is_refused_with_a_wrong_password(turn: tp.TurnServer) -> None:
    with tp.TurnUdpClient((turn.host, turn.port), "user", "wrong") as c:
        with pytest.raises(tp.TurnError) as err:
            c.allocate()
        assert err.value.code == 401


def test_own_client_cannot_reach_a_peer_off_loopback(turn: tp.TurnServer) -> None:
    # The harness's servers relay to loopback peers only: a permission for 192.0.2.1
    # (TEST-NET-1) is refused.  (CreatePermission itself sends nothing to the peer, and
    # no data is sent here, so not a datagram leaves the host even if one were granted.)
    with tp.TurnUdpClient((turn.host, turn.port), "user", "pass") as c:
        c.allocate()
        with pytest.raises(tp.TurnError) as err:
            c.create_permission(("192.0.2.1", 9))
        assert err.value.code == 403


def test_many_concurrent_allocations_get_distinct_relays(turn: tp.TurnServer) -> None:
    async def run() -> tp.ManyAllocations:
        many = await tp.allocate_many((turn.host, turn.port), "user", "pass", 60, concurrency=20)
        try:
            await asyncio.gather(*(tp.async_release(a) for a in many.allocations))
        finally:
            many.close()
        return many

    many = asyncio.run(run())
    assert many.errors == []
    relays = {a.relayed for a in many.allocations}
    assert len(relays) == 60
    assert all(_in_relay_range(turn, r) for r in relays)
    assert max(many.latencies) < 2


def test_load_generator_is_counted_at_the_peer(
    turn: tp.TurnServer, peer_socket: socket.socket
) -> None:
    peer = peer_socket.getsockname()
    argv = tp.blast_argv((turn.host, turn.port), "user", "pass", peer, 100, 0.5, rate=2000)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        try:
            count = tp.count_until(
                peer_socket, lambda: proc.poll() is not None, time.monotonic() + 15
            )
            out, _ = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0
    sent = json.loads(out)["sent"]
    assert 500 <= sent <= 1100
    assert count.packets == sent
    assert count.bytes == 100 * sent
    assert count.dropped == 0
    assert len(count.sources) == 1
    assert all(_in_relay_range(turn, s) for s in count.sources)


# -- TURN REST API credentials (coturn's --use-auth-secret)


def test_rest_credentials_work_for_every_tool(turn_rest: tp.TurnServer) -> None:
    user, password = tp.rest_credentials(SECRET, "carol")
    assert tp.aioice_exchange(tp.LOOPBACK, turn_rest.port, user, password) == [
        b"hello",
        b"anyedge",
    ]
    with tp.TurnUdpClient((turn_rest.host, turn_rest.port), user, password) as c:
        assert _in_relay_range(turn_rest, c.allocate())
    if tp.coturn_missing() is None:
        r = tp.run_uclient(tp.LOOPBACK, turn_rest.port, "dave", None, secret=SECRET, messages=5)
        assert (r["returncode"], r["sent"], r["received"]) == (0, 5, 5), r["output"]


@pytest.mark.parametrize(
    ("secret", "ttl"), [(SECRET, -60), ("another-secret", 3600)], ids=["expired", "wrong-secret"]
)
def test_rest_credentials_expired_or_forged_are_refused(
    turn_rest: tp.TurnServer, secret: str, ttl: int
) -> None:
    user, password = tp.rest_credentials(secret, "carol", ttl=ttl)
    with tp.TurnUdpClient((turn_rest.host, turn_rest.port), user, password) as c:
        with pytest.raises(tp.TurnError) as err:
            c.allocate()
        assert err.value.code == 401


def test_a_multi_worker_server_is_measured_with_its_workers(tmp_path: Path) -> None:
    """``bench_turn.py --workers 2`` reads CPU, memory and descriptors of the whole process
    tree: anyedge's supervisor relays nothing, its two workers do."""
    server = tp.anyedge_server(
        tmp_path, tp.free_port(), users=USERS, relay_ports=tp.free_port_range(200), workers=2
    )
    with server:
        tree = tp.process_tree(server.pid)
        assert len(tree) == 3  # the supervisor and two workers
        own = sum(len(os.listdir(f"/proc/{p}/fd")) for p in tree)
        assert tp.open_fds(server.pid) == own
        assert tp.rss_kib(server.pid) > tp.rss_kib(tree[1])
