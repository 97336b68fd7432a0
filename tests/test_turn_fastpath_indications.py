"""Send and Data indications through the relay's kernel fast path with real packets:
``anyedge turn serve`` with ``fast_path:`` between a client's and a peer's namespace
(``test_turn_fastpath.relay_lab``), and the project's own TURN client
(``turn_peers.TurnUdpClient``) with a permission and no channel.

Once the permission is in the kernel's maps, the peer's datagrams reach the client as
Data indications and the client's Send indications reach the peer, every one relayed
in XDP: the relay's packet totals (the core's counters, fast path included) equal the
fast path's own.  A Send indication with FINGERPRINT is relayed in XDP when its CRC is
right and left to user space (which drops it) when not; a peer without a permission
gets nothing through; a released allocation leaves the maps at once.  With one worker
and with two (which share the maps), and in generic XDP (where the Data indication
grows into the socket buffer's head- and tailroom).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from anyedge.adapters import netns
from test_turn_fastpath import (
    PASSWORD,
    PEER,
    SERVER,
    SO_RCVBUFFORCE,
    STRANGER,
    USER,
    _udp,
    relay_lab,
)
from turn_peers import Attr, Class, Method, TurnUdpClient, encode_message, xor_address

pytestmark = pytest.mark.lab


@pytest.mark.parametrize(
    ("workers", "mode"),
    [(1, "native"), (2, "native"), (1, "generic")],
    ids=["1 worker", "2 workers", "generic XDP"],
)
def test_send_and_data_indications_relay_in_the_kernel(
    tmp_path: Path, workers: int, mode: str
) -> None:
    with relay_lab(tmp_path, workers, mode) as relay:
        assert "fast_path_unavailable" not in relay.log.read_text()
        peer, stranger = _udp(relay.peer_ns, PEER), _udp(relay.peer_ns, STRANGER)
        with netns.entered(relay.client_ns):
            client = TurnUdpClient((SERVER, 3478), USER, PASSWORD, local=("0.0.0.0", 0))
        client.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
        with client, peer, stranger:
            relayed = client.allocate()
            client.create_permission(PEER)
            relay.port = next(p for p in (9641, 9642) if relay.port_sessions(p))
            relay.wait(
                "the permission in the kernel",
                lambda m: m["anyedge_turn_fast_path_permissions"] == 1,
            )
            n = 100
            # the peer first (its ARP teaches the relay its MAC: the FIB needs it)
            for i in range(n):
                peer.sendto(b"to the client %03d" % i + bytes(i % 4), relayed)
            back = [client.receive(timeout=3.0) for _ in range(n)]
            assert {(src, kind) for src, _, kind in back} == {(PEER, "Data indication")}
            assert sorted(back, key=lambda b: b[1])[7][1] == b"to the client 007" + bytes(3)
            assert sorted(d[:17] for _, d, _ in back) == [
                b"to the client %03d" % i for i in range(n)
            ]
            for i in range(n):
                client.send_indication(PEER, b"to the peer %03d" % i + bytes(i % 7))
            got = [peer.recvfrom(2048) for _ in range(n)]
            assert {src for _, src in got} == {relayed}
            assert sorted(d for d, _ in got) == sorted(
                b"to the peer %03d" % i + bytes(i % 7) for i in range(n)
            )
            m = relay.wait(
                "the kernel's counters charged back",
                lambda m: m["anyedge_turn_fast_path_packets_total:to_peer"] >= n,
            )
            for d in ("to_peer", "to_client"):
                assert m[f"anyedge_turn_fast_path_packets_total:{d}"] == n
                assert m[f"anyedge_turn_packets_total:{d}"] == n  # none in user space
            if relay.port == 9641:  # worker 0 shows the program's own counters
                assert m["anyedge_turn_fast_path_frames_total:send_to_peer"] == n
                assert m["anyedge_turn_fast_path_frames_total:data_to_client"] == n
            sent = sum(15 + i % 7 for i in range(n))
            assert m["anyedge_turn_fast_path_bytes_total:to_peer"] == sent
            (session,) = relay.sessions()
            assert session["to_peer"] == {"packets": n, "bytes": sent}

            # with FINGERPRINT: the program checks the CRC and relays it; with a wrong
            # one it leaves it to user space, which drops it
            tid = bytes(range(12))
            attrs = [(Attr.XOR_PEER_ADDRESS, xor_address(PEER, tid)), (Attr.DATA, b"checked")]
            signed = encode_message(Method.SEND, Class.INDICATION, tid, attrs, fingerprint=True)
            client.sock.send(signed)
            assert peer.recvfrom(2048) == (b"checked", relayed)
            client.sock.send(signed[:-1] + bytes([signed[-1] ^ 1]))
            relay.wait(
                "the wrong FINGERPRINT dropped in user space",
                lambda m: m["anyedge_turn_dropped_total:malformed"] == 1,
            )
            m = relay.wait(
                "the signed one charged back",
                lambda m: m["anyedge_turn_fast_path_packets_total:to_peer"] == n + 1,
            )
            assert m["anyedge_turn_packets_total:to_peer"] == n + 1
            peer.settimeout(0.5)
            with pytest.raises(TimeoutError):
                peer.recvfrom(2048)

            # a peer without a permission gets nothing through
            stranger.sendto(b"let me in", relayed)
            with pytest.raises(TimeoutError):
                client.receive(timeout=1.0)

            # released: out of the maps (the worker takes it out when it closes the relayed
            # address, which may come just after the answer the client reads); its Send
            # indications reach user space
            peer.settimeout(3.0)
            client.release()
            relay.wait(
                "the permission out of the kernel's maps",
                lambda m: m["anyedge_turn_fast_path_permissions"] == 0,
            )
            client.send_indication(PEER, b"after release")
            relay.wait(
                "a Send indication after release in user space",
                lambda m: m["anyedge_turn_dropped_total:no_allocation"] >= 1,
            )
            peer.settimeout(0.5)
            with pytest.raises(TimeoutError):
                peer.recvfrom(2048)
