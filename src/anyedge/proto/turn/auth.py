"""Who may allocate: long-term credentials, TURN REST credentials and fleet-wide nonces.

Two kinds of user, both under the long-term credential mechanism (RFC 8489 §9.2):

- **Static users**: a ``username -> password`` mapping (the IO layer loads it from a
  file).  Keys are derived once and kept.
- **Ephemeral users** (TURN REST API, draft-uberti-behave-turn-rest): an application
  server that shares a secret with the relays hands its client ``username =
  "<expiry>:<user>"`` (Unix seconds) and ``password = base64(HMAC-SHA1(secret,
  username))``.  Several secrets are accepted at once so they can be rotated: add the
  new one, let clients move over, remove the old.  An expired username gets 401, and
  so does one whose expiry is more than ``rest_max_ttl`` (30 days by default, the
  longest ``anyedge turn credential`` makes) ahead: a leaked credential must not last
  for years.

Nonces are stateless so that any site of the anycast fleet can verify a nonce that
another site minted -- a client whose route flips mid-call lands at a site that has
never seen it.  A nonce is ``hex(expiry) || hex(HMAC-SHA256(fleet key, expiry || client
IP || client port))[:24]``; it lives at most 600 s and only for the transport address
(IP and port) it was minted for, so a signed request captured and replayed from another
port -- another client behind the same NAT -- is stale (438), not granted.  A client
whose NAT mapping changes gets one 438 and a fresh nonce.  The first fleet key mints,
all verify (rotation again).

Because expiries are compared with ``now`` across sites, ``now`` must be Unix time
(``time.time()``), not a monotonic clock.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..stun import long_term_key, userhash

MAX_NONCE_LIFETIME = 600.0
MAX_REST_TTL = 30 * 86400.0
_CLOCK_SKEW = 60.0


@dataclass(frozen=True)
class Credentials:
    """The realm and everything that proves a client may use it."""

    realm: str
    fleet_keys: tuple[bytes, ...]
    users: Mapping[str, str] = field(default_factory=dict)
    rest_secrets: tuple[bytes, ...] = ()
    nonce_lifetime: float = MAX_NONCE_LIFETIME
    rest_separator: str = ":"
    rest_max_ttl: float = MAX_REST_TTL  # seconds a REST username may expire ahead of now

    def __post_init__(self) -> None:
        if not self.fleet_keys:
            raise ValueError("at least one fleet key is needed to mint nonces")
        if not 0 < self.nonce_lifetime <= MAX_NONCE_LIFETIME:
            raise ValueError(f"nonce lifetime must be in (0, {MAX_NONCE_LIFETIME:g}] s")


def rest_password(secret: bytes, username: str) -> str:
    """The TURN REST password of ``username``: base64(HMAC-SHA1(secret, username))."""
    return base64.b64encode(hmac.digest(secret, username.encode(), "sha1")).decode()


def rest_username(expiry: int, user: str = "", separator: str = ":") -> str:
    """A TURN REST username valid until Unix time ``expiry``."""
    return f"{expiry}{separator}{user}" if user else str(expiry)


_HEX = frozenset("0123456789abcdef")


Addr = tuple[str, int]


def _nonce_mac(key: bytes, expiry: int, client: Addr) -> str:
    text = f"{expiry:08x}|{client[0]}|{client[1]}"
    return hmac.digest(key, text.encode(), "sha256")[:12].hex()


def mint_nonce(key: bytes, now: float, client: Addr, lifetime: float) -> str:
    """A nonce for the transport address ``client`` that any holder of ``key`` accepts
    until now + lifetime."""
    expiry = int(now + lifetime)
    return f"{expiry:08x}{_nonce_mac(key, expiry, client)}"


def nonce_valid(keys: tuple[bytes, ...], nonce: str, now: float, client: Addr) -> bool:
    """Whether one of ``keys`` minted ``nonce`` for ``client`` and it has not expired."""
    if len(nonce) != 32 or not nonce.isascii() or not all(c in _HEX for c in nonce):
        return False  # also keeps hmac.compare_digest away from non-ASCII text
    expiry = int(nonce[:8], 16)
    if not now < expiry <= now + MAX_NONCE_LIFETIME + _CLOCK_SKEW:
        return False
    mac = nonce[8:]
    return any(hmac.compare_digest(mac, _nonce_mac(k, expiry, client)) for k in keys)


@dataclass(frozen=True, slots=True)
class Identity:
    """A username the server knows, and the user its quotas are counted against."""

    username: str
    user: str


class Authenticator:
    """Finds the candidate keys of a username; the server checks them against the HMAC."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._static: dict[tuple[str, int], bytes] = {}
        self._by_hash = {userhash(u, credentials.realm): u for u in credentials.users}

    def nonce(self, now: float, client: Addr) -> str:
        c = self.credentials
        return mint_nonce(c.fleet_keys[0], now, client, c.nonce_lifetime)

    def nonce_valid(self, nonce: str, now: float, client: Addr) -> bool:
        return nonce_valid(self.credentials.fleet_keys, nonce, now, client)

    def username_of_hash(self, digest: bytes) -> str | None:
        """The static user whose USERHASH is ``digest`` (REST users have none)."""
        return self._by_hash.get(digest)

    def keys(self, username: str, now: float, algorithm: int) -> tuple[Identity, list[bytes]]:
        """The identity behind ``username`` and the keys it may use; no keys: refuse (401)."""
        c = self.credentials
        password = c.users.get(username)
        if password is not None:
            key = self._static.get((username, algorithm))
            if key is None:
                key = long_term_key(username, c.realm, password, algorithm)
                self._static[username, algorithm] = key
            return Identity(username, username), [key]
        stamp, sep, user = username.partition(c.rest_separator)
        # an expiry is at most 12 ASCII decimal digits ("²" is a digit to str.isdigit,
        # and int() refuses more than 4,300 of them)
        if (
            not c.rest_secrets
            or not (stamp.isascii() and stamp.isdecimal() and len(stamp) <= 12)
            or (sep and not user)
        ):
            return Identity(username, username), []
        if not now < int(stamp) <= now + c.rest_max_ttl + _CLOCK_SKEW:
            return Identity(username, user or username), []
        keys = [
            long_term_key(username, c.realm, rest_password(s, username), algorithm)
            for s in c.rest_secrets
        ]
        return Identity(username, user or username), keys


__all__ = [
    "Authenticator",
    "Credentials",
    "Identity",
    "mint_nonce",
    "nonce_valid",
    "rest_password",
    "rest_username",
]
