"""The IKEv2 responder, driven in process by the minimal initiator: key derivation
against published vectors, the handshake with both DH groups and key sizes, rekeys,
deletes, liveness, cookies under a flood, and bad input (wrong PSK, unacceptable
proposals and selectors, malformed and forged messages)."""

from __future__ import annotations

import random
import struct
import time

import pytest

from anyedge.proto.ike import (
    ChildDown,
    ChildUp,
    IkeDown,
    Responder,
    Send,
)
from anyedge.proto.ike import codec as c
from anyedge.proto.ike.certs import CertAuth
from anyedge.proto.ike.crypto import (
    DiffieHellman,
    prf_plus,
    psk_auth,
    rekey_skeyseed,
    signed_octets,
    skeyseed,
)
from anyedge.proto.ike.initiator import Initiator, esp_proposal, ike_proposal, spi_bytes
from ike_support import (
    LOCAL,
    PEER,
    PSK,
    config,
    handshake,
    initiator,
    make_ca,
    make_cert,
    sel,
    sends,
)

# NIST CAVP SP 800-135 IKEv2 KDF test vector (SHA-1, 64-bit nonces, 1056-bit DKM), as
# reproduced in the header comment of libreswan's IKEv2 CAVS driver
# (libreswan/libreswan, programs/cavp): SKEYSEED, DKM = prf+(SKEYSEED, Ni|Nr|SPIi|SPIr),
# the Child SA DKM without and with a new DH secret, and the rekeyed SKEYSEED.
CAVP = {
    "gir": "4b2c1f971981a8ad8d0abeafabf38cf75fc8349c148142465ed9c8b516b8be52",
    "gir_new": "863f3c9d06efd39d2b907b97f8699e5dd5251ef64a2a176f36ee40c87d4f9330",
    "ni": "32b50d5f4a3763f3",
    "nr": "9206a04b26564cb1",
    "spii": "34c9e7c188868785",
    "spir": "3ff77d760d2b2199",
    "skeyseed": "a9a7b222b59f8f48645f28a1db5b5f5d7479cba7",
    "dkm": (
        "a14293677cc80ff8f9cc0eee30d895da9d8f405666e30ef0dfcb63c634a46002"
        "a2a63080e514a062768b76606f9fa5e992204fc5a670bde3f10d6b027113936a"
        "5c55b648a194ae587b0088d52204b702c979fa280870d2ed41efa9c549fd1119"
        "8af1670b143d384bd275c5f594cf266b05ebadca855e4249520a441a81157435"
        "a7a56cc4"
    ),
    "dkm_child": (
        "8059e3ee8810e6c3a91bc8bcd2a7a41151b8d0e6ae239c7b38093ad85ef4c581"
        "1a8e7b5d1cdabd9560b2d5e092d1f24e2d4b85eccdf0ad0dc9abd94b51ee7181"
        "4ca6dbc8bb51b6309f5b9545c7eb35cf5580b1e521a8fe20754a2d883ba0c2cf"
        "285f524aea6545b33106bc03e614296d319d41d4b50b3f510b1c0a22f3e66499"
        "4d234cb4"
    ),
    "dkm_child_dh": (
        "bb43244c1860ad65ee1e211ffe8bb3661750c8f89cb9f547df7f4fa61d373016"
        "28190e38c66232eab4b3ab14c400a5197dd3730ed4820a8a10394d51e1c04000"
        "52f63ebd36b0e7ef53aaed31eba4a5080d7d4b5666023a8bbb5ffb7857240f9a"
        "05884d1b7d2f933708450b7b3288f1fc863ab49fa901227cffc06e27899c7054"
        "d56fd74c"
    ),
    "skeyseed_rekey": "63e81194946ebd05df7df5ebf5d8750056bf1f1d",
}


