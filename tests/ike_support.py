"""Helpers shared by the IKE, ESP and distribution tests: a responder's configuration,
the in-process initiator, a full handshake, inner packets and Child SAs."""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from anyedge.proto.ike import ChildSA, ChildUp, Responder, ResponderConfig, Selector, Send
from anyedge.proto.ike import codec as c
from anyedge.proto.ike.initiator import Initiator

PEER, LOCAL = ("192.0.2.2", 500), ("192.0.2.1", 500)
PSK = b"correct horse battery staple"


def sel(cidr: str) -> Selector:
    n = ipaddress.ip_network(cidr)
    return Selector(n.network_address.packed, n.broadcast_address.packed)


def config(**kw: object) -> ResponderConfig:
    return ResponderConfig(
        {b"": PSK},
        (c.ID_FQDN, b"edge.example"),
        (sel("198.51.100.0/24"),),
        (sel("203.0.113.0/24"),),
        **kw,
    )  # type: ignore[arg-type]


def initiator(group: int = 19, key_bits: int = 256, psk: bytes = PSK) -> Initiator:
    return Initiator(
        psk,
        b"customer.example",
        (sel("203.0.113.0/24"),),
        (sel("198.51.100.0/24"),),
        group,
        key_bits,
    )


def sends(outs: list) -> list[bytes]:  # type: ignore[type-arg]
    return [o.data for o in outs if isinstance(o, Send)]


def handshake(r: Responder, i: Initiator, now: float = 0.0) -> tuple[c.Message, ChildUp]:
    (resp,) = sends(r.receive(now, i.sa_init(), PEER, LOCAL))
    i.take_sa_init(resp)
    outs = r.receive(now, i.auth(), PEER, LOCAL)
    m = i.open(sends(outs)[0])
    (up,) = [o for o in outs if isinstance(o, ChildUp)]
    return m, up


def ip4(src: str, dst: str, body: bytes = b"x" * 12) -> bytes:
    return (
        bytes([0x45, 0, 0, 20 + len(body)])
        + bytes(8)
        + ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + body
    )


def child(spi_in: int = 0x1001, spi_out: int = 0x2002) -> ChildSA:
    k1, k2 = os.urandom(36), os.urandom(36)
    net = ipaddress.ip_network("203.0.113.0/24")
    ts_remote = (Selector(net.network_address.packed, net.broadcast_address.packed),)
    local = ipaddress.ip_network("198.51.100.0/24")
    ts_local = (Selector(local.network_address.packed, local.broadcast_address.packed),)
    return ChildSA(
        spi_in, spi_out, k1, k2, ts_remote, ts_local, ("192.0.2.2", 4500), bytes(16), 0.0
    )


def mirror(ch: ChildSA) -> ChildSA:
    """The peer's view of the same SA pair."""
    return ChildSA(
        ch.spi_out,
        ch.spi_in,
        ch.key_out,
        ch.key_in,
        ch.ts_local,
        ch.ts_remote,
        ("192.0.2.1", 4500),
        ch.ike_spi,
        ch.created,
    )


def make_ca(name: str = "anyedge test CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_cert(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], dns: str, days: int = 30
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns)]))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
        .sign(ca[1], hashes.SHA256())
    )
    return cert, key
