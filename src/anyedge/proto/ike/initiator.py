"""A minimal IKEv2 initiator (PSK, AES-GCM-16, HMAC-SHA2-256): the other end of
:class:`~.responder.Responder` for tests and benchmarks, in process.

It builds requests and reads responses; it keeps no retransmission timers.  Each
method returns the request bytes; ``take_*`` read the response.  It plays by the
same codec and crypto modules as the responder, so its interoperability proof is
strongSwan, not this (see tests/test_ipsec_strongswan.py).
"""

from __future__ import annotations

import os
import struct

from . import codec as c
from .certs import CertAuth
from .codec import IkeDecodeError, Message, Selector
from .crypto import (
    DiffieHellman,
    child_keys,
    ike_keys,
    open_sk,
    psk_auth,
    rekey_skeyseed,
    seal,
    signed_octets,
    skeyseed,
)
from .responder import ENCR_AES_GCM_16, PRF_HMAC_SHA2_256


def ike_proposal(
    groups: tuple[int, ...] = (19, 31), key_bits: int = 256, spi: bytes = b""
) -> c.Proposal:
    return c.Proposal(
        1,
        c.PROTO_IKE,
        spi,
        (
            c.Transform(c.T_ENCR, ENCR_AES_GCM_16, key_bits),
            c.Transform(c.T_PRF, PRF_HMAC_SHA2_256),
            *(c.Transform(c.T_DH, g) for g in groups),
        ),
    )


def esp_proposal(spi: bytes, key_bits: int = 256, groups: tuple[int, ...] = ()) -> c.Proposal:
    return c.Proposal(
        1,
        c.PROTO_ESP,
        spi,
        (
            c.Transform(c.T_ENCR, ENCR_AES_GCM_16, key_bits),
            *(c.Transform(c.T_DH, g) for g in groups),
            c.Transform(c.T_ESN, 0),
        ),
    )


