"""What the IKE responder hands back: datagrams to send and Child SA changes.

:class:`ChildSA` is the whole of what a server needs to carry a tunnel's traffic: the
SPIs and AES-GCM keys (key | 4-byte salt) both ways, the negotiated traffic selectors
and the peer's address.  It is the record the edge distributes (``to_dict`` /
``from_dict`` for the store); nothing in it refers back to the IKE SA's state.
"""

from __future__ import annotations

from dataclasses import dataclass

from .codec import Selector

Addr = tuple[str, int]


def selector_record(s: Selector) -> list[object]:
    return [s.start.hex(), s.end.hex(), s.protocol, s.start_port, s.end_port]


def selector_from_record(r: list) -> Selector:  # type: ignore[type-arg]
    return Selector(bytes.fromhex(r[0]), bytes.fromhex(r[1]), int(r[2]), int(r[3]), int(r[4]))


@dataclass(frozen=True, slots=True)
class ChildSA:
    """One negotiated ESP SA pair, as seen from the responder (``in`` = from the peer)."""

    spi_in: int
    spi_out: int
    key_in: bytes
    key_out: bytes
    ts_remote: tuple[Selector, ...]  # the peer's side (TSi)
    ts_local: tuple[Selector, ...]  # our side (TSr)
    peer: Addr
    ike_spi: bytes  # SPIi | SPIr of the IKE SA that made it
    created: float
    replaces: int | None = None  # spi_in of the Child SA this one rekeys

    def to_dict(self) -> dict[str, object]:
        return {
            "spi_in": self.spi_in,
            "spi_out": self.spi_out,
            "key_in": self.key_in.hex(),
            "key_out": self.key_out.hex(),
            "ts_remote": [selector_record(s) for s in self.ts_remote],
            "ts_local": [selector_record(s) for s in self.ts_local],
            "peer": [self.peer[0], self.peer[1]],
            "ike_spi": self.ike_spi.hex(),
            "created": self.created,
            "replaces": self.replaces,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ChildSA:  # type: ignore[type-arg]
        return cls(
            int(d["spi_in"]),
            int(d["spi_out"]),
            bytes.fromhex(d["key_in"]),
            bytes.fromhex(d["key_out"]),
            tuple(selector_from_record(s) for s in d["ts_remote"]),
            tuple(selector_from_record(s) for s in d["ts_local"]),
            (str(d["peer"][0]), int(d["peer"][1])),
            bytes.fromhex(d["ike_spi"]),
            float(d["created"]),
            None if d.get("replaces") is None else int(d["replaces"]),
        )


@dataclass(slots=True)
class Send:
    """Send ``data`` (an IKE message) from ``local`` to ``peer``."""

    data: bytes
    peer: Addr
    local: Addr


@dataclass(slots=True)
class ChildUp:
    child: ChildSA


@dataclass(slots=True)
class ChildDown:
    spi_in: int
    spi_out: int


@dataclass(slots=True)
class IkeDown:
    ike_spi: bytes


@dataclass(slots=True)
class IkeUpdate:
    """An established IKE SA changed (made, an exchange answered, rekeyed): its whole
    state as a record (:meth:`~.responder.IkeSA.to_dict`), for the other servers'
    responders to :meth:`~.responder.Responder.adopt`."""

    spi_r: bytes
    record: dict[str, object]


Output = Send | ChildUp | ChildDown | IkeDown | IkeUpdate
