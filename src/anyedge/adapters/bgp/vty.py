"""Ask an FRR daemon a question over its vty socket, the way ``vtysh`` does, in-process.

Every FRR daemon started with ``--vty_socket DIR`` listens on ``DIR/<daemon>.vty`` (a
unix stream socket: ``bgpd.vty``, ``ospfd.vty``, ``bfdd.vty``, ``zebra.vty``).  ``vtysh``
is only a client of these sockets; starting it costs ~27 ms of CPU a question, most of
it loading its own command tree, while the question itself costs the daemon far less.
The lab's polling loops (:func:`anyedge.lab.build.settle`) ask hundreds of read-only
questions, so they talk to the sockets directly through this module.

The protocol (FRR's ``vtysh/vtysh.c``: ``vtysh_client_run``; ``lib/vty.c``:
``vtysh_accept``, ``vtysh_read``), checked against FRR 8.4 here:

* the daemon gives each connection a vty of its own in ``VIEW_NODE``; ``vtysh`` (not
  in user mode) sends ``enable`` first, and so do we: some questions are installed in
  ``ENABLE_NODE`` only (bfdd's ``show bfd peers`` is unknown in ``VIEW_NODE``);
* the client writes one command line terminated by a NUL byte, and waits for its
  answer before it writes the next (the daemon may drop what follows a command that
  suspends it);
* the daemon writes the command's output (text, no NUL in it), then three NUL bytes
  and one status byte: FRR's ``CMD_*`` code (0 success, 1 warning, 2 unknown command,
  ...).  ``vtysh -c`` exits 0 on success, warning and ``CMD_SUCCESS_DAEMON``, so do we.

:class:`VtyFramer` is the protocol without I/O (bytes in, :class:`Answer` out), so it is
tested on recorded byte streams split anywhere; :class:`VtyClient` and :func:`ask` are
the thin socket part, with one deadline per question so a stopped daemon cannot hang
the caller.  Errors are :class:`VtyError` (no daemon, no answer in time, a connection
closed mid-answer, a broken frame); the driver turns them into ``SpeakerError``.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

TERMINATOR = b"\0\0\0"  # after the output; the status byte follows it
STATUS = {  # FRR's lib/command.h
    0: "CMD_SUCCESS",
    1: "CMD_WARNING",
    2: "CMD_ERR_NO_MATCH",
    3: "CMD_ERR_AMBIGUOUS",
    4: "CMD_ERR_INCOMPLETE",
    5: "CMD_ERR_EXEED_ARGC_MAX",
    6: "CMD_ERR_NOTHING_TODO",
    10: "CMD_SUCCESS_DAEMON",
    11: "CMD_ERR_NO_FILE",
    12: "CMD_SUSPEND",
    13: "CMD_WARNING_CONFIG_FAILED",
    14: "CMD_NOT_MY_INSTANCE",
    16: "CMD_ERR_NO_DAEMON",
}
SUCCESS = frozenset({0, 1, 10})  # the statuses after which ``vtysh -c`` exits 0


class VtyError(Exception):
    """The daemon did not answer: not running, too slow, or it broke the protocol."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One command's output and the daemon's status byte for it."""

    text: str
    status: int

    @property
    def ok(self) -> bool:
        return self.status in SUCCESS

    @property
    def status_name(self) -> str:
        return STATUS.get(self.status, f"status {self.status}")


def request(command: str) -> bytes:
    """The bytes that ask ``command``: the line, NUL-terminated."""
    if "\0" in command or "\n" in command:
        raise ValueError(f"a vty command is one line without NUL: {command!r}")
    return command.encode() + b"\0"


class VtyFramer:
    """Splits what a daemon writes into answers: feed it bytes as they arrive."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scanned = 0  # no NUL before this offset of the buffer

    def feed(self, data: bytes) -> list[Answer]:
        """The answers completed by ``data`` (none while one is still arriving)."""
        self._buf += data
        out: list[Answer] = []
        while True:
            end = self._buf.find(b"\0", self._scanned)
            if end < 0:
                self._scanned = len(self._buf)
                return out
            self._scanned = end
            if len(self._buf) < end + 4:
                return out  # the terminator or the status byte is still to come
            if self._buf[end : end + 3] != TERMINATOR:
                seen = bytes(self._buf[end : end + 4])
                raise VtyError(f"a NUL inside an answer, not a terminator: {seen!r}")
            out.append(Answer(self._buf[:end].decode(errors="replace"), self._buf[end + 3]))
            del self._buf[: end + 4]
            self._scanned = 0

    @property
    def pending(self) -> int:
        """Bytes received of an answer not yet complete."""
        return len(self._buf)


class VtyClient:
    """One connection to a daemon's vty socket; ask questions one after another.  Each
    exchange (``enable`` on connecting, then each question) must end within
    ``timeout`` seconds."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._framer = VtyFramer()
        try:
            self._connect()
        except BaseException:
            self._sock.close()
            raise

    def _connect(self) -> None:
        try:
            self._sock.settimeout(self.timeout)
            self._sock.connect(str(self.path))
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise VtyError(f"the daemon is not running ({self.path}: {e.strerror})") from None
        except OSError as e:
            raise VtyError(f"cannot connect to {self.path}: {e}") from None
        first = self.ask("enable")  # vtysh's node: ENABLE_NODE
        if not first.ok:
            said = f"{first.text.strip()} ({first.status_name})"
            raise VtyError(f"{self.path} refused enable: {said}")

    def ask(self, command: str) -> Answer:
        """The daemon's answer to ``command`` within the timeout, or :class:`VtyError`."""
        deadline = time.monotonic() + self.timeout
        try:
            self._sock.sendall(request(command))
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self._sock.settimeout(left)
                data = self._sock.recv(65536)
                if not data:
                    raise VtyError(f"{self.path} closed the connection before the answer ended")
                answers = self._framer.feed(data)
                if answers:
                    return answers[0]  # one command in flight: one answer
        except TimeoutError:
            raise VtyError(f"no answer in {self.timeout:g} s on {self.path}") from None
        except OSError as e:
            raise VtyError(f"{self.path}: {e}") from None

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> VtyClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def ask(path: Path, command: str, timeout: float = 10.0) -> Answer:
    """Connect to the vty socket at ``path``, ask ``command``, hang up."""
    with VtyClient(path, timeout) as c:
        return c.ask(command)
