"""The table a running XDP load balancer has in force, read from the kernel by anyone.

:class:`~.balancer.Balancer` keeps its maps in the process that loaded it (the edge
agent, a test).  Another process on the same server — the pmtud daemon — reads them
through the kernel's object ids instead, so it sees the table the data plane really
uses, whoever changed it and however (drain, add, remove, re-weight)::

    interface ──bpf_xdp_query_id──▶ program "balancer" ──its map ids──▶ lb_table,
    lb_servers, lb_config ──lb_table[0] (an array of maps: the id of the bucket array in
    force)──▶ lb_buckets0 or lb_buckets1 ──one batch lookup──▶ 65,536 × (first, second)

:meth:`BalancerView.in_force` is one lookup (which bucket array is in force, by id) and
is cheap enough to ask before every decision; :meth:`BalancerView.read` copies the
whole table (the bucket array, the servers' MACs, the hash seed): 30–60 ms on the
lab's shared machine, most of it the kernel's batch lookup of 65,536 entries.
The balancer commits a table by pointing ``lb_table`` at the other of its two arrays,
so the id changes at every commit — but two commits in a row bring the first id back
with new contents, so a reader that must not miss a change also reads the whole table
now and then and compares (:mod:`.pmtud_site` does, every five seconds).

Nothing here writes to a map.  Needs ``CAP_BPF``/root and libbpf (:mod:`.libbpf`).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .balancer import BUCKETS, FLAG_TABLE, MAX_SERVERS, NO_SERVER, PROGRAM, _Config, _Server
from .libbpf import BpfError, _check, _sig, lib

MAPS = ("lb_table", "lb_servers", "lb_config")


class _ProgInfo(ctypes.Structure):
    """The head of ``struct bpf_prog_info`` (the kernel fills what fits)."""

    _fields_ = (
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
    )


class _MapInfo(ctypes.Structure):
    """The head of ``struct bpf_map_info``."""

    _fields_ = (
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    )


def _calls() -> ctypes.CDLL:
    so = lib()
    u32p = ctypes.POINTER(ctypes.c_uint32)
    _sig(so, "bpf_xdp_query_id", ctypes.c_int, ctypes.c_int, ctypes.c_int, u32p)
    _sig(so, "bpf_prog_get_fd_by_id", ctypes.c_int, ctypes.c_uint32)
    _sig(so, "bpf_map_get_fd_by_id", ctypes.c_int, ctypes.c_uint32)
    _sig(so, "bpf_obj_get_info_by_fd", ctypes.c_int, ctypes.c_int, ctypes.c_void_p, u32p)
    return so


def _info(fd: int, info: ctypes.Structure) -> None:
    n = ctypes.c_uint32(ctypes.sizeof(info))
    _check("bpf_obj_get_info_by_fd", _calls().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), n))


def _lookup(fd: int, key: int, value: ctypes._CData) -> None:
    k = ctypes.c_uint32(key)
    _check("map lookup", lib().bpf_map_lookup_elem(fd, ctypes.byref(k), ctypes.byref(value)))


@dataclass(frozen=True)
class Snapshot:
    """One read of the balancer: per bucket its first and second hop (``-1``: none),
    the servers' MACs by index (``b""``: no server there), its hash seed and own index,
    and the id of the bucket array it was read from."""

    first: npt.NDArray[np.int32]
    second: npt.NDArray[np.int32]
    macs: tuple[bytes, ...]
    seed: int
    self_index: int
    array_id: int

    @property
    def buckets(self) -> int:
        return int(self.first.size)

    def same_table(self, other: Snapshot) -> bool:
        return (
            self.macs == other.macs
            and self.seed == other.seed
            and np.array_equal(self.first, other.first)
            and np.array_equal(self.second, other.second)
        )


class BalancerView:
    """The balancer attached (XDP) to ``iface`` in this network namespace, read-only.

    :class:`~.libbpf.BpfError` (``ENOENT``) when no balancer program is attached."""

    def __init__(self, iface: str) -> None:
        self.iface = iface
        self._fds: dict[str, int] = {}
        self._arrays: dict[int, int] = {}  # bucket array id -> fd
        self.prog_id = 0
        self._open()

    def _open(self) -> None:
        so = _calls()
        ifindex = socket.if_nametoindex(self.iface)
        prog_id = ctypes.c_uint32()
        _check(f"XDP query on {self.iface}", so.bpf_xdp_query_id(ifindex, 0, ctypes.byref(prog_id)))
        if not prog_id.value:
            raise BpfError(f"no XDP program on {self.iface}", errno.ENOENT)
        fd = _check("bpf_prog_get_fd_by_id", so.bpf_prog_get_fd_by_id(prog_id.value))
        try:
            head = _ProgInfo()
            _info(fd, head)
            if head.name.decode() != PROGRAM:
                raise BpfError(
                    f"the XDP program on {self.iface} is {head.name.decode()!r}, not {PROGRAM!r}",
                    errno.ENOENT,
                )
            ids = (ctypes.c_uint32 * head.nr_map_ids)()
            info = _ProgInfo(nr_map_ids=head.nr_map_ids, map_ids=ctypes.addressof(ids))
            _info(fd, info)
        finally:
            os.close(fd)
        fds: dict[str, int] = {}
        try:
            for map_id in ids:
                mfd = _check("bpf_map_get_fd_by_id", so.bpf_map_get_fd_by_id(map_id))
                m = _MapInfo()
                _info(mfd, m)
                name = m.name.decode()
                if name in MAPS and name not in fds:
                    fds[name] = mfd
                else:
                    os.close(mfd)
            missing = [n for n in MAPS if n not in fds]
            if missing:
                raise BpfError(f"the balancer on {self.iface} lacks {missing}", errno.ENOENT)
        except BaseException:
            for f in fds.values():
                os.close(f)
            raise
        self.close()
        self._fds, self.prog_id = fds, prog_id.value

    def attached(self) -> int:
        """The id of the XDP program on the interface now (0: none)."""
        prog_id = ctypes.c_uint32()
        ifindex = socket.if_nametoindex(self.iface)
        _check("XDP query", _calls().bpf_xdp_query_id(ifindex, 0, ctypes.byref(prog_id)))
        return prog_id.value

    def in_force(self) -> int:
        """The id of the bucket array in force (one map lookup)."""
        value = ctypes.c_uint32()
        _lookup(self._fds["lb_table"], 0, value)
        return value.value

    def _array(self, array_id: int) -> int:
        fd = self._arrays.get(array_id)
        if fd is None:
            fd = _check("bpf_map_get_fd_by_id", _calls().bpf_map_get_fd_by_id(array_id))
            self._arrays[array_id] = fd
        return fd

    def read(self) -> Snapshot:
        """The whole table in force now.  A balancer replaced on the interface since
        this view was opened (a new program) is found again."""
        if self.attached() != self.prog_id:
            self._open()
        cfg = _Config()
        _lookup(self._fds["lb_config"], 0, cfg)
        if not cfg.flags & FLAG_TABLE:  # loaded, nothing committed: it passes every packet
            raise BpfError(f"the balancer on {self.iface} has no table in force yet", errno.ENOENT)
        array_id = self.in_force()
        pairs = np.zeros((BUCKETS, 2), dtype=np.uint32)
        keys = np.zeros(BUCKETS, dtype=np.uint32)
        out, n = ctypes.c_uint32(), ctypes.c_uint32(BUCKETS)
        fd = self._array(array_id)
        rc = lib().bpf_map_lookup_batch(
            fd, None, ctypes.byref(out), keys.ctypes.data, pairs.ctypes.data, ctypes.byref(n), None
        )
        if rc < 0 and not (rc == -errno.ENOENT and n.value == BUCKETS):
            if -rc not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, 524):
                _check("batch lookup of the bucket array", rc)
            for k in range(BUCKETS):  # no batch operations on this kernel
                pair = (ctypes.c_uint32 * 2)()
                _lookup(fd, k, pair)
                pairs[k] = tuple(pair)
        first = pairs[:, 0].astype(np.int32)
        second = np.where(pairs[:, 1] == NO_SERVER, -1, pairs[:, 1]).astype(np.int32)
        macs = []
        for i in range(MAX_SERVERS):
            rec = _Server()
            _lookup(self._fds["lb_servers"], i, rec)
            macs.append(bytes(rec.mac) if rec.present else b"")
        while macs and not macs[-1]:
            macs.pop()
        return Snapshot(first, second, tuple(macs), cfg.seed, cfg.self, array_id)

    def close(self) -> None:
        for fd in (*self._fds.values(), *self._arrays.values()):
            os.close(fd)
        self._fds, self._arrays = {}, {}

    def __enter__(self) -> BalancerView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
