"""EVEN-PORT reservations (RFC 8656 §7.1, §14.6, §14.9): the port after an even one,
held for a short time under a RESERVATION-TOKEN.

An RTP client asks for an even relayed port with EVEN-PORT's R bit set; the server
takes an even port P whose neighbour P+1 is free, takes P+1 as well and keeps it here
under an 8-byte random token it returns in the Allocate response.  A second Allocate
naming that token (the RTCP allocation) gets exactly P+1.  A token that nobody claims
within ``lifetime`` seconds is dropped and its port given back by :meth:`expire`.

Tokens are valid at the site that minted them only: the reserved port is a socket of
that site's relay, and the client's 5-tuple (hence both its Allocates) lands there.
A token is claimed only by the user whose allocation reserved it, so a token seen on
the wire cannot be used by someone else to take the port.

The table is a dict in insertion order; every entry lives the same ``lifetime``, so the
oldest is first and expiry pops from the front.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

Addr = tuple[str, int]


@dataclass(slots=True)
class Reservation:
    """A reserved relayed address, who may claim it, and until when."""

    addr: Addr
    user: str
    expires: float


class Reservations:
    """Tokens -> reserved relayed addresses, at most ``limit`` at once."""

    def __init__(self, lifetime: float, limit: int, rng: random.Random | None = None) -> None:
        self.lifetime = lifetime
        self.limit = limit
        self._rng = rng or random.SystemRandom()
        self._held: dict[bytes, Reservation] = {}

    def __len__(self) -> int:
        return len(self._held)

    def full(self) -> bool:
        return len(self._held) >= self.limit

    def hold(self, addr: Addr, user: str, now: float) -> bytes:
        """Keep ``addr`` for ``user``; the token that claims it."""
        token = self._rng.randbytes(8)
        while token in self._held:
            token = self._rng.randbytes(8)
        self._held[token] = Reservation(addr, user, now + self.lifetime)
        return token

    def claim(self, token: bytes, user: str, now: float) -> Addr | None:
        """The address held under ``token`` for ``user`` (no longer held), or None."""
        held = self._held.get(token)
        if held is None or held.user != user or held.expires <= now:
            return None
        del self._held[token]
        return held.addr

    def next_expiry(self) -> float | None:
        return next(iter(self._held.values())).expires if self._held else None

    def expire(self, now: float) -> list[Addr]:
        """Drop the reservations due at ``now``; their addresses, to be given back."""
        held, out = self._held, []
        while held:
            token, r = next(iter(held.items()))
            if r.expires > now:
                break
            del held[token]
            out.append(r.addr)
        return out
