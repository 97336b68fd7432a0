"""The cryptography of an IKE SA (RFC 7296 §2.13-2.18, RFC 5282), on ``cryptography``.

- :func:`prf` and :func:`prf_plus`: HMAC with the negotiated hash and the
  key-stretching ``prf+`` (T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n));
- :func:`ike_keys`: SKEYSEED = prf(Ni | Nr, g^ir), then SK_d, SK_ai, SK_ar, SK_ei,
  SK_er, SK_pi, SK_pr out of prf+(SKEYSEED, Ni | Nr | SPIi | SPIr), and the rekeyed
  SKEYSEED = prf(SK_d(old), g^ir(new) | Ni | Nr);
- :func:`child_keys`: KEYMAT = prf+(SK_d, [g^ir(new) |] Ni | Nr), cut as
  initiator-to-responder key then responder-to-initiator key (AES-GCM has no
  integrity key; each key is the AES key followed by a 4-byte salt);
- :class:`DiffieHellman`: groups 19 (ECP-256, public value x | y, shared secret the x
  coordinate, RFC 5903) and 31 (Curve25519, RFC 8031);
- :func:`seal` and :func:`open_sk`: the SK payload with AES-GCM-16 (RFC 5282): an 8-byte
  IV after the payload header, the associated data from the IKE header to the end of the
  SK payload's generic header, nonce = salt | IV, no padding but the pad-length byte;
- :func:`signed_octets` and :func:`psk_auth`: AUTH = prf(prf(PSK, "Key Pad for
  IKEv2"), signed octets); certificates sign the same octets (:mod:`.certs`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .codec import HEADER_LEN, PT_SK, IkeDecodeError

KEY_PAD = b"Key Pad for IKEv2"
IV_LEN, ICV_LEN, SALT_LEN = 8, 16, 4


def prf(key: bytes, data: bytes, hash_name: str = "sha256") -> bytes:
    return hmac.new(key, data, hash_name).digest()


def prf_plus(key: bytes, seed: bytes, length: int, hash_name: str = "sha256") -> bytes:
    out, t, n = b"", b"", 1
    while len(out) < length:
        if n > 255:
            raise ValueError("prf+ cannot give more than 255 blocks")
        t = prf(key, t + seed + bytes([n]), hash_name)
        out += t
        n += 1
    return out[:length]


@dataclass(frozen=True, slots=True)
class IkeKeys:
    sk_d: bytes
    sk_ei: bytes  # AES key | 4-byte salt
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes


def skeyseed(ni: bytes, nr: bytes, shared: bytes, hash_name: str = "sha256") -> bytes:
    return prf(ni + nr, shared, hash_name)


def rekey_skeyseed(
    old_sk_d: bytes, shared: bytes, ni: bytes, nr: bytes, hash_name: str = "sha256"
) -> bytes:
    return prf(old_sk_d, shared + ni + nr, hash_name)


def ike_keys(
    seed: bytes,
    ni: bytes,
    nr: bytes,
    spi_i: bytes,
    spi_r: bytes,
    enc_key_len: int,
    hash_name: str = "sha256",
) -> IkeKeys:
    """The seven keys for an AEAD suite (SK_ai and SK_ar are empty)."""
    plen = hashlib.new(hash_name).digest_size
    elen = enc_key_len + SALT_LEN
    km = prf_plus(seed, ni + nr + spi_i + spi_r, 3 * plen + 2 * elen, hash_name)
    d, ei, er = km[:plen], km[plen : plen + elen], km[plen + elen : plen + 2 * elen]
    pi = km[plen + 2 * elen : 2 * plen + 2 * elen]
    pr = km[2 * plen + 2 * elen :]
    return IkeKeys(d, ei, er, pi, pr)


def child_keys(
    sk_d: bytes,
    ni: bytes,
    nr: bytes,
    enc_key_len: int,
    shared: bytes = b"",
    hash_name: str = "sha256",
) -> tuple[bytes, bytes]:
    """(initiator->responder, responder->initiator), each AES key | salt."""
    elen = enc_key_len + SALT_LEN
    km = prf_plus(sk_d, shared + ni + nr, 2 * elen, hash_name)
    return km[:elen], km[elen:]


class DiffieHellman:
    """One ephemeral key pair of group 19 or 31."""

    GROUPS = (19, 31)

    def __init__(self, group: int) -> None:
        if group not in self.GROUPS:
            raise ValueError(f"DH group {group} not supported")
        self.group = group
        if group == 19:
            self._ec = ec.generate_private_key(ec.SECP256R1())
            nums = self._ec.public_key().public_numbers()
            self.public = nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big")
        else:
            self._x = x25519.X25519PrivateKey.generate()
            self.public = self._x.public_key().public_bytes_raw()

    def shared(self, peer: bytes) -> bytes:
        """g^ir from the peer's public value; :class:`IkeDecodeError` if it is not one."""
        try:
            if self.group == 19:
                if len(peer) != 64:
                    raise ValueError("length")
                point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + peer)
                return self._ec.exchange(ec.ECDH(), point)
            if len(peer) != 32:
                raise ValueError("length")
            return self._x.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
        except ValueError as e:
            raise IkeDecodeError(f"KE of group {self.group}: not a public value ({e})") from None


