"""Classic STUN Binding (RFC 3489): the requests of clients older than the magic cookie.

RFC 3489 clients (pystun3, old NAT-type checkers, some SIP phones) send a Binding
Request whose 16-byte transaction id takes the place of RFC 8489's magic cookie and
12-byte id, and read MAPPED-ADDRESS (not XOR-MAPPED-ADDRESS) from the answer; to tell
the NAT type they ask, with CHANGE-REQUEST, for answers from the server's other IP
and/or port, which CHANGED-ADDRESS names.  RFC 8489 §12 asks a server to answer them.

:func:`decode_binding` reads such a request (a Binding Request without the cookie;
attributes unpadded as RFC 3489 has them, anything but CHANGE-REQUEST ignored) and
:func:`encode_binding_response` writes the answer: MAPPED-ADDRESS, SOURCE-ADDRESS
(where it leaves from) and CHANGED-ADDRESS when the server has another address.
"""

from __future__ import annotations

import struct

from .stun import MAGIC_COOKIE, StunError, pack_address

Addr = tuple[str, int]

BINDING_REQUEST = 0x0001
BINDING_RESPONSE = 0x0101
MAPPED_ADDRESS = 0x0001
SOURCE_ADDRESS = 0x0004
CHANGED_ADDRESS = 0x0005
CHANGE_REQUEST = 0x0003
CHANGE_IP, CHANGE_PORT = 0x4, 0x2
_HEAD = struct.Struct("!HH")
_COOKIE = MAGIC_COOKIE.to_bytes(4, "big")


def is_classic(data: bytes) -> bool:
    """A message of RFC 3489's shape: a STUN header without the magic cookie."""
    return len(data) >= 20 and data[0] < 0x40 and data[4:8] != _COOKIE


def decode_binding(data: bytes) -> tuple[bytes, int]:
    """(16-byte transaction id, CHANGE-REQUEST flags) of a classic Binding Request;
    StunError for anything else."""
    mtype, length = _HEAD.unpack_from(data)
    if mtype != BINDING_REQUEST:
        raise StunError(f"classic STUN type {mtype:#06x} is not a Binding Request")
    if 20 + length != len(data):
        raise StunError(f"classic STUN length {length}, {len(data) - 20} bytes follow")
    flags, pos = 0, 20
    while pos < len(data):
        if pos + 4 > len(data):
            raise StunError("classic STUN attribute header truncated")
        atype, alen = _HEAD.unpack_from(data, pos)
        if pos + 4 + alen > len(data):
            raise StunError(f"classic STUN attribute {atype:#06x} runs past the end")
        if atype == CHANGE_REQUEST:
            if alen != 4:
                raise StunError("CHANGE-REQUEST is 4 bytes")
            flags = int.from_bytes(data[pos + 4 : pos + 8], "big") & (CHANGE_IP | CHANGE_PORT)
        pos += 4 + alen
    return data[4:20], flags


def encode_binding_response(
    transaction_id: bytes, mapped: Addr, source: Addr, changed: Addr | None
) -> bytes:
    """A classic Binding Response: MAPPED-ADDRESS, SOURCE-ADDRESS, CHANGED-ADDRESS."""
    attrs = [(MAPPED_ADDRESS, mapped), (SOURCE_ADDRESS, source)]
    if changed is not None:
        attrs.append((CHANGED_ADDRESS, changed))
    body = b"".join(_HEAD.pack(t, len(v)) + v for t, v in ((t, pack_address(a)) for t, a in attrs))
    return _HEAD.pack(BINDING_RESPONSE, len(body)) + transaction_id + body
