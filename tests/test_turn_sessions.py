"""The sessions view: every allocation with its counters, from the core, over HTTP
(``/sessions`` on each worker's metrics port) and through ``anyedge turn sessions``.

In memory the view follows an allocation through permissions, channels and data both
ways; then a real two-worker ``anyedge turn serve`` relays a client's data to a UDP
peer and back, and the CLI (text and ``--json``) reports exactly those packets.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest

from anyedge.cli.main import main
from anyedge.proto.stun import Attr, Method
from test_turn_server import CLIENT, PEER, PEER2, T0, allocated, relays_of
from test_turn_service import start_relay, stop
from turn_peers import TurnUdpClient


def test_the_core_lists_each_allocation_with_its_counters() -> None:
    client, resp, _ = allocated()
    server = client.server
    (relay,) = relays_of(resp)
    client.bind(T0 + 1, 0x4001, PEER)
    client.permit(T0 + 1, PEER2)
    client.send(T0 + 2, b"\x40\x01\x00\x05hello")
    client.send_indication(T0 + 2, PEER2, b"hi")
    server.receive_from_peer(T0 + 3, relay, PEER, b"back!!")
    (view,) = server.sessions(T0 + 10)
    assert view["client"] == f"{CLIENT[0]}:{CLIENT[1]}"
    assert view["username"] == "alice"
    assert view["relayed"] == [f"{relay[0]}:{relay[1]}"]
    assert (view["age_s"], view["lifetime_left_s"]) == (10.0, 590.0)
    assert view["permissions"] == sorted([PEER[0], PEER2[0]])
    assert view["channels"] == [{"number": 0x4001, "peer": f"{PEER[0]}:{PEER[1]}", "left_s": 591.0}]
    assert view["to_peer"] == {"packets": 2, "bytes": 7}
    assert view["to_client"] == {"packets": 1, "bytes": 6}
    # permissions and channels that ran out are not listed; the allocation goes at the end
    server.tick(T0 + 400)
    assert client.ok(T0 + 400, Method.REFRESH, [(Attr.LIFETIME, (600).to_bytes(4, "big"))])
    (view,) = server.sessions(T0 + 700)
    assert (view["permissions"], view["channels"]) == ([], [])
    server.tick(T0 + 1000)
    assert server.sessions(T0 + 1000) == []


@pytest.mark.slow
def test_turn_sessions_reports_a_running_relays_traffic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    relay = start_relay(tmp_path, workers=2, tls=False)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(5)
        with TurnUdpClient(("127.0.0.1", relay.port), "alice", "wonderland") as c:
            relayed = c.allocate()
            c.channel_bind(0x4001, peer.getsockname())
            for i in range(3):
                c.send_channel(0x4001, b"ping %d" % i)  # 6 bytes each
                assert peer.recvfrom(100)[0] == b"ping %d" % i
            peer.sendto(b"pong", relayed)
            assert c.receive()[1] == b"pong"
            me = f"127.0.0.1:{c.local[1]}"

            conf = str(tmp_path / "turn.yaml")
            assert main(["turn", "sessions", "-c", conf, "--json"]) == 0
            (s,) = [s for s in json.loads(capsys.readouterr().out)["sessions"] if s["client"] == me]
            assert s["relayed"] == [f"{relayed[0]}:{relayed[1]}"]
            assert s["username"] == "alice"
            assert s["worker"] in (0, 1)
            assert s["to_peer"] == {"packets": 3, "bytes": 18}
            assert s["to_client"] == {"packets": 1, "bytes": 4}
            assert s["permissions"] == ["127.0.0.1"]
            assert [ch["number"] for ch in s["channels"]] == [0x4001]
            assert 500 < s["lifetime_left_s"] <= 600

            assert main(["turn", "sessions", "-c", conf]) == 0
            text = capsys.readouterr().out
            assert f"udp {me}" in text
            assert "3 pkt 18 B" in text
            assert text.rstrip().endswith("1 allocation")
            # the endpoint itself: each worker lists its own
            listed = []
            for w in (0, 1):
                url = f"http://127.0.0.1:{relay.metrics + w}/sessions"
                with urllib.request.urlopen(url, timeout=5) as r:
                    doc = json.load(r)
                assert doc["worker"] == w
                listed += doc["sessions"]
            assert [x["client"] for x in listed] == [me]
            c.release()
        assert main(["turn", "sessions", "-c", conf, "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == {"sessions": []}
    finally:
        peer.close()
        stop(relay)
    # the relay is gone: nobody answers
    assert main(["turn", "sessions", "-c", conf]) == 1
    assert "cannot reach the relay" in capsys.readouterr().err


def test_no_metrics_port_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "turn.yaml"
    conf.write_text(
        "realm: x\nlisten: [{transport: udp, address: 127.0.0.1}]\n"
        "auth: {fleet_keys: [a-fleet-key], users: {a: b}}\n"
    )
    assert main(["turn", "sessions", "-c", str(conf)]) == 2
    assert "turn.yaml: metrics.port: not set" in capsys.readouterr().err