def seal(header: bytes, first: int, inner: bytes, key: bytes, iv: bytes | None = None) -> bytes:
    """The whole message: ``header`` (28 bytes; its length field is rewritten), then the
    SK payload encrypting ``inner`` (the inner payload chain starting with ``first``)."""
    iv = os.urandom(IV_LEN) if iv is None else iv
    plain = inner + b"\x00"  # no padding, pad length 0
    length = HEADER_LEN + 4 + IV_LEN + len(plain) + ICV_LEN
    hdr = header[:24] + struct.pack("!I", length)
    hdr = hdr[:16] + bytes([PT_SK]) + hdr[17:]
    sk_head = struct.pack("!BBH", first, 0, 4 + IV_LEN + len(plain) + ICV_LEN)
    aad = hdr + sk_head
    ct = AESGCM(key[:-SALT_LEN]).encrypt(key[-SALT_LEN:] + iv, plain, aad)
    return aad + iv + ct


def open_sk(message: bytes, sk_offset: int, key: bytes) -> bytes:
    """The inner payload chain of the SK payload at ``sk_offset`` (its generic header);
    :class:`IkeDecodeError` if it does not authenticate or is malformed."""
    aad = message[: sk_offset + 4]
    body = message[sk_offset + 4 :]
    if len(body) < IV_LEN + ICV_LEN + 1:
        raise IkeDecodeError("SK payload too short")
    try:
        plain = AESGCM(key[:-SALT_LEN]).decrypt(key[-SALT_LEN:] + body[:IV_LEN], body[IV_LEN:], aad)
    except InvalidTag:
        raise IkeDecodeError("SK payload does not authenticate") from None
    pad = plain[-1]
    if pad + 1 > len(plain):
        raise IkeDecodeError("SK payload: pad length past the start")
    return plain[: -1 - pad]


def signed_octets(
    message: bytes, peer_nonce: bytes, sk_p: bytes, id_body: bytes, hash_name: str = "sha256"
) -> bytes:
    """What a side's AUTH covers: its first message, the peer's nonce and prf(SK_p, ID
    body) (§2.15)."""
    return message + peer_nonce + prf(sk_p, id_body, hash_name)


def psk_auth(
    psk: bytes,
    message: bytes,
    peer_nonce: bytes,
    sk_p: bytes,
    id_body: bytes,
    hash_name: str = "sha256",
) -> bytes:
    """AUTH for a shared key: prf(prf(PSK, "Key Pad for IKEv2"), signed octets)."""
    octets = signed_octets(message, peer_nonce, sk_p, id_body, hash_name)
    return prf(prf(psk, KEY_PAD, hash_name), octets, hash_name)