def test_key_derivation_matches_the_cavp_vector() -> None:
    v = {k: bytes.fromhex(x) for k, x in CAVP.items()}
    seed = skeyseed(v["ni"], v["nr"], v["gir"], "sha1")
    assert seed == v["skeyseed"]
    dkm = prf_plus(seed, v["ni"] + v["nr"] + v["spii"] + v["spir"], 132, "sha1")
    assert dkm == v["dkm"]
    sk_d = dkm[:20]
    assert prf_plus(sk_d, v["ni"] + v["nr"], 132, "sha1") == v["dkm_child"]
    assert prf_plus(sk_d, v["gir_new"] + v["ni"] + v["nr"], 132, "sha1") == v["dkm_child_dh"]
    assert rekey_skeyseed(sk_d, v["gir_new"], v["ni"], v["nr"], "sha1") == v["skeyseed_rekey"]


@pytest.mark.parametrize(("group", "key_bits"), [(19, 256), (31, 128), (31, 256), (19, 128)])
def test_handshake_child_keys_agree(group: int, key_bits: int) -> None:
    r = Responder(config(), 0.0)
    i = initiator(group, key_bits)
    m, up = handshake(r, i)
    assert [type(p).__name__ for p in m.payloads] == [
        "Identification",
        "Auth",
        "SA",
        "TrafficSelectors",
        "TrafficSelectors",
    ]
    spi, k_ir, k_ri = i.child_keys(m)
    assert (spi, k_ir, k_ri) == (up.child.spi_in, up.child.key_in, up.child.key_out)
    assert len(k_ir) == key_bits // 8 + 4
    assert up.child.spi_out == int.from_bytes(i.child_spi, "big")
    assert up.child.ts_remote == (sel("203.0.113.0/24"),)
    assert up.child.ts_local == (sel("198.51.100.0/24"),)
    assert r.counters.established == 1
    assert r.half_open == 0


def test_wrong_psk_gets_authentication_failed_and_no_sa() -> None:
    r = Responder(config(), 0.0)
    i = initiator(psk=b"not the edge's key")
    i.take_sa_init(sends(r.receive(0, i.sa_init(), PEER, LOCAL))[0])
    outs = r.receive(0, i.auth(), PEER, LOCAL)
    assert not [o for o in outs if isinstance(o, ChildUp)]
    m = i.open(sends(outs)[0])
    assert [(type(p), p.type) for p in m.payloads] == [(c.Notify, c.AUTHENTICATION_FAILED)]
    assert r.counters.auth_failed == 1
    assert r.sas == {}


def test_flood_of_sa_init_is_answered_with_cookies() -> None:
    r = Responder(config(cookie_threshold=4, half_open_timeout=30), 0.0)
    flood = [initiator() for _ in range(10)]
    answers = [c.decode_message(sends(r.receive(0, i.sa_init(), PEER, LOCAL))[0]) for i in flood]
    assert all(m.find(c.KE) for m in answers[:4])
    for m in answers[4:]:
        assert m.spi_r == bytes(8)
        assert [p.type for p in m.payloads] == [c.COOKIE]
    assert r.half_open == 4
    assert r.counters.cookies_sent == 6
    # the initiator that returns the cookie gets its SA; a made-up cookie gets another cookie
    late = flood[7]
    late.take_sa_init(sends(r.receive(0, late.sa_init(), PEER, LOCAL))[0])
    assert late.cookie is not None
    late.take_sa_init(sends(r.receive(0, late.sa_init(), PEER, LOCAL))[0])
    assert late.spi_r != bytes(8)
    forger = flood[8]
    forger.cookie = b"\x00" + bytes(32)
    assert c.decode_message(sends(r.receive(0, forger.sa_init(), PEER, LOCAL))[0]).find(
        c.Notify, c.COOKIE
    )
    assert r.receive(0, late.auth(), PEER, LOCAL)  # it completes
    # half-open SAs expire; then no cookie is needed
    assert r.next_deadline() == 30
    r.tick(31)
    assert r.half_open == 0
    assert c.decode_message(sends(r.receive(31, initiator().sa_init(), PEER, LOCAL))[0]).find(c.KE)


