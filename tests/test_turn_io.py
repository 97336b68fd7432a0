"""The TURN service's IO layer in this process, on loopback sockets: what it does with
the core's outputs at the edges of an allocation's life, and what it exports."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from anyedge.proto.turn import CloseRelay, OpenRelay, ToPeer
from anyedge.services.turn.config import load_config
from anyedge.services.turn.io import TurnService


def _config(tmp_path: Path) -> Path:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "turn.yaml"
    conf.write_text(
        "realm: io.test\n"
        f"listen: [{{transport: udp, address: 127.0.0.1, port: {port}}}]\n"
        "relay: {ipv4: 127.0.0.1, ports: [20000, 20999]}\n"  # below the ephemeral ports
        "auth: {fleet_keys: [a-fleet-key], users: {a: b}}\n"
        "workers: 1\n"
    )
    return conf


def test_data_sent_while_the_relay_opens_is_not_lost_when_it_closes(tmp_path: Path) -> None:
    """A client that sends right after its Allocate and deletes the allocation at once
    (Refresh 0) still gets its data out: nothing waits in a queue that closing drops."""

    async def run() -> list[bytes]:
        service = TurnService(load_config(_config(tmp_path)))
        await service.start()
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        try:
            relay = service.ports.take(4)
            assert relay is not None
            service.carry_out(
                [
                    OpenRelay(1, relay, 4),
                    *(ToPeer(relay, peer.getsockname(), b"early %d" % i) for i in range(3)),
                    CloseRelay(1, relay),
                ]
            )
            service.ports.give_back(relay)
            await asyncio.sleep(0.2)
            got = []
            while True:
                try:
                    got.append(peer.recv(100))
                except BlockingIOError:
                    return got
        finally:
            peer.close()
            await service.close()

    assert asyncio.run(run()) == [b"early 0", b"early 1", b"early 2"]
