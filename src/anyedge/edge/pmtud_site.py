"""Where the pmtud daemon's site comes from, and how it follows the balancer's changes.

In flow mode the daemon must decide by the table the load balancer has *now*: after a
server is drained, added, removed or re-weighted, the buckets have new first and second
hops, and a PTB decided by the old table goes to a server that does not hold the flow.
Two sources, each polled by the daemon before every decision and every 0.2 s when idle
(:meth:`FileSource.poll`, :meth:`BalancerSource.poll` return a new :class:`~.pmtud.Site`
when the table changed, else ``None``):

* :class:`BalancerSource` (``--table balancer``, what an operator wants on a server that
  runs the XDP balancer): the table in force in the kernel, read through
  :class:`~.balancer_view.BalancerView` — the same buckets, second hops included, the
  same MACs and seed the data plane uses, whoever changed them.  Before each decision one
  map lookup says whether the balancer committed another bucket array; every five seconds
  the whole table is read and compared too (two commits within one look, 0.2 s, bring
  the old array back with new contents).  If the balancer cannot be read (detached,
  replaced by something else), the last table read is kept and the failure counted.
* :class:`FileSource` (``--site FILE``): the site file (:func:`load_site`), read again
  on SIGHUP and when it changes on disk (checked every second), all or nothing: a new
  file that does not load is logged and the old table kept.  The file describes the
  table by weights (``Table.build``), so it cannot say which buckets are moving; use it
  where the balancer is not on this server.

Every load is counted by the daemon (``anyedge_pmtud_table_reloads_total{source,
result}``, result ``ok`` or ``failed``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..balance.table import Table
from ..errors import InputError
from .libbpf import BpfError
from .pmtud import Site

FILE_CHECK = 1.0  # seconds between looks at the site file's inode, time and size
FULL_READ = 5.0  # seconds between whole-table reads of the balancer (tens of ms each)


def parse_mac(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


def interface_mac(iface: str) -> bytes:
    return parse_mac(Path(f"/sys/class/net/{iface}/address").read_text().strip())


def load_site(path: Path, own_mac: bytes) -> Site:
    """The site file: the servers' MACs and weights, in the balancer's table order."""
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise InputError.one(path, "", f"cannot read: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise InputError.one(path, "", f"not JSON: {e.msg}", e.lineno) from e
    if not isinstance(doc, dict) or not isinstance(doc.get("servers"), list) or not doc["servers"]:
        raise InputError.one(path, "servers", "a non-empty list of servers is needed")
    macs, weights = [], []
    for i, s in enumerate(doc["servers"]):
        place = f"servers[{i}]"
        if not isinstance(s, dict):
            raise InputError.one(path, place, "a server is {mac, weight}")
        try:
            macs.append(parse_mac(str(s.get("mac", ""))))
        except ValueError as e:
            raise InputError.one(path, f"{place}.mac", str(e)) from e
        w = s.get("weight", 1)
        if not isinstance(w, int | float) or isinstance(w, bool) or w < 0:
            raise InputError.one(path, f"{place}.weight", "weights are numbers >= 0")
        weights.append(float(w))
    seed = doc.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError.one(path, "seed", "the seed is an integer")
    if len(set(macs)) != len(macs):
        raise InputError.one(path, "servers", "two servers have the same MAC")
    try:
        table = Table.build(weights, seed=seed)
    except ValueError as e:
        raise InputError.one(path, "servers", str(e)) from e
    return Site(own_mac, macs, table, seed)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class FileSource:
    """The site file, read again on :meth:`hangup` (SIGHUP) or when it changes."""

    name = "file"

    def __init__(self, path: Path, own_mac: bytes) -> None:
        self.path = path
        self.own_mac = own_mac
        self._stamp = _stamp(path)
        self.site = load_site(path, own_mac)  # InputError at start: the caller exits 2
        self._checked = time.monotonic()
        self._hup = False
        self.error = ""  # why the last reload failed

    def hangup(self) -> None:
        self._hup = True

    def poll(self, now: float) -> Site | None:
        """A new site if the file was reloaded; raises :class:`InputError` (the old site
        stays in force) when a changed file does not load."""
        if not self._hup and now - self._checked < FILE_CHECK:
            return None
        self._checked = now
        stamp = _stamp(self.path)
        if not self._hup and stamp == self._stamp:
            return None
        self._hup = False
        self._stamp = stamp  # a bad file is reported once, not every second
        site = load_site(self.path, self.own_mac)
        if self.own_mac not in site.macs:
            raise InputError.one(self.path, "servers", "this interface's MAC is not one of them")
        self.site = site
        return site


class BalancerSource:
    """The table the XDP balancer on ``iface`` has in force."""

    name = "balancer"

    def __init__(self, iface: str, own_mac: bytes) -> None:
        from .balancer_view import BalancerView

        self.own_mac = own_mac
        self.view = BalancerView(iface)  # BpfError at start: the caller exits 1
        self.snapshot = self.view.read()
        self.site = self._site()
        self._checked = time.monotonic()

    def _site(self) -> Site:
        s = self.snapshot
        return Site(self.own_mac, s.macs, s, s.seed)

    def poll(self, now: float) -> Site | None:
        """A new site if the balancer's table changed; raises :class:`BpfError` (the
        last table stays in force) when it cannot be read."""
        full = now - self._checked >= FULL_READ
        if not full and self.view.in_force() == self.snapshot.array_id:
            return None
        self._checked = now
        snap = self.view.read()
        if snap.same_table(self.snapshot):
            self.snapshot = snap
            return None
        self.snapshot = snap
        self.site = self._site()
        return self.site

    def close(self) -> None:
        self.view.close()


Source = FileSource | BalancerSource
SOURCE_ERRORS = (InputError, BpfError, OSError)


def describe(e: BaseException) -> str:
    return str(e).strip() or type(e).__name__


__all__ = ["BalancerSource", "FileSource", "Source", "interface_mac", "load_site", "parse_mac"]
