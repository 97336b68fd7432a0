"""Chaos in the three-site lab: faults made with ``anyedge lab fault``, seen by ``lab
status``, and undone by ``lab heal`` (issue 22, items 2 and 3).

Each fault is made while the lab's own probe watches from the clients (one datagram
every 20 ms), so the loss it causes is measured; ``lab status`` must name it, ``lab
heal`` must bring every client back to the site the routing model names, with every
flow answered and the forwarding installed as recorded; and ``lab down`` (the fixture)
must leave no namespace and no process behind, restarted daemons included.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from anyedge.adapters import netns
from anyedge.cli.main import main
from anyedge.lab import build
from anyedge.lab.compare import predicted
from anyedge.lab.failover import _wait_started
from anyedge.lab.measure import probe_all, probe_argv
from lab_support import DATA, RunningLab, running_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

INTERVAL = 0.02


@pytest.fixture(scope="module")
def lab3() -> Iterator[RunningLab]:
    with running_lab(DATA / "lab3.yaml", prefix="ft") as lab:
        yield lab


def lab(lab3: RunningLab, capfd: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``anyedge lab ARGS --dir …`` in this process: exit status and what it printed."""
    capfd.readouterr()
    code = main(["lab", *args, "--dir", str(lab3.directory)])
    out = capfd.readouterr()
    return code, out.out + out.err