class Initiator:
    def __init__(
        self,
        psk: bytes,
        my_id: bytes,
        tsi: tuple[Selector, ...],
        tsr: tuple[Selector, ...],
        group: int = 19,
        key_bits: int = 256,
    ) -> None:
        self.psk, self.my_id, self.tsi, self.tsr = psk, my_id, tsi, tsr
        self.group, self.key_bits = group, key_bits
        self.spi_i, self.spi_r = os.urandom(8), bytes(8)
        self.ni = os.urandom(32)
        self.dh = DiffieHellman(group)
        self.mid = 0
        self.init_request = b""
        self.child_spi = os.urandom(4)
        self.sk_d = self.sk_ei = self.sk_er = self.sk_pi = self.sk_pr = b""
        self.nr = b""
        self.cookie: bytes | None = None
        self.pending: tuple[bytes, DiffieHellman | None, bytes] | None = None

    def sa_init(self, offered: tuple[int, ...] = (19, 31), fake_nat: bool = False) -> bytes:
        """IKE_SA_INIT; ``fake_nat`` adds NAT detection hashes that match no address, so
        the responder believes this side is behind a NAT and encapsulates ESP in UDP."""
        payloads: list[object] = [
            c.SA((ike_proposal(offered, self.key_bits),)),
            c.KE(self.group, self.dh.public),
            c.Nonce(self.ni),
        ]
        if fake_nat:
            payloads += [c.Notify(c.NAT_DETECTION_SOURCE_IP, os.urandom(20)),
                         c.Notify(c.NAT_DETECTION_DESTINATION_IP, os.urandom(20))]  # fmt: skip
        if self.cookie is not None:
            payloads.insert(0, c.Notify(c.COOKIE, self.cookie))
        self.init_request = c.encode_message(
            Message(self.spi_i, bytes(8), c.IKE_SA_INIT, c.FLAG_INITIATOR, 0, payloads)
        )
        return self.init_request

    def take_sa_init(self, data: bytes) -> Message:
        m = c.decode_message(data)
        if m.find(c.Notify, c.COOKIE):
            self.cookie = m.find(c.Notify, c.COOKIE)[0].data
            return m
        ke, nonce = m.find(c.KE), m.find(c.Nonce)
        if not ke:
            return m
        self.spi_r, self.nr = m.spi_r, nonce[0].data
        shared = self.dh.shared(ke[0].data)
        keys = ike_keys(
            skeyseed(self.ni, self.nr, shared),
            self.ni,
            self.nr,
            self.spi_i,
            self.spi_r,
            self.key_bits // 8,
        )
        self.sk_d, self.sk_ei, self.sk_er, self.sk_pi = (
            keys.sk_d,
            keys.sk_ei,
            keys.sk_er,
            keys.sk_pi,
        )
        self.sk_pr = keys.sk_pr
        self.mid = 1
        return m

    def _request(self, exchange: int, payloads: list[object], mid: int | None = None) -> bytes:
        first, inner = c.encode_chain(payloads)
        head = Message(
            self.spi_i, self.spi_r, exchange, c.FLAG_INITIATOR, self.mid if mid is None else mid
        )
        return seal(c.encode_header(head, c.PT_SK, 0), first, inner, self.sk_ei)

    def open(self, data: bytes) -> Message:
        m, first = c.decode_header(data)
        outer = c.decode_chain(first, data[c.HEADER_LEN :])
        sk = outer[-1]
        if not isinstance(sk, c.Encrypted):
            raise IkeDecodeError("no SK payload")
        m.payloads = c.decode_chain(
            sk.first, open_sk(data, len(data) - 4 - len(sk.data), self.sk_er)
        )
        self.mid = m.message_id + 1
        return m

    def auth_cert(self, certs: CertAuth) -> bytes:
        """IKE_AUTH signed with a certificate's key (ECDSA P-256, RFC 4754)."""
        idi = c.Identification(c.ID_FQDN, self.my_id, True)
        sig = certs.sign(signed_octets(self.init_request, self.nr, self.sk_pi, idi.encode()))
        return self._request(
            c.IKE_AUTH,
            [idi, c.Cert(c.CERT_X509_SIGNATURE, certs.der), c.Auth(c.AUTH_ECDSA_SHA256_P256, sig),
             c.SA((esp_proposal(self.child_spi, self.key_bits),)),
             c.TrafficSelectors(self.tsi, True), c.TrafficSelectors(self.tsr, False)],
        )  # fmt: skip

    def auth(self, psk: bytes | None = None) -> bytes:
        idi = c.Identification(c.ID_FQDN, self.my_id, True)
        mac = psk_auth(
            self.psk if psk is None else psk, self.init_request, self.nr, self.sk_pi, idi.encode()
        )
        return self._request(
            c.IKE_AUTH,
            [
                idi,
                c.Auth(c.AUTH_SHARED_KEY, mac),
                c.SA((esp_proposal(self.child_spi, self.key_bits),)),
                c.TrafficSelectors(self.tsi, True),
                c.TrafficSelectors(self.tsr, False),
            ],
        )

    def child_keys(
        self, m: Message, ni: bytes | None = None, nr: bytes | None = None, shared: bytes = b""
    ) -> tuple[int, bytes, bytes]:
        """(responder's SPI, i->r key, r->i key) of the Child SA in response ``m``."""
        spi = m.find(c.SA)[0].proposals[0].spi
        k_ir, k_ri = child_keys(self.sk_d, ni or self.ni, nr or self.nr, self.key_bits // 8, shared)
        return int.from_bytes(spi, "big"), k_ir, k_ri

    def rekey_child(self, old_spi: bytes, pfs: bool = False) -> bytes:
        ni, self.child_spi = os.urandom(32), os.urandom(4)
        dh = DiffieHellman(self.group) if pfs else None
        self.pending = (ni, dh, self.child_spi)
        payloads: list[object] = [
            c.Notify(c.REKEY_SA, protocol=c.PROTO_ESP, spi=old_spi),
            c.SA((esp_proposal(self.child_spi, self.key_bits, (self.group,) if pfs else ()),)),
            c.Nonce(ni),
        ]
        if dh is not None:
            payloads.append(c.KE(dh.group, dh.public))
        payloads += [c.TrafficSelectors(self.tsi, True), c.TrafficSelectors(self.tsr, False)]
        return self._request(c.CREATE_CHILD_SA, payloads)

    def take_rekey_child(self, data: bytes) -> tuple[int, bytes, bytes]:
        m = self.open(data)
        assert self.pending is not None
        ni, dh, _ = self.pending
        ke = m.find(c.KE)
        shared = dh.shared(ke[0].data) if dh is not None else b""
        return self.child_keys(m, ni, m.find(c.Nonce)[0].data, shared)

    def rekey_ike(self) -> bytes:
        ni, spi = os.urandom(32), os.urandom(8)
        dh = DiffieHellman(self.group)
        self.pending = (ni, dh, spi)
        return self._request(
            c.CREATE_CHILD_SA,
            [
                c.SA((ike_proposal((self.group,), self.key_bits, spi),)),
                c.Nonce(ni),
                c.KE(dh.group, dh.public),
            ],
        )

    def take_rekey_ike(self, data: bytes) -> None:
        m = self.open(data)
        assert self.pending is not None
        ni, dh, spi = self.pending
        assert dh is not None
        nr = m.find(c.Nonce)[0].data
        spi_r = m.find(c.SA)[0].proposals[0].spi
        shared = dh.shared(m.find(c.KE)[0].data)
        keys = ike_keys(
            rekey_skeyseed(self.sk_d, shared, ni, nr), ni, nr, spi, spi_r, self.key_bits // 8
        )
        self.old = (self.spi_i, self.spi_r, self.sk_ei, self.sk_er, self.mid)
        self.spi_i, self.spi_r, self.mid = spi, spi_r, 0
        self.sk_d, self.sk_ei, self.sk_er, self.sk_pi = (
            keys.sk_d,
            keys.sk_ei,
            keys.sk_er,
            keys.sk_pi,
        )

    def informational(self, payloads: list[object]) -> bytes:
        return self._request(c.INFORMATIONAL, payloads)

    def delete_child(self, spi: bytes) -> bytes:
        return self.informational([c.Delete(c.PROTO_ESP, (spi,))])


def spi_bytes(spi: int) -> bytes:
    return struct.pack("!I", spi)
