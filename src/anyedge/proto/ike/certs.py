"""Certificate authentication for IKE_AUTH: ECDSA with SHA-256 on P-256 (RFC 4754,
AUTH method 9) and X.509 certificates in CERT payloads (RFC 7296 §3.6, encoding 4).

The signed octets are the same as for a pre-shared key (this side's first message, the
peer's nonce, prf(SK_p, ID body), §2.15); the AUTH data is the ECDSA signature as r | s,
32 bytes each.  A peer's certificate is accepted when one of the configured CA
certificates signed it, ``now`` is within its validity, and the peer's ID names it (an
FQDN among its DNS subject alternative names, an address among its IP ones, or a DER
distinguished name equal to its subject).  One level only: no intermediate CAs, no
revocation checks.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .codec import ID_FQDN, ID_IPV4_ADDR, ID_IPV6_ADDR

ID_DER_ASN1_DN = 9


def _names(cert: x509.Certificate) -> tuple[list[str], list[bytes]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    dns = [d.lower() for d in san.get_values_for_type(x509.DNSName)]
    ips = [
        a.packed
        for a in san.get_values_for_type(x509.IPAddress)
        if isinstance(a, ipaddress.IPv4Address | ipaddress.IPv6Address)
    ]
    return dns, ips


def names_id(cert: x509.Certificate, id_type: int, data: bytes) -> bool:
    """Whether the ID (type and data) names the certificate's subject."""
    dns, ips = _names(cert)
    if id_type == ID_FQDN:
        return data.decode("ascii", "replace").lower() in dns
    if id_type in (ID_IPV4_ADDR, ID_IPV6_ADDR):
        return data in ips
    if id_type == ID_DER_ASN1_DN:
        return data == cert.subject.public_bytes()
    return False


@dataclass(frozen=True, slots=True)
class CertAuth:
    """Our certificate and key, and the CAs whose certificates we accept from peers."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cas: tuple[x509.Certificate, ...]

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(Encoding.DER)

    @property
    def request(self) -> bytes:
        """CERTREQ data: the SHA-1 hashes of our CAs' SubjectPublicKeyInfo (§3.7)."""
        return b"".join(
            hashlib.sha1(
                ca.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            ).digest()
            for ca in self.cas
        )

    def sign(self, octets: bytes) -> bytes:
        r, s = decode_dss_signature(self.key.sign(octets, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def peer_cert(self, der: bytes, now: float) -> x509.Certificate | None:
        """The peer's certificate if one of our CAs signed it and it is valid at ``now``."""
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return None
        when = datetime.fromtimestamp(now, UTC)
        if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
            return None
        for ca in self.cas:
            if ca.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return cert
        return None

    @staticmethod
    def verify(cert: x509.Certificate, octets: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (r | s) over ``octets`` is the certificate key's."""
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or len(signature) != 64:
            return False
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        try:
            key.verify(der, octets, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


def ip_id(address: str) -> tuple[int, bytes]:
    a = ipaddress.ip_address(address)
    return (ID_IPV4_ADDR if a.version == 4 else ID_IPV6_ADDR), a.packed