def test_ke_of_another_group_gets_invalid_ke_payload() -> None:
    r = Responder(config(), 0.0)
    i = initiator(group=19)
    m = c.decode_message(sends(r.receive(0, i.sa_init(offered=(31,)), PEER, LOCAL))[0])
    assert m.find(c.Notify, c.INVALID_KE_PAYLOAD)[0].data == struct.pack("!H", 31)
    assert r.sas == {}


def test_unacceptable_proposal_gets_no_proposal_chosen() -> None:
    r = Responder(config(), 0.0)
    i = initiator()
    cbc = c.Proposal(
        1,
        c.PROTO_IKE,
        b"",
        (
            c.Transform(c.T_ENCR, 12, 256),
            c.Transform(c.T_PRF, 5),
            c.Transform(c.T_INTEG, 12),
            c.Transform(c.T_DH, 19),
        ),
    )
    msg = c.Message(
        i.spi_i,
        bytes(8),
        c.IKE_SA_INIT,
        c.FLAG_INITIATOR,
        0,
        [c.SA((cbc,)), c.KE(19, i.dh.public), c.Nonce(i.ni)],
    )
    m = c.decode_message(sends(r.receive(0, c.encode_message(msg), PEER, LOCAL))[0])
    assert m.find(c.Notify, c.NO_PROPOSAL_CHOSEN)
    assert r.counters.no_proposal == 1


def test_critical_unknown_payload_is_refused() -> None:
    r = Responder(config(), 0.0)
    i = initiator()
    msg = c.Message(
        i.spi_i,
        bytes(8),
        c.IKE_SA_INIT,
        c.FLAG_INITIATOR,
        0,
        [c.SA((ike_proposal(),)), c.KE(19, i.dh.public), c.Nonce(i.ni), c.Unknown(200, b"x", True)],
    )
    m = c.decode_message(sends(r.receive(0, c.encode_message(msg), PEER, LOCAL))[0])
    assert m.find(c.Notify, c.UNSUPPORTED_CRITICAL_PAYLOAD)


def test_selectors_are_narrowed_or_refused() -> None:
    r = Responder(config(), 0.0)
    wide = Initiator(PSK, b"c", (sel("0.0.0.0/0"),), (sel("198.51.100.128/25"),))
    _, up = handshake(r, wide)
    assert up.child.ts_remote == (sel("203.0.113.0/24"),)
    assert up.child.ts_local == (sel("198.51.100.128/25"),)
    other = Initiator(PSK, b"c", (sel("100.64.0.0/10"),), (sel("198.51.100.0/24"),))
    other.take_sa_init(sends(r.receive(0, other.sa_init(), PEER, LOCAL))[0])
    outs = r.receive(0, other.auth(), PEER, LOCAL)
    m = other.open(sends(outs)[0])
    assert m.find(c.Notify, c.TS_UNACCEPTABLE)
    assert not [o for o in outs if isinstance(o, ChildUp)]
    assert m.find(c.Auth)  # the IKE SA itself is up (RFC 7296 §1.2)


def test_retransmitted_requests_get_the_same_response() -> None:
    r = Responder(config(), 0.0)
    i = initiator()
    init = i.sa_init()
    first = sends(r.receive(0, init, PEER, LOCAL))[0]
    assert sends(r.receive(0.5, init, PEER, LOCAL)) == [first]
    i.take_sa_init(first)
    auth = i.auth()
    a1 = sends(r.receive(1, auth, PEER, LOCAL))
    assert sends(r.receive(1.5, auth, PEER, LOCAL)) == a1
    assert r.counters.retransmits == 2
    assert r.counters.established == 1


