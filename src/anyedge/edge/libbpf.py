"""The few calls of libbpf the edge needs, through ctypes: open and load a BPF object,
find its programs and maps, read and write map entries, run a program on a packet
(``BPF_PROG_TEST_RUN``), attach an XDP program to an interface, an sk_lookup
program to a network namespace (a BPF link) and a tracing program (a raw
tracepoint) to its hook; a socket filter is attached by the socket's owner with
``setsockopt(SO_ATTACH_BPF)`` and a :attr:`Program.fd`.

libbpf (``libbpf.so.1``, Debian's ``libbpf1``) does the work: relocations against the
kernel's BTF (CO-RE), map creation, the verifier.  This module only turns its error
numbers into :class:`BpfError` and keeps the object alive while Python holds it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1  # generic XDP: any interface, after the skb is built
XDP_FLAGS_DRV_MODE = 1 << 2  # native XDP: in the driver (veth has it)
XDP_FLAGS_REPLACE = 1 << 4  # swap the program named by old_prog_fd, atomically
XDP_MODES = {"generic": XDP_FLAGS_SKB_MODE, "native": XDP_FLAGS_DRV_MODE}

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
VERDICTS = {XDP_ABORTED: "aborted", XDP_DROP: "drop", XDP_PASS: "pass", XDP_TX: "tx"}
VERDICTS[XDP_REDIRECT] = "redirect"

BPF_SK_LOOKUP = 36  # enum bpf_attach_type: an sk_lookup program on a network namespace


class BpfError(RuntimeError):
    """A libbpf or bpf(2) call failed; ``errno`` holds the error number, ``detail`` what
    the kernel said (the end of the verifier's log for a program it refused)."""

    def __init__(self, what: str, err: int, detail: str = "") -> None:
        self.errno = err
        self.detail = detail
        text = f"{what}: {_strerror(err)} (errno {err})"
        super().__init__(text + (f"; the kernel's log ends:\n{detail}" if detail else ""))


def _strerror(err: int) -> str:
    """libbpf's words for its own error numbers (4000 and up), the C library's for the
    rest."""
    if err < 4000:  # LIBBPF_ERRNO__START
        return os.strerror(err)
    buf = ctypes.create_string_buffer(128)
    lib().libbpf_strerror(err, buf, len(buf))
    return buf.value.decode(errors="replace") or os.strerror(err)


class TestRun(NamedTuple):
    """What one ``BPF_PROG_TEST_RUN`` gave back."""

    retval: int  # the program's return value (an XDP verdict for XDP)
    data: bytes  # the packet as the program left it
    duration_ns: int  # mean time of one run, as the kernel measured it


class _OpenOpts(ctypes.Structure):
    """``struct bpf_object_open_opts`` of libbpf 1.x, up to the kernel log fields."""

    _fields_ = (
        ("sz", ctypes.c_size_t),
        ("object_name", ctypes.c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", ctypes.c_char_p),
        ("_removed_attach_prog_fd", ctypes.c_uint32),
        ("kconfig", ctypes.c_char_p),
        ("btf_custom_path", ctypes.c_char_p),
        ("kernel_log_buf", ctypes.c_void_p),
        ("kernel_log_size", ctypes.c_size_t),
        ("kernel_log_level", ctypes.c_uint32),
    )


VERIFIER_LOG_SIZE = 1 << 22  # the verifier's log of a refused program, kept for the error
VERIFIER_LOG_TAIL = 40  # lines of it the error shows


class _TestRunOpts(ctypes.Structure):
    """``struct bpf_test_run_opts`` of libbpf 1.x."""

    _fields_ = (
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    )


class _XdpAttachOpts(ctypes.Structure):
    """libbpf's ``struct bpf_xdp_attach_opts``."""

    _fields_ = (("sz", ctypes.c_size_t), ("old_prog_fd", ctypes.c_int))


def _sig(lib: ctypes.CDLL, name: str, restype: Any, *argtypes: Any) -> None:
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)


@cache
def lib() -> ctypes.CDLL:
    """libbpf, loaded once; :class:`BpfError` (ENOENT) when it is not installed."""
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        so = ctypes.CDLL(name, use_errno=True)
    except OSError:
        raise BpfError(f"cannot load libbpf ({name}); install libbpf1", errno.ENOENT) from None
    vp, i, u32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32
    _sig(so, "bpf_object__open_file", vp, ctypes.c_char_p, ctypes.POINTER(_OpenOpts))
    _sig(so, "bpf_object__load", i, vp)
    _sig(so, "bpf_object__close", None, vp)
    _sig(so, "bpf_object__find_program_by_name", vp, vp, ctypes.c_char_p)
    _sig(so, "bpf_object__find_map_by_name", vp, vp, ctypes.c_char_p)
    _sig(so, "bpf_program__fd", i, vp)
    _sig(so, "bpf_map__fd", i, vp)
    _sig(so, "bpf_map__value_size", u32, vp)
    _sig(so, "bpf_map__max_entries", u32, vp)
    _sig(so, "bpf_map_update_elem", i, i, vp, vp, ctypes.c_uint64)
    _sig(so, "bpf_map_lookup_elem", i, i, vp, vp)
    _sig(so, "bpf_map_delete_elem", i, i, vp)
    _sig(so, "bpf_map_update_batch", i, i, vp, vp, ctypes.POINTER(u32), vp)
    _sig(so, "bpf_map_get_next_key", i, i, vp, vp)
    _sig(so, "bpf_link_create", i, i, i, i, vp)
    _sig(so, "bpf_map_lookup_batch", i, i, vp, vp, vp, vp, ctypes.POINTER(u32), vp)
    _sig(so, "bpf_prog_test_run_opts", i, i, ctypes.POINTER(_TestRunOpts))
    _sig(so, "bpf_program__attach", vp, vp)
    _sig(so, "bpf_link__destroy", i, vp)
    _sig(so, "bpf_xdp_attach", i, i, i, u32, vp)
    _sig(so, "bpf_xdp_detach", i, i, u32, vp)
    _sig(so, "libbpf_num_possible_cpus", i)
    _sig(so, "libbpf_strerror", i, i, ctypes.c_char_p, ctypes.c_size_t)
    return so


def _check(what: str, rc: int) -> int:
    """libbpf returns a negative error number (and sets errno) on failure."""
    if rc < 0:
        raise BpfError(what, -rc if rc != -1 else (ctypes.get_errno() or errno.EINVAL))
    return rc


def possible_cpus() -> int:
    return _check("libbpf_num_possible_cpus", lib().libbpf_num_possible_cpus())


class Map:
    """One map of a loaded object: fixed-size keys and values as bytes-like ctypes."""

    def __init__(self, obj: BpfObject, name: str, handle: int) -> None:
        self._obj = obj  # keeps the object (and so the map's fd) alive
        self.name = name
        self.fd = _check(f"bpf_map__fd({name})", lib().bpf_map__fd(handle))
        self.value_size = int(lib().bpf_map__value_size(handle))
        self.max_entries = int(lib().bpf_map__max_entries(handle))

    def update(self, key: Any, value: Any) -> None:
        self._obj._live()  # a closed object's fds may already belong to other files
        rc = lib().bpf_map_update_elem(self.fd, ctypes.byref(key), ctypes.byref(value), 0)
        _check(f"update of map {self.name}", rc)

    def delete(self, key: Any) -> None:
        self._obj._live()
        _check(
            f"delete from map {self.name}", lib().bpf_map_delete_elem(self.fd, ctypes.byref(key))
        )

    def update_batch(self, keys: Any, values: Any, count: int) -> None:
        """Write ``count`` entries in one ``BPF_MAP_UPDATE_BATCH`` call: ``keys`` and
        ``values`` are contiguous buffers (ctypes arrays, or anything with a
        ``ctypes.data`` address such as a numpy array) of ``count`` keys and values.
        Each entry is written atomically, the batch as a whole is not."""
        self._obj._live()
        n = ctypes.c_uint32(count)
        rc = lib().bpf_map_update_batch(
            self.fd, _address(keys), _address(values), ctypes.byref(n), None
        )
        _check(f"batch update of map {self.name} ({n.value} of {count} written)", rc)

    def lookup(self, key: Any, value: Any) -> None:
        """Fill ``value`` (a ctypes object of the map's value size; for a per-CPU map,
        of that size rounded up to 8 bytes times :func:`possible_cpus`)."""
        self._obj._live()
        rc = lib().bpf_map_lookup_elem(self.fd, ctypes.byref(key), ctypes.byref(value))
        _check(f"lookup in map {self.name}", rc)

    def keys(self, key_type: Any) -> list[Any]:
        """Every key of the map now, as ``key_type`` (a ctypes type of the key's size),
        walked with ``bpf_map_get_next_key``.  A hash map changed during the walk may
        yield a key twice or miss one; that is the kernel's contract, not ours."""
        self._obj._live()
        out: list[Any] = []
        prev: Any = None
        while True:
            nxt = key_type()
            prev_p = None if prev is None else ctypes.byref(prev)
            rc = lib().bpf_map_get_next_key(self.fd, prev_p, ctypes.byref(nxt))
            if rc < 0:
                err = -rc if rc != -1 else ctypes.get_errno()
                if err == errno.ENOENT:
                    return out
                raise BpfError(f"walk of map {self.name}", err)
            out.append(nxt)
            prev = nxt

    def dump(self, key_size: int, chunk: int = 4096) -> tuple[bytes, bytes, int]:
        """Every entry of a hash map, ``chunk`` at a time with ``BPF_MAP_LOOKUP_BATCH``
        (5.6): ``(keys, values, count)``, the keys and the values each packed one after
        another.  An entry changed during the dump may be read before or after the change;
        one added or deleted meanwhile may be missed."""
        self._obj._live()
        vs = self.value_size
        keys = ctypes.create_string_buffer(chunk * key_size)
        values = ctypes.create_string_buffer(chunk * vs)
        token = ctypes.c_uint64()
        out_k: list[bytes] = []
        out_v: list[bytes] = []
        got, first = 0, True
        while True:
            n = ctypes.c_uint32(chunk)
            rc = lib().bpf_map_lookup_batch(
                self.fd,
                None if first else ctypes.byref(token),
                ctypes.byref(token),
                keys,
                values,
                ctypes.byref(n),
                None,
            )
            first = False
            if rc < 0 and rc != -errno.ENOENT:
                _check(f"batch lookup in map {self.name}", rc)
            out_k.append(keys.raw[: n.value * key_size])
            out_v.append(values.raw[: n.value * vs])
            got += n.value
            if rc == -errno.ENOENT:  # the end
                return b"".join(out_k), b"".join(out_v), got

    def lookup_all(self, values: Any) -> None:
        """Fill ``values`` — a ctypes array of ``max_entries`` values (each as in
        :meth:`lookup`, per-CPU values included) — with every entry of an array map, in
        one ``BPF_MAP_LOOKUP_BATCH`` call (5.6), or a lookup per key where the kernel
        lacks it."""
        self._obj._live()
        count = self.max_entries
        keys = (ctypes.c_uint32 * count)()
        out_batch = ctypes.c_uint32()
        n = ctypes.c_uint32(count)
        rc = lib().bpf_map_lookup_batch(
            self.fd,
            None,
            ctypes.byref(out_batch),
            keys,
            ctypes.byref(values),
            ctypes.byref(n),
            None,
        )
        if rc == 0 or (rc == -errno.ENOENT and n.value == count):  # ENOENT: the end
            return
        if -rc not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, 524):
            _check(f"batch lookup in map {self.name}", rc)
        for k in range(count):  # no batch operations here: one lookup per key
            self.lookup(ctypes.c_uint32(k), values[k])


