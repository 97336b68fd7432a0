"""The zone through the configuration store: one writer, a replica at every site.

An anycast DNS service must serve the same zone at every site.  With
:mod:`anyedge.store`, the zone is one key (``dns/zones/<zone>``, the zone file's text)
put by the store's one writer (:func:`publish`); every site has its own replica and a
:class:`ZoneSync` watching that key: on every change it writes the site's zone file
(``nodes/NODE/knot/zone.txt``) and has the site's ``knotd`` reload it (``knotc -b
zone-reload``, over the control socket in the node's directory), so the new serial is
served as soon as the replica has it.  Knot loads a zone file only when its SOA serial
grew, so each published version needs a higher serial (:func:`anyedge.lab.dns.zone_text`
takes one).

The replicas run beside the lab (the store's fan-out is on 127.0.0.1 of the machine);
they reach each site's server through its control socket, a file, not the network.

From the command line (``anyedge lab dns --store HOST:PORT``), :func:`start_followers`
puts the lab's zone in the store if it holds none yet, then runs one follower process per
site (``python -m anyedge.lab.zonesync``, in the machine's namespace, where the store
is): a replica and a :class:`ZoneSync`, which writes what it has applied to
``nodes/NODE/knot/zonesync.json``.  Their ids go into the lab's state under
:data:`~anyedge.lab.build.HOST_PIDS`, so ``anyedge lab down`` ends them.  A new version
is then one write to the store (``anyedge store put dns/zones/lab.anyedge.test.
"$(cat zone.txt)"``); :func:`wait_followers` waits until every site has loaded it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..adapters import netns
from ..store.api import Replica, Writer
from .build import HOST_PIDS, LabError, attach, locked
from .dns import ZONE, knot_dir, zone_text
from .plan import LabPlan, NodePlan

PREFIX = "dns/zones/"


def key(zone: str = ZONE) -> str:
    return PREFIX + zone


def publish(writer: Writer, text: str, zone: str = ZONE) -> int:
    """Put the zone's text in the store; its sequence number."""
    return writer.put(key(zone), text.encode())


class ZoneSync:
    """Keep one site's zone file equal to the store's, reloading its Knot on change."""

    def __init__(self, replica: Replica, node: NodePlan, directory: Path, zone: str = ZONE) -> None:
        self.replica, self.node, self.zone = replica, node, zone
        self.dir = knot_dir(directory, node)
        self.applied = 0  # the replica's sequence number when the zone was last loaded
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._watch = replica.watch(key(zone), callback=lambda _batch: self.apply())
        self.apply()  # what the replica holds already

    def apply(self) -> None:
        with self._lock:
            seq = self.replica.seq
            data = self.replica.get(key(self.zone))
            if data is None:
                return
            path = self.dir / "zone.txt"
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
                argv = ["knotc", "-c", str(self.dir / "knot.conf"), "-b", "zone-reload", self.zone]
                p = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
                if p.returncode != 0:
                    self.errors.append(f"{self.node.site}: knotc: {(p.stderr or p.stdout).strip()}")
                    return
            self.applied = seq

    def close(self) -> None:
        self._watch.close()


def follow(
    replicas: dict[str, Replica], nodes: list[NodePlan], directory: Path, zone: str = ZONE
) -> dict[str, ZoneSync]:
    """A :class:`ZoneSync` for every site in ``nodes``, each on its own replica (by site
    code)."""
    missing = [str(n.site) for n in nodes if str(n.site) not in replicas]
    if missing:
        raise LabError(f"no replica for {', '.join(missing)}")
    return {str(n.site): ZoneSync(replicas[str(n.site)], n, directory, zone) for n in nodes}


def wait_applied(syncs: dict[str, ZoneSync], seq: int, timeout: float = 10.0) -> None:
    """Wait until every site has loaded the zone of ``seq`` (or later)."""
    end = time.monotonic() + timeout
    while True:
        errors: list[Any] = [e for s in syncs.values() for e in s.errors]
        if errors:
            raise LabError("; ".join(errors))
        behind = [c for c, s in syncs.items() if s.applied < seq]
        if not behind:
            return
        if time.monotonic() > end:
            raise LabError(f"the zone of #{seq} not loaded at {', '.join(behind)}")
        time.sleep(0.02)


# ------------------------------------------------------- followers from the command line