def status(lab3: RunningLab, capfd: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code, out = lab(lab3, capfd, "status", "--json")
    return code, json.loads(out[: out.rindex("}") + 1])


def watched(
    lab3: RunningLab, clients: list[str], fault: Callable[[], None], heal: Callable[[], None]
) -> dict[str, dict[str, Any]]:
    """Watch ``clients`` while ``fault`` breaks the lab and ``heal`` mends it: per
    client the probes sent and lost, the answers per site, and when the last outage
    ended, in seconds after the heal began (None: no outage)."""
    procs = {}
    for c in clients:
        argv = [*probe_argv(lab3.plan, c, "watch"), "--interval", str(INTERVAL)]
        procs[c] = subprocess.Popen(
            [*argv, "--duration", "11"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    try:
        for c, p in procs.items():
            _wait_started(c, p)
        time.sleep(0.5)
        fault()
        time.sleep(1.5)
        t_heal = time.time()
        heal()
        out = {}
        for c, p in procs.items():
            stdout, _ = p.communicate(timeout=60)
            w = json.loads(stdout)
            outages = w["outages"]
            last = w["start"] + outages[-1]["end"] + INTERVAL - t_heal if outages else None
            out[c] = {"sent": w["sent"], "lost": w["lost"], "back": last, "answers": w["answers"]}
        return out
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.communicate()


def served_as_the_model_says(lab3: RunningLab) -> None:
    want = predicted(lab3.world)
    got = probe_all(lab3.plan, list(want), flows=20)
    for client, site in want.items():
        assert got[client]["answers"] == {site: 20}, (client, got[client])


def test_a_fault_on_something_the_lab_lacks_is_bad_input(
    lab3: RunningLab, capfd: pytest.CaptureFixture[str]
) -> None:
    for args, says in (
        (("fault", "kill", "nosuch"), "no node 'nosuch'"),
        (("fault", "kill", "c1"), "c1 runs no BGP daemon"),
        (("fault", "link-down", "isp1", "akl"), "no link between isp1 and akl"),
        (("fault", "partition", "XYZ"), "no site 'XYZ'"),
    ):
        code, out = lab(lab3, capfd, *args)
        assert code == 2, out
        assert says in out
    assert build.LabState.load(lab3.directory).faults == []


def test_killed_daemons_are_named_and_heal_restarts_them(
    lab3: RunningLab, capfd: pytest.CaptureFixture[str]
) -> None:
    """kill -9 a transit's bgpd (isp1, c1's only ISP) and two sites' speakers (BIRD at
    AKL, GoBGP at SYD): c1 and c2 lose every probe until the heal."""
    killed = ("isp1", "akl", "syd")

    def fault() -> None:
        for n in killed:
            assert lab(lab3, capfd, "fault", "kill", n)[0] == 0

    def heal() -> None:
        code, s = status(lab3, capfd)
        assert code == 0  # every fault is recorded: nothing unexplained
        assert s["faults"] == [{"kind": "daemon", "node": n} for n in killed]
        assert "isp1: its bgpd is not running" in s["down"]
        assert "akl: its bird is not running" in s["down"]
        assert "syd: its gobgpd is not running" in s["down"]
        assert "session isp2-isp1 is not established (at isp2)" in s["down"]
        # a killed speaker cannot take a change: refused, nothing changed, and said so
        code, out = lab(lab3, capfd, "withdraw", "AKL")
        assert code == 3
        assert "AKL: its bird speaker was killed" in out
        assert "nothing was changed" in out
        code, out = lab(lab3, capfd, "heal")
        assert code == 0, out

    seen = watched(lab3, ["c1", "c2"], fault, heal)
    print("kill -9 isp1 bgpd, akl bird, syd gobgpd:", seen)
    for c in ("c1", "c2"):
        assert seen[c]["lost"] > 1.0 / INTERVAL  # at least one of the 1.5 s of the fault
        assert seen[c]["back"] is not None  # the outage ended (in the watch or after it)
    code, s = status(lab3, capfd)
    assert code == 0
    assert s["down"] == []
    assert s["faults"] == []
    state = build.LabState.load(lab3.directory)
    for n in killed:  # the restarted daemons are recorded, for down to end them
        assert state.daemons[n][build.daemon_names(lab3.plan.node(n))[-1]] in state.pids[n]
    served_as_the_model_says(lab3)


def test_a_transit_link_down_moves_the_client_and_heal_brings_it_back(
    lab3: RunningLab, capfd: pytest.CaptureFixture[str]
) -> None:
    def fault() -> None:
        assert lab(lab3, capfd, "fault", "link-down", "isp2", "akl")[0] == 0

    def heal() -> None:
        code, s = status(lab3, capfd)
        assert code == 0
        assert "link isp2-akl is down" in s["down"]
        assert "session isp2-akl is not established (at isp2)" in s["down"]
        assert s["faults"] == [{"kind": "link", "a": "isp2", "b": "akl"}]
        # item 3: a command in a faulty lab waits only for what can settle
        code, out = lab(lab3, capfd, "announce", "SYD")
        assert code == 0, out
        assert lab(lab3, capfd, "heal")[0] == 0

    seen = watched(lab3, ["c2"], fault, heal)
    print("link isp2-akl down:", seen)
    assert seen["c2"]["answers"].get("CHC", 0) > 0  # served elsewhere during the fault
    served_as_the_model_says(lab3)


def test_a_backbone_link_that_flaps_keeps_forwarding_as_recorded(
    lab3: RunningLab, capfd: pytest.CaptureFixture[str]
) -> None:
    plan = lab3.plan
    assert lab(lab3, capfd, "forward", "CHC", "--to", "AKL", "--share", "0.33")[0] == 0
    try:
        before = probe_all(plan, ["c1"], flows=300)["c1"]
        assert 60 < before["answers"].get("AKL", 0) < 140, before
        assert lab(lab3, capfd, "fault", "link-down", "chc", "akl")[0] == 0
        during = probe_all(plan, ["c1"], flows=300)["c1"]
        print("backbone chc-akl down, 33 % recorded:", before, during)
        assert during["answers"] == {"CHC": 300}  # served at home, none lost
        code, s = status(lab3, capfd)
        assert code == 0
        assert "link chc-akl is down" in s["down"]
        assert "CHC forwards 0 % of port 7001 to AKL, recorded 33 %" in s["down"]
        # the link comes back: so do its route and the forwarding
        assert lab(lab3, capfd, "fault", "link-up", "chc", "akl")[0] == 0
        after = probe_all(plan, ["c1"], flows=300)["c1"]
        assert 60 < after["answers"].get("AKL", 0) < 140, after
        # and down again, healed: the same
        assert lab(lab3, capfd, "fault", "link-down", "akl", "chc")[0] == 0
        assert lab(lab3, capfd, "heal")[0] == 0
        code, s = status(lab3, capfd)
        assert code == 0
        assert s["down"] == []
        chc = next(x for x in s["sites"] if x["site"] == "CHC")
        assert chc["forward_installed"] == chc["forward_recorded"]
        healed = probe_all(plan, ["c1"], flows=300)["c1"]
        assert 60 < healed["answers"].get("AKL", 0) < 140, healed
    finally:
        assert lab(lab3, capfd, "forward", "CHC", "--to", "AKL", "--share", "0")[0] == 0
    served_as_the_model_says(lab3)


def test_partitions_and_daemons_that_die_on_their_own(
    lab3: RunningLab, capfd: pytest.CaptureFixture[str]
) -> None:
    d = lab3.directory
    assert lab(lab3, capfd, "fault", "partition", "SYD")[0] == 0
    code, s = status(lab3, capfd)  # its sessions end at the hold timer (3 s), not now
    assert code == 0
    assert s["faults"] == [{"kind": "partition", "site": "SYD"}]
    # a speaker that dies with no fault recorded is reported, and a command that would
    # wait for its sessions refuses before it changes anything, naming it
    state = build.LabState.load(d)
    os.kill(state.daemons["akl"]["bird"], signal.SIGKILL)
    time.sleep(0.2)
    code, out = lab(lab3, capfd, "status")
    assert code == 3
    assert "akl: its bird is not running" in out
    code, out = lab(lab3, capfd, "withdraw", "CHC")
    assert code == 3
    assert "akl's bird" in out
    assert "sessions with isp2 cannot come up" in out
    assert build.LabState.load(d).routes["chc"] == state.routes["chc"]  # unchanged
    code, out = lab(lab3, capfd, "heal")
    assert code == 0, out
    assert "akl (bird)" in out
    # a link taken down behind the lab's back: a change waits for its session only
    # until it looks at the link, then names it and says the change is applied
    isp2 = lab3.plan.node("isp2")
    port = next(p for p in isp2.ports if p.peer == "akl")
    netns.batch(isp2.namespace, [f"link set {port.ifname} down"])
    code, out = lab(lab3, capfd, "announce", "SYD")
    assert code == 3
    assert "SYD: announced (its speaker took it and the lab's state records it)" in out
    assert "link isp2-akl is down at isp2" in out
    assert "no fault records it" in out
    assert lab(lab3, capfd, "heal")[0] == 0
    code, s = status(lab3, capfd)
    assert code == 0
    assert s["down"] == []
    assert s["faults"] == []
    served_as_the_model_says(lab3)