def _address(buf: Any) -> int:
    data = getattr(buf, "ctypes", None)
    if data is not None:  # a numpy array
        return int(data.data)
    return ctypes.addressof(buf)


class Program:
    """One program of a loaded object."""

    def __init__(self, obj: BpfObject, name: str, handle: int) -> None:
        self._obj = obj
        self.name = name
        self._handle = handle
        self.fd = _check(f"bpf_program__fd({name})", lib().bpf_program__fd(handle))

    def test_run(self, packet: bytes, repeat: int = 1, ingress_ifindex: int = 0) -> TestRun:
        """Run the program once (or ``repeat`` times) on ``packet`` inside the kernel,
        with ``BPF_PROG_TEST_RUN``; an XDP program sees the packet arrive on
        ``ingress_ifindex`` when it is given (an interface of the caller's network
        namespace: what ``bpf_fib_lookup`` starts from), else on loopback."""
        self._obj._live()
        data_in = ctypes.create_string_buffer(packet, len(packet))
        data_out = ctypes.create_string_buffer(len(packet) + 256)
        opts = _TestRunOpts(
            sz=ctypes.sizeof(_TestRunOpts),
            data_in=ctypes.cast(data_in, ctypes.c_void_p),
            data_out=ctypes.cast(data_out, ctypes.c_void_p),
            data_size_in=len(packet),
            data_size_out=len(data_out),
            repeat=repeat,
        )
        if ingress_ifindex:  # struct xdp_md: data, data_end, data_meta, ingress_ifindex
            ctx = (ctypes.c_uint32 * 6)(0, len(packet), 0, ingress_ifindex, 0, 0)
            opts.ctx_in, opts.ctx_size_in = ctypes.addressof(ctx), ctypes.sizeof(ctx)
        rc = lib().bpf_prog_test_run_opts(self.fd, ctypes.byref(opts))
        _check(f"test run of {self.name}", rc)
        return TestRun(int(opts.retval), data_out.raw[: opts.data_size_out], int(opts.duration))

    def test_run_context(self, ctx: Any) -> tuple[int, bytes]:
        """Run the program once on a context alone (no packet), as program types such
        as sk_lookup are run: ``ctx`` is a ctypes structure of the program's context
        (``struct bpf_sk_lookup``); returns the program's return value and the context
        as the kernel gave it back."""
        self._obj._live()
        size = ctypes.sizeof(ctx)
        ctx_out = ctypes.create_string_buffer(size)
        opts = _TestRunOpts(
            sz=ctypes.sizeof(_TestRunOpts),
            ctx_in=ctypes.addressof(ctx),
            ctx_size_in=size,
            ctx_out=ctypes.cast(ctx_out, ctypes.c_void_p),
            ctx_size_out=size,
            repeat=1,
        )
        rc = lib().bpf_prog_test_run_opts(self.fd, ctypes.byref(opts))
        _check(f"test run of {self.name}", rc)
        return int(opts.retval), ctx_out.raw[: opts.ctx_size_out]

    def send_live(self, frame: bytes, repeat: int, batch_size: int = 64) -> int:
        """Run an XDP program ``repeat`` times on ``frame`` in live-frames mode
        (``BPF_F_TEST_XDP_LIVE_FRAMES``, 5.18): what it redirects or sends back goes out
        for real, from the loopback device of the caller's network namespace.  Returns
        the kernel's mean time per run (ns)."""
        self._obj._live()
        data_in = ctypes.create_string_buffer(frame, len(frame))
        opts = _TestRunOpts(
            sz=ctypes.sizeof(_TestRunOpts),
            data_in=ctypes.cast(data_in, ctypes.c_void_p),
            data_size_in=len(frame),
            repeat=repeat,
            flags=BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size=batch_size,
        )
        rc = lib().bpf_prog_test_run_opts(self.fd, ctypes.byref(opts))
        _check(f"live test run of {self.name}", rc)
        return int(opts.duration)

    def attach(self) -> Link:
        """Attach a tracing program to the hook its section names (``raw_tp/NAME``...);
        it stays attached until the returned link is closed (or the object is)."""
        self._obj._live()
        handle = lib().bpf_program__attach(self._handle)
        if not handle:
            raise BpfError(f"attach of {self.name}", ctypes.get_errno() or errno.EINVAL)
        return Link(self._obj, self.name, handle)

    def attach_xdp(
        self, ifindex: int, mode: str = "generic", replace: Program | None = None
    ) -> None:
        """Attach to ``ifindex`` (in the caller's network namespace), replacing nothing:
        EBUSY if a program is already there.  With ``replace``, swap that program (which
        must be the one attached) for this one in a single step: no packet meets
        neither."""
        self._obj._live()
        if replace is None:
            flags, opts = XDP_MODES[mode] | XDP_FLAGS_UPDATE_IF_NOEXIST, None
        else:
            flags = XDP_MODES[mode] | XDP_FLAGS_REPLACE
            opts = ctypes.byref(_XdpAttachOpts(ctypes.sizeof(_XdpAttachOpts), replace.fd))
        rc = lib().bpf_xdp_attach(ifindex, self.fd, flags, opts)
        _check(f"XDP attach of {self.name} to interface {ifindex} ({mode})", rc)

    def attach_netns(self, netns_fd: int, attach_type: int = BPF_SK_LOOKUP) -> int:
        """Attach to the network namespace open as ``netns_fd`` with a BPF link
        (``bpf_link_create``); returns the link's fd.  Closing that fd detaches the
        program; several links may share one namespace (sk_lookup runs them in turn)."""
        self._obj._live()
        rc = lib().bpf_link_create(self.fd, netns_fd, attach_type, None)
        return _check(f"link of {self.name} to a network namespace", rc)