@pytest.mark.parametrize("pfs", [False, True])
def test_child_rekey_then_delete_of_the_old_one(pfs: bool) -> None:
    r = Responder(config(), 0.0)
    i = initiator()
    _, up = handshake(r, i)
    old_out = i.child_spi
    outs = r.receive(5, i.rekey_child(old_out, pfs=pfs), PEER, LOCAL)
    (new,) = [o for o in outs if isinstance(o, ChildUp)]
    assert new.child.replaces == up.child.spi_in
    spi, k_ir, k_ri = i.take_rekey_child(sends(outs)[0])
    assert (spi, k_ir, k_ri) == (new.child.spi_in, new.child.key_in, new.child.key_out)
    assert k_ir != up.child.key_in
    outs = r.receive(6, i.delete_child(old_out), PEER, LOCAL)
    assert [o for o in outs if isinstance(o, ChildDown)] == [
        ChildDown(up.child.spi_in, up.child.spi_out)
    ]
    m = i.open(sends(outs)[0])
    assert m.find(c.Delete)[0].spis == (spi_bytes(up.child.spi_in),)
    # a rekey of an SA that is gone
    m = i.open(sends(r.receive(7, i.rekey_child(old_out), PEER, LOCAL))[0])
    assert m.find(c.Notify, c.CHILD_SA_NOT_FOUND)


def test_ike_rekey_moves_children_and_the_old_sa_is_deleted() -> None:
    r = Responder(config(), 0.0)
    i = initiator()
    _, up = handshake(r, i)
    i.take_rekey_ike(sends(r.receive(5, i.rekey_ike(), PEER, LOCAL))[0])
    assert len(r.sas) == 2
    old_spi_i, old_spi_r, old_ei, old_er, old_mid = i.old
    new_ids = (i.spi_i, i.spi_r, i.sk_ei, i.sk_er, i.mid)
    i.spi_i, i.spi_r, i.sk_ei, i.sk_er, i.mid = old_spi_i, old_spi_r, old_ei, old_er, old_mid
    outs = r.receive(6, i.informational([c.Delete(c.PROTO_IKE)]), PEER, LOCAL)
    assert [type(o) for o in outs] == [Send, IkeDown]  # the Child SA lives on under the new IKE SA
    i.spi_i, i.spi_r, i.sk_ei, i.sk_er, i.mid = new_ids
    assert i.open(sends(r.receive(7, i.informational([]), PEER, LOCAL))[0]).payloads == []
    outs = r.receive(8, i.informational([c.Delete(c.PROTO_IKE)]), PEER, LOCAL)
    assert ChildDown(up.child.spi_in, up.child.spi_out) in outs
    assert r.sas == {}


def test_liveness_check_is_answered_and_message_ids_are_enforced() -> None:
    r = Responder(config(), 0.0)
    i = initiator()
    handshake(r, i)
    assert i.open(sends(r.receive(1, i.informational([]), PEER, LOCAL))[0]).payloads == []
    assert (
        r.receive(2, i._request(c.INFORMATIONAL, [], mid=9), PEER, LOCAL) == []
    )  # out of window: dropped


def test_malformed_and_forged_messages_are_dropped_and_counted() -> None:
    r = Responder(config(), 0.0)
    i = initiator()
    handshake(r, i)
    assert r.receive(0, b"\x00" * 10, PEER, LOCAL) == []
    assert r.receive(0, i.sa_init()[:-3], PEER, LOCAL) == []
    forged = bytearray(i.informational([]))
    forged[-1] ^= 1  # the ICV no longer matches
    assert r.receive(0, bytes(forged), PEER, LOCAL) == []
    assert r.counters.malformed == 3


def test_fuzz_responder_never_raises() -> None:
    """5,000 mutated requests (seeded) against a responder with an established SA."""
    rng = random.Random(4306)
    r = Responder(config(cookie_threshold=1000), 0.0)
    i = initiator()
    handshake(r, i)
    seeds = [
        initiator().sa_init(),
        i.informational([]),
        i.delete_child(i.child_spi),
        i.rekey_child(i.child_spi),
    ]
    for n in range(5000):
        b = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 3)):
            pos = rng.randrange(len(b))
            b[pos] = rng.randrange(256)
        r.receive(n, bytes(b), PEER, LOCAL)
    assert r.counters.received >= 5000 + 2


