"""Linux network namespaces, veth links and processes inside them, through ``iproute2``.

The lab (:mod:`anyedge.lab`) builds one namespace per node; this module is the only
place that runs ``ip``.  Every call takes the namespace by name; a namespace's processes
are started with ``ip netns exec`` and ended by their process id, never by name.

Nothing here keeps state: what was made is recorded by the caller (the lab directory),
so that a lab can be torn down after a crash by :func:`remove` on each recorded name —
which ends every process still inside the namespace (``ip netns pids``) before deleting
it.

:func:`entered` moves the calling thread into a namespace for a block (``setns``), for
what must be done from inside without a process of its own: opening a socket there,
attaching an XDP program to an interface there.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

NETNS_DIR = Path("/run/netns")
_children: dict[int, subprocess.Popen[bytes]] = {}  # started here, reaped in stop()


@atexit.register
def _reap_at_exit() -> None:
    """Collect, as this process exits, the children that have ended since: those that
    died slower than :func:`stop` waited, or that another process ended (``lab down`` or
    ``lab fault kill`` from another command).  Their ``Popen`` would otherwise say, as it
    is collected, that a process which is gone is "still running" (a ResourceWarning)."""
    _reap(list(_children))


class NetnsError(RuntimeError):
    """An ``ip`` command failed; the message holds the command and what it printed."""


def _run(argv: Sequence[str], input: str | None = None, check: bool = True) -> str:
    p = subprocess.run(list(argv), input=input, capture_output=True, text=True, check=False)
    if check and p.returncode != 0:
        cmd = " ".join(argv)
        raise NetnsError(f"{cmd}: exit {p.returncode}: {(p.stderr or p.stdout).strip()}")
    return p.stdout


def exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def listed(prefix: str) -> list[str]:
    """Namespaces whose name starts with ``prefix``."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def add(ns: str) -> None:
    """Create ``ns`` with ``lo`` up, forwarding on and reverse-path filtering off.

    Forwarding lets routers (and sites that hand flows to another site) pass packets on;
    reverse-path filtering would drop the asymmetric paths anycast is made of.
    """
    _run(["ip", "netns", "add", ns])
    batch(ns, ["link set lo up"])
    sysctl(
        ns,
        {
            "net.ipv4.ip_forward": "1",
            "net.ipv4.conf.all.rp_filter": "0",
            "net.ipv4.conf.default.rp_filter": "0",
            "net.ipv4.conf.lo.rp_filter": "0",
            "net.ipv6.conf.all.forwarding": "1",
            # IPv6 addresses stay on a link taken down (IPv4's always do), so a link
            # brought up again is the link it was
            "net.ipv6.conf.all.keep_addr_on_down": "1",
            "net.ipv6.conf.default.keep_addr_on_down": "1",
            # and usable at once when it comes up: no duplicate address detection (a
            # second or two of "tentative" in which nothing routes over it; the lab's
            # addresses are its own)
            "net.ipv6.conf.all.accept_dad": "0",
            "net.ipv6.conf.default.accept_dad": "0",
        },
    )


def sysctl(ns: str, values: dict[str, str]) -> None:
    args = [f"{k}={v}" for k, v in values.items()]
    _run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *args])


def batch(ns: str, commands: Sequence[str]) -> None:
    """Run ``ip`` commands (one per line, without the leading ``ip``) inside ``ns``."""
    if commands:
        _run(["ip", "-n", ns, "-batch", "-"], input="\n".join(commands) + "\n")


def veth(ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    """A veth pair with one end in each namespace, both ends up."""
    _run(
        [
            "ip",
            "link",
            "add",
            if_a,
            "netns",
            ns_a,
            "type",
            "veth",
            "peer",
            "name",
            if_b,
            "netns",
            ns_b,
        ]
    )
    batch(ns_a, [f"link set {if_a} up"])
    batch(ns_b, [f"link set {if_b} up"])


def run(ns: str, argv: Sequence[str], check: bool = True, timeout: float = 30.0) -> str:
    """Run ``argv`` inside ``ns`` and return what it printed."""
    cmd = ["ip", "netns", "exec", ns, *argv]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise NetnsError(f"{' '.join(cmd)}: no answer in {timeout:g} s") from e
    if check and p.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: exit {p.returncode}: {(p.stderr or p.stdout).strip()}")
    return p.stdout


def spawn(ns: str | None, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` inside ``ns`` (None: the machine's namespace) in the background;
    its output goes to ``log``.

    Returns the process id.  The process runs in a session of its own, so that it
    outlives the command that started it and does not get that terminal's signals.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        p = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv] if ns else list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    _children[p.pid] = p
    return p.pid


def pids(ns: str) -> list[int]:
    """Processes running inside ``ns``."""
    out = _run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours is not alive
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def stop(pids_: Sequence[int], grace: float = 2.0) -> None:
    """End processes by id: SIGTERM, then SIGKILL for those still alive after ``grace``."""
    live = [p for p in pids_ if alive(p)]
    for p in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    end = time.monotonic() + grace
    while live and time.monotonic() < end:
        _reap(live)
        live = [p for p in live if alive(p)]
        if live:
            time.sleep(0.05)
    for p in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    # every one of ours that ended (some turned zombie after the loop's last look) is
    # reaped, so a long-lived process that starts and stops labs leaves no zombies
    _reap(pids_, wait=0.5)


def kill(pid: int) -> None:
    """``kill -9`` one process by id and reap it if it was ours (a fault on purpose)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + 5.0
    while alive(pid) and time.monotonic() < end:
        _reap([pid])
        time.sleep(0.02)
    _reap([pid])


def _reap(pids_: Sequence[int], wait: float = 0.0) -> None:
    """Collect the exit status of those of ``pids_`` that have ended (ours through their
    ``Popen``, waiting up to ``wait`` seconds for each that was signalled)."""
    for p in pids_:
        child = _children.get(p)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(wait) if wait else child.poll()
            if child.returncode is not None:
                del _children[p]
            continue
        with contextlib.suppress(ChildProcessError):
            os.waitpid(p, os.WNOHANG)


def remove(ns: str) -> None:
    """End every process inside ``ns``, then delete it (nothing if it is gone)."""
    if not exists(ns):
        return
    stop(pids(ns))
    _run(["ip", "netns", "del", ns], check=False)


_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def entered(name: str | None) -> Iterator[None]:
    """Run the block in network namespace ``name`` (``NETNS_DIR/NAME``, or a path such
    as ``/proc/PID/ns/net``), then come back.

    Only the calling thread moves.  Sockets and interface indexes taken inside stay
    bound to that namespace after the block; BPF file descriptors are not tied to one.
    ``None`` stays where it is.
    """
    if name is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        there = os.open(name if name.startswith("/") else NETNS_DIR / name, os.O_RDONLY)
        try:
            _setns(there)
        finally:
            os.close(there)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)