def status_path(directory: Path, node: NodePlan) -> Path:
    return knot_dir(directory, node) / "zonesync.json"


def ensure_zone(plan: LabPlan, address: tuple[str, int], timeout: float = 10.0) -> int:
    """Put the lab's zone in the store at ``address`` unless it holds one; the store's
    sequence number that holds the zone."""
    from ..store import EmbeddedReplica, StoreError
    from ..store.embedded import RemoteWriter

    where = f"{address[0]}:{address[1]}"
    try:
        replica = EmbeddedReplica(address)
    except (OSError, StoreError) as e:
        raise LabError(f"the store at {where}: {e}") from None
    try:
        end = time.monotonic() + timeout
        while not (replica.writer_seq >= 0 and replica.seq >= replica.writer_seq):
            if time.monotonic() > end:
                raise LabError(f"the store at {where} did not answer in {timeout:g} s")
            time.sleep(0.02)
        if replica.get(key()) is not None:
            return replica.seq
    finally:
        replica.close()
    try:
        w = RemoteWriter(address)
        try:
            return publish(w, zone_text(plan))
        finally:
            w.close()
    except (OSError, StoreError) as e:
        raise LabError(f"the store at {where}: {e}") from None


def start_followers(
    plan: LabPlan, directory: Path, address: tuple[str, int], timeout: float = 20.0
) -> dict[str, int]:
    """A follower per site on the store at ``address`` (the lab's zone put there first if
    it holds none); returns their ids by site code once every site serves the store's
    zone."""
    seq = ensure_zone(plan, address)
    pids = {}
    for n in plan.sites:
        status_path(directory, n).unlink(missing_ok=True)
        log = knot_dir(directory, n) / "zonesync.out"
        argv = [sys.executable, "-m", "anyedge.lab.zonesync", "--dir", str(directory.absolute())]
        argv += ["--site", str(n.site), "--connect", f"{address[0]}:{address[1]}"]
        pid = netns.spawn(None, argv, log)  # outlives the command that started it
        with locked(directory) as state:
            state.pids.setdefault(HOST_PIDS, []).append(pid)
            state.save(directory)
        pids[str(n.site)] = pid
    try:
        wait_followers(plan, directory, seq, timeout)
    except LabError as e:
        dead = [c for c, p in pids.items() if not netns.alive(p)]
        for c in dead:
            log = knot_dir(directory, plan.site_node(c)) / "zonesync.out"
            e = LabError(f"{e}; {c}'s follower ended: {log.read_text(errors='replace')[-300:]}")
        raise e from None
    return pids


def followed(directory: Path, node: NodePlan) -> dict[str, Any]:
    """What the site's follower last wrote: ``applied`` (a sequence number), ``errors``."""
    try:
        return dict(json.loads(status_path(directory, node).read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return {"applied": 0, "errors": []}


def wait_followers(plan: LabPlan, directory: Path, seq: int, timeout: float = 20.0) -> None:
    """Wait until every site's follower has loaded the zone of ``seq`` (or later)."""
    end = time.monotonic() + timeout
    while True:
        got = {str(n.site): followed(directory, n) for n in plan.sites}
        errors = [e for s in got.values() for e in s["errors"]]
        if errors:
            raise LabError("; ".join(errors))
        behind = [c for c, s in got.items() if s["applied"] < seq]
        if not behind:
            return
        if time.monotonic() > end:
            raise LabError(f"the zone of store write #{seq} not loaded at {', '.join(behind)}")
        time.sleep(0.05)


def _follow(directory: Path, site: str, address: tuple[str, int]) -> None:
    from ..store import EmbeddedReplica

    _world, plan, _state = attach(directory)
    node = plan.site_node(site)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    replica = EmbeddedReplica(address)
    sync = ZoneSync(replica, node, directory)
    path = status_path(directory, node)
    written: tuple[int, int] = (-1, -1)
    try:
        while not stop.wait(0.05):
            now = (sync.applied, len(sync.errors))
            if now != written:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"applied": now[0], "errors": sync.errors}))
                os.replace(tmp, path)
                written = now
    finally:
        sync.close()
        replica.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m anyedge.lab.zonesync")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--site", required=True)
    p.add_argument("--connect", required=True, help="the embedded store's HOST:PORT")
    a = p.parse_args(argv)
    host, _, port = a.connect.rpartition(":")
    _follow(a.dir, a.site, (host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