def test_child_sa_answers_name_a_dh_group_only_when_a_ke_came() -> None:
    """PFS: the answer names the KE's group even when the proposal lists another first;
    an IKE_AUTH Child SA offer with DH groups (no KE there) is answered without one."""
    r = Responder(config(), 0.0)
    i = initiator(group=19)
    i.take_sa_init(sends(r.receive(0, i.sa_init(), PEER, LOCAL))[0])
    idi = c.Identification(c.ID_FQDN, i.my_id, True)
    mac = psk_auth(PSK, i.init_request, i.nr, i.sk_pi, idi.encode())
    auth = i._request(
        c.IKE_AUTH,
        [idi, c.Auth(c.AUTH_SHARED_KEY, mac), c.SA((esp_proposal(i.child_spi, 256, (19,)),)),
         c.TrafficSelectors(i.tsi, True), c.TrafficSelectors(i.tsr, False)],
    )  # fmt: skip
    m = i.open(sends(r.receive(0, auth, PEER, LOCAL))[0])
    assert [t.type for t in m.find(c.SA)[0].proposals[0].transforms] == [c.T_ENCR, c.T_ESN]
    dh = DiffieHellman(19)
    rekey = i._request(
        c.CREATE_CHILD_SA,
        [c.Notify(c.REKEY_SA, protocol=c.PROTO_ESP, spi=i.child_spi),
         c.SA((esp_proposal(b"wxyz", 256, (31, 19)),)), c.Nonce(b"n" * 32), c.KE(19, dh.public),
         c.TrafficSelectors(i.tsi, True), c.TrafficSelectors(i.tsr, False)],
    )  # fmt: skip
    m = i.open(sends(r.receive(1, rekey, PEER, LOCAL))[0])
    dh_ids = [t.id for t in m.find(c.SA)[0].proposals[0].transforms if t.type == c.T_DH]
    assert dh_ids == [19]
    assert m.find(c.KE)[0].group == 19


def _cert_setup(
    peer_ca: bool = True, peer_name: str = "customer.example", days: int = 30
) -> tuple[Responder, Initiator, CertAuth]:
    ca = make_ca()
    edge_cert, edge_key = make_cert(ca, "edge.example")
    issuer = ca if peer_ca else make_ca("another CA")
    peer_cert, peer_key = make_cert(issuer, peer_name, days)
    r = Responder(config(certs=CertAuth(edge_cert, edge_key, (ca[0],))), time.time())
    peer = CertAuth(peer_cert, peer_key, (ca[0],))
    return r, initiator(), peer


def test_certificate_authentication_both_ways() -> None:
    r, i, peer = _cert_setup()
    now = time.time()
    i.take_sa_init(sends(r.receive(now, i.sa_init(), PEER, LOCAL))[0])
    outs = r.receive(now, i.auth_cert(peer), PEER, LOCAL)
    m = i.open(sends(outs)[0])
    assert [o for o in outs if isinstance(o, ChildUp)]
    (cert,) = m.find(c.Cert)
    (auth,) = m.find(c.Auth)
    (idr,) = m.find(c.Identification)
    assert auth.method == c.AUTH_ECDSA_SHA256_P256
    edge_cert = peer.peer_cert(cert.data, now)  # our CA signed the edge's certificate
    assert edge_cert is not None
    octets = signed_octets(r.sas[i.spi_r].init_response, i.ni, i.sk_pr, idr.encode())
    assert CertAuth.verify(edge_cert, octets, auth.data)


@pytest.mark.parametrize(
    ("peer_ca", "name", "days"),
    [(False, "customer.example", 30), (True, "someone.else", 30), (True, "customer.example", -1)],
    ids=["unknown-ca", "id-not-in-cert", "expired"],
)
def test_bad_certificates_get_authentication_failed(peer_ca: bool, name: str, days: int) -> None:
    r, i, peer = _cert_setup(peer_ca, name, days)
    i.take_sa_init(sends(r.receive(time.time(), i.sa_init(), PEER, LOCAL))[0])
    m = i.open(sends(r.receive(time.time(), i.auth_cert(peer), PEER, LOCAL))[0])
    assert m.find(c.Notify, c.AUTHENTICATION_FAILED)
    assert r.counters.auth_failed == 1
