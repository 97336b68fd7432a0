"""Batched UDP system calls: ``recvmmsg`` and ``sendmmsg`` through ctypes on libc.

Python's socket module and uvloop read and send one datagram per system call, and each
call makes Python objects (the data, the source as a string and a tuple) and parses the
destination back.  :class:`Ring` is the memory a worker's UDP sockets share for one batch
at a time -- the event loop runs one callback at a time, so one ring serves every socket:

* ``slots`` receive slots of 64 KiB (any UDP datagram fits), each read at offset 4, so a
  relay socket's payload has room for the 4-byte ChannelData header in front of it and a
  listener's ChannelData payload starts at offset 8;
* the source of each datagram, as the kernel wrote it (``sockaddr_in``/``sockaddr_in6``),
  in a name slot; :meth:`Ring.key` is its bytes, the lanes' dictionary key, so the fast
  path never turns an address into a string;
* a send vector of as many messages, filled by :meth:`Ring.queue` with a destination
  (a ``sockaddr`` the lane wrote once) and a span of a receive slot -- nothing is copied
  in Python -- and sent by :meth:`Ring.flush` with one ``sendmmsg`` per run of messages
  for the same socket, in the order they were queued;
* segmentation offload (``gso``): a datagram queued right after one of the same size
  (at most :data:`GSO_SEGMENT_MAX` bytes) from the same socket to the same destination
  becomes one more iovec of that message, which carries a ``UDP_SEGMENT`` control
  message: the kernel sends up to :data:`GSO_SEGMENTS` datagrams as one through its
  stack and cuts them apart at the end (the device, or the receiving socket on
  loopback).  A segment fits any path's MTU; a message the kernel refuses to segment
  anyway (a route's smaller MTU: ``EMSGSIZE``; a device or an IPsec path that cannot:
  ``EINVAL``, ``EIO``) is sent again one datagram at a time, and after the latter
  segmentation is not tried again.

Data flow: kernel -> ``recv`` (one call, up to ``slots`` datagrams) -> slots and names ->
the caller's lane lookups -> ``queue`` -> ``flush`` (one call per run) -> kernel.
Errors: ``recv`` returns the count or ``-errno``; ``flush`` skips a message the kernel
refuses (an unreachable destination, say) and goes on with the rest, drops what is left
when the socket's buffer is full (``EAGAIN``/``ENOBUFS``: UDP may lose), and counts both
in :attr:`Ring.send_failed`.  Linux on 64-bit only (the layouts below); anything else
reports :func:`available` false and the relay keeps asyncio's transports.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
import sys

SLOT = 1 << 16  # bytes per receive slot: the largest UDP datagram fits after HEADROOM
HEADROOM = 4  # bytes left in front of each datagram (a ChannelData header's)
NAME = 28  # bytes per source address slot: sizeof(struct sockaddr_in6)
MSG = 64  # sizeof(struct mmsghdr) on 64-bit Linux
IOV = 16  # sizeof(struct iovec)
MSG_DONTWAIT = 0x40

# struct msghdr: name (0), namelen (8), iov (16), iovlen (24), control (32),
# controllen (40), flags (48); struct mmsghdr adds msg_len (56)
_HDR = struct.Struct("=QI4xQQQQi4xI4x")
_FIRST = struct.Struct("=QI4xQQQQ")  # name, namelen, iov, iovlen, control, controllen
_MORE = struct.Struct("=QQQ")  # iovlen, control, controllen (at offset 24)
_CMSG = struct.Struct("=Qiih6x")  # cmsghdr (len, level, type), the segment size; padded
CMSG = 24  # CMSG_SPACE(2)
SOL_UDP, UDP_SEGMENT = 17, 103
GSO_SEGMENTS = 64  # datagrams per segmented send (the kernel's limit is 64 or more)
GSO_SEGMENT_MAX = 1232  # bytes: a segment fits any path (IPv6's 1,280 minimum MTU)
GSO_BYTES = 65000  # bytes per segmented send (one IP packet's worth before segmenting)
_SPAN = struct.Struct("=QQ")  # one iovec: base, length
_V4 = struct.Struct("=H")  # sa_family, host order
_PORT = struct.Struct("!H")

_libc: ctypes.CDLL | None = None
if sys.platform == "linux" and struct.calcsize("P") == 8:
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
        _recvmmsg = _libc.recvmmsg
        _recvmmsg.argtypes = [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_void_p,
        ]
        _recvmmsg.restype = ctypes.c_int
        _sendmmsg = _libc.sendmmsg
        _sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        _sendmmsg.restype = ctypes.c_int
    except (OSError, AttributeError):
        _libc = None


_NO_GSO = frozenset((errno.EINVAL, errno.EIO, errno.EOPNOTSUPP, errno.ENOPROTOOPT))


def available() -> bool:
    """Whether this system has the calls (and the layouts above are right for it)."""
    return _libc is not None


def sockaddr(addr: tuple[object, ...]) -> bytes:
    """``(host, port[, flowinfo, scope_id])`` as the kernel's ``sockaddr_in``/``_in6``."""
    host, port = str(addr[0]), int(addr[1])  # type: ignore[call-overload]
    if ":" in host:
        flow = int(addr[2]) if len(addr) > 2 else 0  # type: ignore[call-overload]
        scope = int(addr[3]) if len(addr) > 3 else 0  # type: ignore[call-overload]
        return (
            _V4.pack(socket.AF_INET6)
            + _PORT.pack(port)
            + struct.pack("!I", flow)
            + socket.inet_pton(socket.AF_INET6, host)
            + struct.pack("=I", scope)
        )
    return _V4.pack(socket.AF_INET) + _PORT.pack(port) + socket.inet_aton(host) + bytes(8)


