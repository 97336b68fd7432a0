"""EVEN-PORT reservations (RFC 8656 §7.1, §14.6, §14.9): the port after an even one,
held for a short time under a RESERVATION-TOKEN.

An RTP client asks for an even relayed port with EVEN-PORT's R bit set; the server
takes an even port P whose neighbour P+1 is free, sets P+1 aside (the port allocator's
``reserved`` ports) and returns a token.  A second Allocate naming the token (the RTCP
allocation) gets exactly P+1.

The token carries what the claim needs, so any worker of the site can check it — the
RTCP Allocate comes from another client port, and ``SO_REUSEPORT`` may hand it to
another worker than the one that reserved: 2 bytes of port, 2 bytes of expiry (Unix
seconds modulo 65,536: the lifetime is seconds, so the full time is the one just
ahead of ``now``) and 4 bytes of HMAC-SHA256, under a key every worker of the site
shares, of the port, family, full expiry and user.  A token is good for ``lifetime``
seconds and for the user who reserved only; that it is used once is the port
allocator's doing (the port is taken, or bound by another worker's socket).

:class:`Reservations` mints and checks tokens, and remembers the ports this server set
aside so it can take each back (``RelayPorts.reclaim``) once its token has run out —
later again if another worker claimed it and still holds it.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

Addr = tuple[str, int]

GRACE = 2.0  # seconds after a token's expiry before its port is taken back
RECHECK = 60.0  # seconds between looks at a reserved port another worker still holds
_TOKEN = struct.Struct("!HH4s")


class Reservations:
    """Tokens for reserved ports, and the ports this server set aside (at most
    ``limit``), in order of when each is next looked at."""

    def __init__(self, key: bytes, lifetime: float, limit: int) -> None:
        self._key = hashlib.sha256(b"anyedge turn reservation\0" + key).digest()
        self.lifetime = lifetime
        self.limit = limit
        self._held: dict[Addr, float] = {}  # address -> when to try to take it back

    def __len__(self) -> int:
        return len(self._held)

    def full(self) -> bool:
        return len(self._held) >= self.limit

    def _mac(self, port: int, family: int, expiry: int, user: str) -> bytes:
        msg = f"{port} {family} {expiry} {user}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).digest()[:4]

    def hold(self, addr: Addr, user: str, now: float) -> bytes:
        """Remember ``addr`` as set aside for ``user``; the token that claims it."""
        expiry = int(now + self.lifetime)
        family = 6 if ":" in addr[0] else 4
        self._held[addr] = expiry + GRACE
        return _TOKEN.pack(addr[1], expiry & 0xFFFF, self._mac(addr[1], family, expiry, user))

    def check(self, token: bytes, user: str, now: float) -> tuple[int, int] | None:
        """(family, port) a good token of ``user`` names, or None (forged, expired,
        another user's)."""
        if len(token) != _TOKEN.size:
            return None
        port, expiry16, mac = _TOKEN.unpack(token)
        ahead = (expiry16 - int(now)) & 0xFFFF
        if ahead > self.lifetime + 1:
            return None  # run out (or from the far future, which no server mints)
        expiry = int(now) + ahead
        if expiry <= now:
            return None
        for family in (4, 6):
            if hmac.compare_digest(mac, self._mac(port, family, expiry, user)):
                return family, port
        return None

    def claimed(self, addr: Addr) -> None:
        """This server's own reservation was claimed here: nothing to take back."""
        self._held.pop(addr, None)

    def due(self, now: float) -> list[Addr]:
        """The set-aside addresses whose turn to be taken back has come (forgotten
        here: call :meth:`recheck` for those that cannot be taken back yet)."""
        held, out = self._held, []
        while held:
            addr, when = next(iter(held.items()))
            if when > now:
                break
            del held[addr]
            out.append(addr)
        return out

    def recheck(self, addr: Addr, now: float) -> None:
        """``addr`` is still held by another worker: look again in RECHECK seconds."""
        self._held[addr] = now + RECHECK

    def next_due(self) -> float | None:
        return next(iter(self._held.values())) if self._held else None
