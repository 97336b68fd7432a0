"""Anycast IPsec distribution: a Child SA negotiated on one server reaches every server
through the embedded store, encrypted with the fleet key; each server can then decrypt
the peer's packets and encrypt packets the peer accepts, with no new IKE exchange;
rekeys and deletes follow the same way."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from anyedge.proto.esp import EspEndpoint
from anyedge.proto.ike import ChildDown, ChildSA, ChildUp, Responder
from anyedge.proto.ike import codec as c
from anyedge.store import EmbeddedReplica, EmbeddedWriter
from anyedge.transit.ipsec_store import PREFIX, FleetKey, SaInstaller, publish, sa_key
from ike_support import LOCAL, PEER, config, handshake, initiator, ip4, mirror, sends

SERVERS = 3


class Server:
    def __init__(self, writer: EmbeddedWriter, fleet: FleetKey, index: int) -> None:
        self.replica = EmbeddedReplica(writer.address)
        self.esp = EspEndpoint(index, SERVERS)
        self.installer = SaInstaller(self.replica, fleet, self.esp.install, self.esp.remove)

    def close(self) -> None:
        self.installer.close()
        self.replica.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[EmbeddedWriter, FleetKey, list[Server]]]:
    writer = EmbeddedWriter(tmp_path / "store.db")
    key = FleetKey(os.urandom(32))
    servers = [Server(writer, key, k) for k in range(SERVERS)]
    try:
        yield writer, key, servers
    finally:
        for s in servers:
            s.close()
        writer.close()


def _sync(servers: list[Server], seq: int) -> None:
    for s in servers:
        assert s.installer.wait(seq, timeout=5)


def test_sa_from_one_handshake_works_on_every_server(
    fleet: tuple[EmbeddedWriter, FleetKey, list[Server]],
) -> None:
    writer, key, servers = fleet
    r = Responder(config(), 0.0)  # the IKE responder of server 0
    i = initiator()
    _, up = handshake(r, i)
    _sync(servers, publish(writer, key, "up", up.child))
    peer = EspEndpoint()
    peer.install(mirror(up.child))
    stored = writer.state()[sa_key(up.child.spi_in)]
    assert up.child.key_in not in stored
    assert up.child.key_out not in stored
    seqs = set()
    for s in servers:
        _, packet = peer.encrypt(ip4("203.0.113.10", "198.51.100.10"), 0.0)  # type: ignore[misc]
        assert s.esp.decrypt(packet) == ip4("203.0.113.10", "198.51.100.10")
        _, back = s.esp.encrypt(ip4("198.51.100.10", "203.0.113.10"), 0.0)  # type: ignore[misc]
        assert peer.decrypt(back) == ip4("198.51.100.10", "203.0.113.10")
        seqs.add(int.from_bytes(back[4:8], "big"))
    assert len(seqs) == SERVERS  # each server its own slice of the sequence space
    assert r.counters.established == 1  # and no other handshake

    # a rekey on server 0: every server moves to the new SA; the delete removes the old
    outs = r.receive(5, i.rekey_child(i.child_spi), PEER, LOCAL)
    (new,) = [o.child for o in outs if isinstance(o, ChildUp)]
    i.take_rekey_child(sends(outs)[0])
    _sync(servers, publish(writer, key, "up", new))
    for s in servers:
        used, _ = s.esp.encrypt(ip4("198.51.100.10", "203.0.113.10"), 0.0)  # type: ignore[misc]
        assert used == new
    outs = r.receive(6, i.delete_child((up.child.spi_out).to_bytes(4, "big")), PEER, LOCAL)
    assert [o for o in outs if isinstance(o, ChildDown)]
    _sync(servers, publish(writer, key, "down", up.child))
    for s in servers:
        assert set(s.esp.inbound) == {new.spi_in}
        assert s.installer.counters.removed == 1
    assert sends(outs)


def test_a_record_under_another_key_is_refused(
    fleet: tuple[EmbeddedWriter, FleetKey, list[Server]],
) -> None:
    writer, _, servers = fleet
    _, up = handshake(Responder(config(), 0.0), initiator())
    seq = publish(writer, FleetKey(os.urandom(32)), "up", up.child)
    name = sa_key(up.child.spi_in)
    moved = writer.put(
        PREFIX + "00000001", writer.state()[name]
    )  # a record copied to another SPI's key
    _sync(servers, max(seq, moved))
    for s in servers:
        assert s.esp.inbound == {}
        assert s.installer.counters.rejected == 2


def test_a_server_that_starts_late_installs_what_is_there(tmp_path: Path) -> None:
    with EmbeddedWriter(tmp_path / "s.db") as writer:
        key = FleetKey(os.urandom(32))
        _, up = handshake(Responder(config(), 0.0), initiator())
        seq = publish(writer, key, "up", up.child)
        late = Server(writer, key, 0)
        try:
            assert late.installer.wait(seq, timeout=5)
            assert set(late.esp.inbound) == {up.child.spi_in}
            assert isinstance(late.esp.inbound[up.child.spi_in].child, ChildSA)
        finally:
            late.close()


def test_another_server_adopts_the_ike_sa_and_answers_it(
    fleet: tuple[EmbeddedWriter, FleetKey, list[Server]],
) -> None:
    """The IKE SA's record reaches server 1, whose responder then answers the peer's
    liveness check, Child SA rekey and delete: no new IKE exchange."""
    from anyedge.proto.ike import IkeUpdate
    from anyedge.transit.ipsec_store import publish_ike

    writer, key, servers = fleet
    r0, r1 = Responder(config(), 0.0), Responder(config(), 0.0)
    servers[1].installer.close()
    servers[1].installer = SaInstaller(
        servers[1].replica, key, servers[1].esp.install, servers[1].esp.remove, r1.adopt, r1.forget
    )
    i = initiator()
    (resp,) = sends(r0.receive(0, i.sa_init(), PEER, LOCAL))
    i.take_sa_init(resp)
    outs = r0.receive(0, i.auth(), PEER, LOCAL)
    m = i.open(sends(outs)[0])
    (update,) = [o for o in outs if isinstance(o, IkeUpdate)]
    (up,) = [o.child for o in outs if isinstance(o, ChildUp)]
    publish(writer, key, "up", up)
    _sync(servers, publish_ike(writer, key, update.spi_r, update.record))
    assert servers[1].installer.counters.ike_adopted == 1
    assert m.find(c.SA)

    # the route moves: server 1 gets the peer's next requests
    assert i.open(sends(r1.receive(1, i.informational([]), PEER, LOCAL))[0]).payloads == []
    outs = r1.receive(2, i.rekey_child(i.child_spi), PEER, LOCAL)
    (new,) = [o.child for o in outs if isinstance(o, ChildUp)]
    assert new.replaces == up.spi_in
    assert i.take_rekey_child(sends(outs)[0])[1] == new.key_in
    outs = r1.receive(3, i.delete_child(up.spi_out.to_bytes(4, "big")), PEER, LOCAL)
    assert ChildDown(up.spi_in, up.spi_out) in outs
    assert r1.counters.established == 0  # it never made an IKE SA of its own
    # an older record (the origin's, before these exchanges) does not take r1 back
    assert not r1.adopt(update.record)