def address(raw: bytes) -> tuple[str, int] | tuple[str, int, int, int]:
    """A ``sockaddr`` the kernel wrote, as Python's socket module gives addresses."""
    port = _PORT.unpack_from(raw, 2)[0]
    if _V4.unpack_from(raw)[0] == socket.AF_INET6:
        flow = struct.unpack_from("!I", raw, 4)[0]
        scope = struct.unpack_from("=I", raw, 24)[0]
        return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flow, scope)
    return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)


class Destination:
    """A destination address written once as the kernel takes it, for :meth:`Ring.queue`."""

    __slots__ = ("buf", "length", "ptr")

    def __init__(self, addr: tuple[object, ...]) -> None:
        raw = sockaddr(addr)
        self.buf = ctypes.create_string_buffer(raw, len(raw))
        self.ptr = ctypes.addressof(self.buf)
        self.length = len(raw)


class Ring:
    """One worker's batch memory and vectors (module docstring)."""

    def __init__(self, slots: int = 32, gso: bool = True) -> None:
        if _libc is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are not available here")
        self.slots = slots
        self.data = ctypes.create_string_buffer(slots * SLOT)
        self.names = ctypes.create_string_buffer(slots * NAME)
        self.view = memoryview(self.data).cast("B")
        self.names_view = memoryview(self.names).cast("B")
        base = ctypes.addressof(self.data)
        names = ctypes.addressof(self.names)
        # receive: one iovec per slot; a header array per family (the kernel writes the
        # source's length back into msg_namelen, so each keeps its own constant)
        self._riov = ctypes.create_string_buffer(slots * IOV)
        for i in range(slots):
            _SPAN.pack_into(self._riov, i * IOV, base + i * SLOT + HEADROOM, SLOT - HEADROOM)
        riov = ctypes.addressof(self._riov)
        self._rhdr: dict[int, ctypes.Array[ctypes.c_char]] = {}
        for family, namelen in ((socket.AF_INET, 16), (socket.AF_INET6, NAME)):
            hdr = ctypes.create_string_buffer(slots * MSG)
            for i in range(slots):
                _HDR.pack_into(
                    hdr, i * MSG, names + i * NAME, namelen, riov + i * IOV, 1, 0, 0, 0, 0
                )
            self._rhdr[family] = hdr
        self._rhdr_ptr = {f: ctypes.addressof(h) for f, h in self._rhdr.items()}
        self._rlen = {f: memoryview(h).cast("B").cast("I") for f, h in self._rhdr.items()}
        self.lengths = self._rlen[socket.AF_INET]  # of the last recv: lengths[16 * i + 14]
        # send: as many messages (and iovecs) as a batch can queue, and a control
        # message (UDP_SEGMENT) per message for segmentation offload
        self._siov = ctypes.create_string_buffer(slots * IOV)
        self._shdr = ctypes.create_string_buffer(slots * MSG)
        self._ctrl = ctypes.create_string_buffer(slots * CMSG)
        self._siov_ptr = ctypes.addressof(self._siov)
        self._shdr_ptr = ctypes.addressof(self._shdr)
        self._ctrl_ptr = ctypes.addressof(self._ctrl)
        self._base = base
        self.gso = gso  # same-size datagrams to one destination leave as one send (GSO)
        self._fds: list[int] = []  # the socket of each queued message
        self._dests: list[Destination] = []
        self._size: list[int] = []  # each message's datagram (segment) size
        self._count: list[int] = []  # datagrams in each message
        self._iov0: list[int] = []  # each message's first iovec
        self._iovs = 0
        self.send_failed = 0  # messages the kernel refused or had no room for
        self.last_send_error = 0

    def recv(self, fd: int, family: int) -> int:
        """Read up to ``slots`` datagrams from ``fd`` without waiting: how many, or
        ``-errno`` (``-EAGAIN``: nothing there).  Datagram ``i`` is in
        ``view[i * SLOT + 4 : i * SLOT + 4 + length(i)]``, its source at :meth:`key`."""
        got: int = _recvmmsg(fd, self._rhdr_ptr[family], self.slots, MSG_DONTWAIT, None)
        if got < 0:
            return -ctypes.get_errno()
        self.lengths = self._rlen[family]
        return got

    def length(self, i: int) -> int:
        return int(self.lengths[16 * i + 14])

    def key(self, i: int, family: int) -> bytes:
        """Datagram ``i``'s source as the kernel wrote it (the lanes' key)."""
        n = 16 if family == socket.AF_INET else NAME
        return self.names_view[i * NAME : i * NAME + n].tobytes()

    def queue(self, fd: int, dest: Destination, offset: int, length: int) -> None:
        """Send ``view[offset : offset + length]`` from ``fd`` to ``dest`` at the next
        :meth:`flush` (which must come before the slot is read into again)."""
        fds = self._fds
        k = len(fds)
        j = self._iovs
        self._iovs = j + 1
        _SPAN.pack_into(self._siov, j * IOV, self._base + offset, length)
        if (
            k
            and self.gso
            and self._size[k - 1] == length
            and fds[k - 1] == fd
            and self._dests[k - 1] is dest
            and length <= GSO_SEGMENT_MAX
        ):
            count = self._count[k - 1] + 1
            if count <= GSO_SEGMENTS and count * length <= GSO_BYTES:
                # one more segment of the previous message: its iovecs are consecutive
                self._count[k - 1] = count
                if count == 2:
                    _CMSG.pack_into(self._ctrl, (k - 1) * CMSG, 18, SOL_UDP, UDP_SEGMENT, length)
                ctrl = self._ctrl_ptr + (k - 1) * CMSG
                _MORE.pack_into(self._shdr, (k - 1) * MSG + 24, count, ctrl, CMSG)
                return
        _FIRST.pack_into(
            self._shdr, k * MSG, dest.ptr, dest.length, self._siov_ptr + j * IOV, 1, 0, 0
        )
        fds.append(fd)
        self._dests.append(dest)  # its memory must live until the flush
        self._size.append(length)
        self._count.append(1)
        self._iov0.append(j)

    def flush(self) -> int:
        """Send everything queued, in order, one ``sendmmsg`` per run of the same socket;
        returns how many datagrams the kernel took."""
        fds, count = self._fds, self._count
        total = len(fds)
        if not total:
            return 0
        sent = 0
        start = 0
        while start < total:
            fd = fds[start]
            end = start + 1
            while end < total and fds[end] == fd:
                end += 1
            i = start
            while i < end:
                r = _sendmmsg(fd, self._shdr_ptr + i * MSG, end - i, MSG_DONTWAIT)
                if r > 0:
                    sent += sum(count[i : i + r])
                    i += r
                    continue
                err = ctypes.get_errno() if r < 0 else errno.EIO
                self.last_send_error = err
                if err == errno.EINTR:
                    continue
                if err in (errno.EAGAIN, errno.ENOBUFS):  # no room: the rest of the run goes
                    self.send_failed += sum(count[i:end])
                    break
                if count[i] > 1 and (err in _NO_GSO or err == errno.EMSGSIZE):
                    # segmentation refused (not by this device again; EMSGSIZE: a route's
                    # MTU below the segment, which one datagram at a time may fragment)
                    self.gso = self.gso and err not in _NO_GSO
                    sent += self._one_by_one(fd, i)
                else:
                    self.send_failed += count[i]  # its destination's fault: skip it
                i += 1
            start = end
        fds.clear()
        self._dests.clear()
        self._size.clear()
        count.clear()
        self._iov0.clear()
        self._iovs = 0
        return sent

    def _one_by_one(self, fd: int, i: int) -> int:
        """Send message ``i``'s datagrams as messages of their own (no segmentation)."""
        sent = 0
        dest = self._dests[i]
        hdr = self._shdr_ptr + i * MSG
        for j in range(self._iov0[i], self._iov0[i] + self._count[i]):
            _FIRST.pack_into(
                self._shdr, i * MSG, dest.ptr, dest.length, self._siov_ptr + j * IOV, 1, 0, 0
            )
            if _sendmmsg(fd, hdr, 1, MSG_DONTWAIT) == 1:
                sent += 1
            else:
                self.send_failed += 1
        return sent
