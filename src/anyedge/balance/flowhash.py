"""The flow hash: a packet's 5-tuple to a 32-bit number, the way the data plane does it.

The load balancer's data plane (an XDP program, later) reads a packet's IPv4 5-tuple,
hashes it and looks the hash up in the bucket table (:mod:`.table`).  Both sides must
compute the same number, so the hash is written down here exactly:

    a = source address        (32 bits, host byte order)
    b = destination address   (32 bits, host byte order)
    c = source port << 16 | destination port   (host byte order)
    hash = jhash_3words(a, b, c, seed XOR protocol)

``jhash_3words`` is the Linux kernel's (``include/linux/jhash.h``: Bob Jenkins' lookup3
final mix, with ``initval + 0xdeadbeef + 12`` added to each word first), so a BPF
program can include the kernel's header or copy its eight lines; the tests check this
implementation against the kernel's code compiled with gcc.  Every operation is on
unsigned 32-bit words and wraps.  The bucket is the hash's low bits:
``hash & (buckets - 1)``.

An IPv6 flow is folded to this form by XOR-ing each address's four 32-bit words into
one (``fold6``) before hashing.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

U32 = npt.NDArray[np.uint32]

JHASH_INITVAL = 0xDEADBEEF


def _u32(x: npt.ArrayLike) -> U32:
    """``x`` as an array of unsigned 32-bit words (values must fit)."""
    a = np.asarray(x)
    if a.dtype.kind not in "ui" and a.size:
        raise TypeError(f"integers expected, got {a.dtype}")
    if a.size and (int(a.min()) < 0 or int(a.max()) > 0xFFFF_FFFF):
        raise ValueError("values must fit in 32 unsigned bits")
    return np.atleast_1d(a.astype(np.uint32))


def _rol32(x: U32, k: int) -> U32:
    return (x << np.uint32(k)) | (x >> np.uint32(32 - k))


def jhash_3words(
    a: npt.ArrayLike, b: npt.ArrayLike, c: npt.ArrayLike, initval: npt.ArrayLike
) -> U32:
    """The kernel's ``jhash_3words(a, b, c, initval)``, element-wise on uint32 arrays."""
    a_, b_, c_, iv = np.broadcast_arrays(_u32(a), _u32(b), _u32(c), _u32(initval))
    iv = iv + np.uint32((JHASH_INITVAL + (3 << 2)) & 0xFFFF_FFFF)
    a_, b_, c_ = a_ + iv, b_ + iv, c_ + iv
    # __jhash_final(a, b, c)
    c_ ^= b_
    c_ -= _rol32(b_, 14)
    a_ ^= c_
    a_ -= _rol32(c_, 11)
    b_ ^= a_
    b_ -= _rol32(a_, 25)
    c_ ^= b_
    c_ -= _rol32(b_, 16)
    a_ ^= c_
    a_ -= _rol32(c_, 4)
    b_ ^= a_
    b_ -= _rol32(a_, 14)
    c_ ^= b_
    c_ -= _rol32(b_, 24)
    return np.asarray(c_, dtype=np.uint32)


def flow_hash(
    src: npt.ArrayLike,
    dst: npt.ArrayLike,
    sport: npt.ArrayLike,
    dport: npt.ArrayLike,
    proto: npt.ArrayLike,
    seed: int = 0,
) -> U32:
    """The 32-bit hash of each IPv4 5-tuple (arrays of equal length, or scalars that
    broadcast): addresses as integers, ports 0–65535, protocol 0–255 (6 TCP, 17 UDP)."""
    sp, dp, pr = _u32(sport), _u32(dport), _u32(proto)
    if (sp.size and int(sp.max()) > 0xFFFF) or (dp.size and int(dp.max()) > 0xFFFF):
        raise ValueError("ports must be 0-65535")
    if pr.size and int(pr.max()) > 0xFF:
        raise ValueError("protocol must be 0-255")
    ports = (sp << np.uint32(16)) | dp
    return jhash_3words(src, dst, ports, np.uint32(seed & 0xFFFF_FFFF) ^ pr)


def fold6(address: npt.ArrayLike) -> U32:
    """IPv6 addresses, as an (n, 4) array of 32-bit words (host order, most significant
    first), folded to one word each by XOR, for :func:`flow_hash`."""
    w = np.asarray(address)
    if w.ndim != 2 or w.shape[1] != 4:
        raise ValueError("IPv6 addresses are (n, 4) arrays of 32-bit words")
    u = _u32(w).reshape(-1, 4)
    return np.asarray(u[:, 0] ^ u[:, 1] ^ u[:, 2] ^ u[:, 3], dtype=np.uint32)