class Link:
    """A program attached to a hook (``struct bpf_link``); :meth:`close` detaches it."""

    def __init__(self, obj: BpfObject, name: str, handle: int) -> None:
        self._obj = obj
        self.name = name
        self._handle: int | None = handle
        obj._links.append(self)

    def close(self) -> None:
        if self._handle is not None:
            lib().bpf_link__destroy(self._handle)
            self._handle = None


def detach_xdp(ifindex: int, mode: str = "generic") -> None:
    rc = lib().bpf_xdp_detach(ifindex, XDP_MODES[mode], None)
    _check(f"XDP detach from interface {ifindex} ({mode})", rc)


class BpfObject:
    """A compiled BPF object file, opened and loaded into the kernel.  Closing it (or
    losing the last reference) unloads programs and maps that nothing else holds."""

    def __init__(self, path: str | Path) -> None:
        self._handle: int | None = None
        self._links: list[Link] = []
        self.path = Path(path)
        # libbpf loads quietly and, if the kernel refuses, loads again with the verifier's
        # log into this buffer (log level 0: no log asked for a program that passes)
        log = ctypes.create_string_buffer(VERIFIER_LOG_SIZE)
        opts = _OpenOpts(
            sz=ctypes.sizeof(_OpenOpts),
            kernel_log_buf=ctypes.cast(log, ctypes.c_void_p),
            kernel_log_size=len(log),
        )
        handle = lib().bpf_object__open_file(os.fsencode(path), ctypes.byref(opts))
        if not handle:
            raise BpfError(f"cannot open BPF object {path}", ctypes.get_errno() or errno.EINVAL)
        self._handle = handle
        rc = lib().bpf_object__load(handle)
        if rc < 0:
            self.close()
            lines = log.value.decode(errors="replace").rstrip("\n").splitlines()
            tail = "\n".join(lines[-VERIFIER_LOG_TAIL:])
            raise BpfError(f"cannot load BPF object {path}", -rc, tail)

    def _live(self) -> int:
        if self._handle is None:
            raise BpfError(f"BPF object {self.path} is closed", errno.EBADF)
        return self._handle

    def program(self, name: str) -> Program:
        h = lib().bpf_object__find_program_by_name(self._live(), name.encode())
        if not h:
            raise BpfError(f"no program {name} in {self.path}", errno.ENOENT)
        return Program(self, name, h)

    def map(self, name: str) -> Map:
        h = lib().bpf_object__find_map_by_name(self._live(), name.encode())
        if not h:
            raise BpfError(f"no map {name} in {self.path}", errno.ENOENT)
        return Map(self, name, h)

    def close(self) -> None:
        while self._links:  # detach before the programs go
            self._links.pop().close()
        if self._handle is not None:
            lib().bpf_object__close(self._handle)
            self._handle = None

    def __del__(self) -> None:
        self.close()


def check_size(m: Map, size: int, what: str, source: str) -> None:
    """Refuse an object whose map ``m`` holds values of another size than anyedge's
    record of ``what`` (the C source and ``source`` have drifted apart)."""
    if m.value_size != size:
        raise RuntimeError(
            f"map {m.name}: the object's {what} is {m.value_size} bytes, anyedge's is "
            f"{size}: the C source and {source} disagree"
        )


class Loaded:
    """What every loader shares: it owns ``obj``; :meth:`close` undoes what it attached
    (:meth:`detach`) and closes the object, also at the end of a ``with`` block."""

    obj: BpfObject

    def detach(self) -> None:
        """Undo what this loader attached (nothing, unless a loader says otherwise)."""

    def close(self) -> None:
        self.detach()
        self.obj.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
