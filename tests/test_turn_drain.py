"""Draining a relay before maintenance (RFC 8489 §10, RFC 8656): new Allocates get 300
Try Alternate with ALTERNATE-SERVER (and ALTERNATE-DOMAIN) while existing allocations
go on until they expire.

The core is driven in memory; then a real ``anyedge turn serve`` started with
``--drain`` (two workers) is taken out of and back into drain mode with SIGUSR2 and
SIGUSR1, which its supervisor passes on to the workers, and
coturn's ``turnutils_uclient`` follows its 300 to a second relay and relays there.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import turn_peers as tp
from anyedge.proto.stun import Attr, Class, Method, check_integrity
from anyedge.proto.turn import Drain, ToClient, ToPeer, TurnServer
from anyedge.services.turn.metrics import TurnCollector
from test_turn_server import (
    CLIENT6,
    PEER,
    T0,
    Client,
    allocated,
    attr,
    error_code,
    make_server,
    relays_of,
)

ALTERNATES = (("198.51.100.9", 3478), ("2001:db8::9", 3478))


def test_a_draining_relay_sends_new_allocations_elsewhere_and_keeps_old_ones() -> None:
    server = make_server()
    old, resp, _ = allocated(server)
    (relay,) = relays_of(resp)
    old.bind(T0, 0x4001, PEER)
    server.drain(Drain(ALTERNATES, "turn-b.example"))
    assert server.counters.draining == 1

    new = Client(server, addr=("85.10.0.9", 4000))
    challenge, _ = new.request(T0, Method.ALLOCATE, [], signed=False)
    assert error_code(challenge) == 401  # nobody is redirected before authenticating
    moved, out = new.allocate(T0)
    assert error_code(moved) == 300
    assert attr(moved, Attr.ALTERNATE_SERVER) == ALTERNATES[0]
    assert attr(moved, Attr.ALTERNATE_DOMAIN) == "turn-b.example"
    wire = next(o.data for o in out if isinstance(o, ToClient))
    assert check_integrity(wire, moved, new.key)  # signed: nobody can forge a redirect
    assert (server.counters.allocations, server.counters.redirected) == (1, 1)

    # the old allocation is refreshed and relays both ways
    assert old.ok(T0 + 200, Method.REFRESH, [(Attr.LIFETIME, (600).to_bytes(4, "big"))])
    assert old.send(T0 + 200, b"\x40\x01\x00\x02hi") == [ToPeer(relay, PEER, b"hi")]
    back = server.receive_from_peer(T0 + 200, relay, PEER, b"yo")
    assert [type(o) for o in back] == [ToClient]
    # its 5-tuple's second Allocate still gets 437, not a redirect
    again, _ = old.allocate(T0 + 200)
    assert error_code(again) == 437

    exported = metrics_of(server)
    assert exported["anyedge_turn_draining"] == 1
    assert exported["anyedge_turn_refusals_total/draining"] == 1

    server.drain(None)
    assert new.allocate(T0 + 201)[0].cls == Class.SUCCESS
    assert metrics_of(server)["anyedge_turn_draining"] == 0


def metrics_of(server: TurnServer) -> dict[str, float]:
    """What Prometheus would scrape: name (and reason, if any) -> value."""
    out = {}
    for family in TurnCollector(server.counters, 0).collect():
        for s in family.samples:
            reason = s.labels.get("reason")
            out[s.name + (f"/{reason}" if reason else "")] = s.value
    return out


def test_an_alternate_of_the_clients_family_or_508() -> None:
    server = make_server()
    server.drain(Drain(ALTERNATES))
    moved, _ = Client(server, addr=CLIENT6).allocate(T0)
    assert error_code(moved) == 300
    assert attr(moved, Attr.ALTERNATE_SERVER) == ALTERNATES[1]
    assert moved.get(Attr.ALTERNATE_DOMAIN) is None
    server.drain(Drain(ALTERNATES[:1]))
    assert error_code(Client(server, addr=CLIENT6).allocate(T0)[0]) == 508
    server.drain(Drain())
    assert error_code(Client(server).allocate(T0)[0]) == 508


def _until(what: Callable[[], bool], why: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


@pytest.mark.slow
def test_serve_drains_on_its_flag_and_signals(tmp_path: Path) -> None:
    if (why := tp.coturn_missing()) is not None:
        pytest.skip(why)
    users = {"user": "pass"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    b_port = tp.free_port()
    drain = f"drain: {{alternates: ['127.0.0.1:{b_port}'], domain: turn-b.example}}\n"
    with (
        tp.anyedge_server(tmp_path / "b", b_port, users=users, relay_ports=tp.free_port_range(50)),
        tp.anyedge_server(
            tmp_path / "a",
            tp.free_port(),
            users=users,
            relay_ports=tp.free_port_range(50),
            extra_yaml=drain,
            serve_args=["--drain"],
            workers=2,  # the supervisor passes the signals on to both
        ) as a,
        TurnUdpClientPair(a.address) as (client, peer),
    ):
        with pytest.raises(tp.TurnError) as refused:
            client.allocate()
        assert refused.value.code == 300
        os.kill(a.pid, signal.SIGUSR2)
        _until(lambda: a.log_tail(200).count("drain_stopped") == 2, "no drain_stopped logged")
        relayed = client.allocate()
        client.channel_bind(0x4001, peer.getsockname())

        os.kill(a.pid, signal.SIGUSR1)
        _until(lambda: a.log_tail(200).count('"draining"') == 4, "not drained again")
        # a new client follows the 300 to relay b and relays there
        r = tp.run_uclient(tp.LOOPBACK, a.port, "user", "pass", messages=5)
        assert r["returncode"] == 0, r["output"][-2000:]
        assert (r["sent"], r["received"], r["lost"]) == (5, 5, 0)
        assert any("300" in e for e in r["errors"])
        # the allocation made before goes on: data both ways, and a refresh
        client.send_channel(0x4001, b"still here")
        data, source = peer.recvfrom(100)
        assert (data, source) == (b"still here", relayed)
        peer.sendto(b"and back", relayed)
        assert client.receive()[1:] == (b"and back", "ChannelData")
        assert client.refresh(600) == 600


class TurnUdpClientPair:
    """A TURN client of ``server`` and a UDP peer socket on loopback, closed together."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.client = tp.TurnUdpClient(server, "user", "pass", timeout=3.0)
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind((tp.LOOPBACK, 0))
        self.peer.settimeout(3.0)

    def __enter__(self) -> tuple[tp.TurnUdpClient, socket.socket]:
        return self.client, self.peer

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.peer.close()
