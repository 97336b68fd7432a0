"""Dropwatch's loader: the ``kfree_skb`` raw-tracepoint program of
``bpf/dropwatch.bpf.c``, which counts the packets the kernel drops per drop reason, and
the reasons' names read from the running kernel's BTF.

::

    from anyedge.edge.dropwatch import Dropwatch

    with Dropwatch() as dw:                 # loads and attaches; needs root
        ...
        print(dw.drops())                   # {"NO_SOCKET": 12, "NETFILTER_DROP": 3, ...}

The tracepoint fires for every socket buffer freed as dropped, on every CPU and in
every network namespace; its third argument (Linux 5.17 and later) is the
``enum skb_drop_reason``.  The names are the enum's, without the ``SKB_DROP_REASON_``
prefix (``SKB_CONSUMED`` and ``SKB_NOT_DROPPED_YET`` lose ``SKB_``), as the kernel's own
``skb:kfree_skb`` trace output prints them; they are read from
``/sys/kernel/btf/vmlinux`` itself, not from a list kept here, because the enum grows
with every kernel release and its numbers move.
"""

from __future__ import annotations

import ctypes
import errno
import struct
from functools import cache
from pathlib import Path

from . import build
from .libbpf import BpfError, BpfObject, Link, Loaded, possible_cpus

PROGRAM = "dropwatch"
MAX_REASONS = 512  # DW_MAX_REASONS: the last slot holds every reason at or above it
OTHER = "OTHER_SUBSYSTEM"  # the last slot's name
ENUM = "skb_drop_reason"

# BTF kinds (include/uapi/linux/btf.h) and the bytes each adds after its 12-byte header
_BTF_ENUM, _BTF_ENUM64 = 6, 19
_EXTRA_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}  # INT, ARRAY, VAR, DECL_TAG
_EXTRA_PER_MEMBER = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}  # STRUCT ... ENUM64


def btf_enum(name: str, path: Path = build.VMLINUX_BTF) -> dict[int, str]:
    """The values of ``enum name`` in the BTF file ``path`` (the running kernel's by
    default): value -> enumerator name.  Empty when there is no such enum."""
    data = path.read_bytes()
    magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
    if magic != 0xEB9F:
        raise ValueError(f"{path}: not BTF (magic {magic:#x})")
    type_off, type_len, str_off, _str_len = struct.unpack_from("<IIII", data, 8)
    types = hdr_len + type_off
    strings = hdr_len + str_off

    def string(off: int) -> str:
        end = data.index(b"\0", strings + off)
        return data[strings + off : end].decode()

    pos, end = types, types + type_len
    while pos < end:
        name_off, info, _size = struct.unpack_from("<III", data, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        pos += 12
        if kind in (_BTF_ENUM, _BTF_ENUM64) and name_off and string(name_off) == name:
            out = {}
            step = 8 if kind == _BTF_ENUM else 12
            for i in range(vlen):
                member = pos + i * step
                mname, lo = struct.unpack_from("<Ii", data, member)
                value = lo
                if kind == _BTF_ENUM64:
                    hi = struct.unpack_from("<I", data, member + 8)[0]
                    value = (hi << 32) | (lo & 0xFFFF_FFFF)
                out[value] = string(mname)
            return out
        pos += _EXTRA_FIXED.get(kind, 0) + vlen * _EXTRA_PER_MEMBER.get(kind, 0)
    return {}


def short_name(enumerator: str) -> str:
    """``SKB_DROP_REASON_NO_SOCKET`` -> ``NO_SOCKET``, ``SKB_CONSUMED`` -> ``CONSUMED``."""
    for prefix in ("SKB_DROP_REASON_", "SKB_"):
        if enumerator.startswith(prefix):
            return enumerator[len(prefix) :]
    return enumerator


@cache
def reason_names() -> dict[int, str]:
    """Drop reason number -> name, on the running kernel (read once per process)."""
    names = {v: short_name(n) for v, n in btf_enum(ENUM).items() if 0 <= v < MAX_REASONS - 1}
    names[MAX_REASONS - 1] = OTHER
    return names


class Dropwatch(Loaded):
    """The dropwatch program, loaded and attached to ``kfree_skb`` until closed."""

    def __init__(self, obj_path: str | Path | None = None) -> None:
        self.obj = BpfObject(obj_path or build.object_path(PROGRAM))
        try:
            self.program = self.obj.program(PROGRAM)
            self._drops = self.obj.map("dw_drops")
            self._ncpu = possible_cpus()
            self.link: Link = self.program.attach()
        except BpfError as e:
            self.obj.close()
            if e.errno == errno.EINVAL:
                raise BpfError(
                    "attach of dropwatch to the kfree_skb raw tracepoint (a kernel before "
                    "5.17 has no drop reason argument)",
                    e.errno,
                ) from None
            raise

    def counts(self) -> dict[int, int]:
        """Drops since loading, per reason number (non-zero ones), summed over CPUs."""
        values = ((ctypes.c_uint64 * self._ncpu) * MAX_REASONS)()
        self._drops.lookup_all(values)
        return {r: n for r, per_cpu in enumerate(values) if (n := sum(per_cpu))}

    def drops(self) -> dict[str, int]:
        """Drops since loading, per reason name (non-zero ones)."""
        names = reason_names()
        return {names.get(r, f"REASON_{r}"): n for r, n in self.counts().items()}
