"""What the lab tests share: a lab directory the FRR daemons can reach, and a lab that
is always taken down — namespaces and processes — whatever the test did."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anyedge.adapters import netns
from anyedge.lab import build
from anyedge.lab.plan import LabPlan, make_plan, namespace_prefix
from anyedge.model.files import load_world
from anyedge.model.world import World

DATA = Path(__file__).parent / "data"


@dataclass
class RunningLab:
    world: World
    plan: LabPlan
    directory: Path
    topology: Path


def lab_directory() -> Path:
    """A fresh directory under /tmp that FRR's daemons (user frr) can enter."""
    d = Path(tempfile.mkdtemp(prefix="anyedge-lab-"))
    os.chmod(d, 0o755)
    return d


@contextmanager
def running_lab(topology: Path, prefix: str = "t") -> Iterator[RunningLab]:
    """Bring the lab of ``topology`` up under a unique name (``prefix`` and random hex
    digits: up to 8 characters); always take it down, and check that nothing of it is
    left."""
    name = prefix + secrets.token_hex((8 - len(prefix)) // 2)
    world = load_world(topology)
    plan = make_plan(world, name)
    d = lab_directory()
    try:
        build.up(world, plan, d)
        yield RunningLab(world, plan, d, topology)
    finally:
        tear_down(d, name)


def tear_down(d: Path, name: str, pids: list[int] | None = None) -> None:
    """Take the lab in ``d`` down if it is still there, remove whatever namespaces of
    ``name`` are left and the directory, and check that nothing was left behind (no
    namespace, none of ``pids`` nor of the lab's recorded processes alive)."""
    pids = list(pids or [])
    try:
        if (d / build.STATE).exists():
            pids += [p for ps in build.LabState.load(d).pids.values() for p in ps]
            build.down(d, name)
    finally:
        left = netns.listed(namespace_prefix(name))
        for ns in left:
            netns.remove(ns)
        shutil.rmtree(d, ignore_errors=True)
    assert not left, f"lab down left namespaces: {left}"
    assert not [p for p in pids if netns.alive(p)], "lab down left processes"


def bgp_paths(lab: RunningLab, router: str, prefix: str) -> dict[str, dict[str, Any]]:
    """The paths ``router``'s FRR bgpd holds for ``prefix`` (``show bgp … json``), by
    the lab node at the other end of each session."""
    node = lab.plan.node(router)
    peer = {p.peer_address: p.peer for p in node.bgp_ports}
    argv = ["vtysh", "--vty_socket", str(lab.directory / "nodes" / router)]
    out = subprocess.run(
        [*argv, "-c", f"show bgp {'ipv6' if ':' in prefix else 'ipv4'} unicast {prefix} json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {peer[p["peer"]["peerId"]]: p for p in json.loads(out).get("paths", [])}
