"""The three-site lab for real: FRR, BIRD and GoBGP speakers, real probes, real forwarding.

Three ISPs, three sites and two clients (``tests/data/lab3.yaml``).  Each client must
reach the site the routing model says, with everything announced and with each site
withdrawn through its own BGP speaker; Plurimog must hand the configured share of flows
to the other site; the Traffic Manager, run against the lab, must forward part of an
overload away and take it back when the load ends; the command line must show and
reach the lab; and ``lab down`` must leave nothing behind, even after ``up`` was killed.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from anyedge.adapters import netns
from anyedge.adapters.nft import Share
from anyedge.cli.main import main
from anyedge.lab import build, kernel_routes, trial
from anyedge.lab.compare import compare, predicted
from anyedge.lab.control import Step, run
from anyedge.lab.forward import Forwarder
from anyedge.lab.measure import Announcer, dominant, probe_all
from anyedge.lab.plan import namespace_prefix
from anyedge.model.lab import NodeKind
from lab_support import DATA, RunningLab, lab_directory, running_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab3() -> Iterator[RunningLab]:
    with running_lab(DATA / "lab3.yaml") as lab:
        yield lab


def test_each_client_reaches_the_site_its_routing_says(lab3: RunningLab) -> None:
    want = predicted(lab3.world)
    assert want == {"c1": "CHC", "c2": "AKL"}
    for tcp in (False, True):
        got = probe_all(lab3.plan, flows=50, tcp=tcp, timeout=3.0)
        for client, site in want.items():
            assert got[client]["answers"] == {site: 50}, (tcp, got[client])
            assert got[client]["lost"] == 0


def test_model_and_lab_agree_with_each_site_withdrawn(lab3: RunningLab) -> None:
    rows = compare(lab3.world, lab3.plan, lab3.directory, flows=20)
    scenarios = {r.scenario for r in rows}
    assert scenarios == {"baseline", "without CHC", "without AKL", "without SYD"}
    assert [(r.scenario, r.client) for r in rows if not r.agree] == []
    assert all(r.answered == r.flows for r in rows if r.model is not None)
    # the withdrawals moved someone, and everything was announced again afterwards
    assert {r.lab for r in rows if r.scenario == "without CHC"} == {"AKL"}
    state = build.LabState.load(lab3.directory)
    everything = [["198.51.100.0/24", 0], ["203.0.113.0/24", 0]]
    assert all(routes == everything for routes in state.routes.values())


def test_kernel_routes_read_over_netlink_are_what_ip_shows(lab3: RunningLab) -> None:
    """Settling compares routers' BGP routes read over netlink: the same prefixes as
    ``ip route show proto bgp``, equal bytes while nothing changes, other bytes after a
    withdrawal, the same bytes again once it is announced back."""
    plan = lab3.plan
    for n in plan.of_kind(NodeKind.ROUTER):
        shown = netns.run(n.namespace, ["ip", "-4", "route", "show", "proto", "bgp"])
        prefixes = [line.split()[0] for line in shown.splitlines() if line.strip()]
        assert kernel_routes.destinations(n.namespace) == prefixes, n.name
        assert "198.51.100.0/24" in prefixes, n.name
    before = build.anycast_routes(plan)
    assert build.anycast_routes(plan) == before
    ann = Announcer(plan, lab3.directory)
    with ann.changed("CHC", []):
        ann.settle()
        during = build.anycast_routes(plan)
        assert during != before
        # isp1, CHC's own, now reaches the prefixes through another ISP
        assert during["isp1"] != before["isp1"]
    ann.settle()
    assert build.anycast_routes(plan) == before


def test_plurimog_forwards_the_configured_share_of_flows(lab3: RunningLab) -> None:
    plan = lab3.plan
    fwd = Forwarder(plan, lab3.directory)
    free, pro = plan.ports[0], plan.ports[1]
    fwd.set("CHC", [Share(free, "AKL", 0.25)])
    try:
        got = probe_all(plan, ["c1"], flows=2000, port=free)["c1"]
        assert got["lost"] == 0
        share = got["answers"].get("AKL", 0) / 2000
        assert 0.20 <= share <= 0.30, got["answers"]
        # the same flows again go the same way: hashing is per flow, not per packet
        tcp = probe_all(plan, ["c1"], flows=1000, port=free, tcp=True, timeout=3.0)["c1"]
        assert 0.20 <= tcp["answers"].get("AKL", 0) / 1000 <= 0.30, tcp["answers"]
        # another plan's port, and another site's clients, are untouched
        assert probe_all(plan, ["c1"], flows=200, port=pro)["c1"]["answers"] == {"CHC": 200}
        assert probe_all(plan, ["c2"], flows=200, port=free)["c2"]["answers"] == {"AKL": 200}
    finally:
        fwd.set("CHC", [])
    assert probe_all(plan, ["c1"], flows=300, port=free)["c1"]["answers"] == {"CHC": 300}
    assert build.LabState.load(lab3.directory).forward["chc"] == []


def test_traffic_manager_forwards_an_overload_away_and_takes_it_back(lab3: RunningLab) -> None:
    """CHC can serve 200 ms/s; 300 free requests/s at 1 ms each put it at 150 %."""
    plan = lab3.plan
    c1 = plan.node("c1").namespace
    steps: list[Step] = []
    load_done = threading.Event()
    done = threading.Event()

    def settled() -> bool:
        # the load is over and the Traffic Manager has taken everything back
        forwarded = build.LabState.load(lab3.directory).forward.get("chc")
        moved = any(a.startswith("forward CHC") for s in steps for a in s.actions)
        return load_done.is_set() and moved and not forwarded

    def loop() -> None:
        try:
            run(lab3.world, plan, lab3.directory, 120.0, 1.0, on_step=steps.append, stop=settled)
        finally:
            done.set()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    time.sleep(3.0)
    argv = ["ip", "netns", "exec", c1, sys.executable, "-m", "anyedge.lab.probe", "load"]
    argv += ["--address", plan.service_address, "--port", str(plan.ports[0])]
    argv += ["--rate", "300", "--duration", "12", "--flows", "512"]
    try:
        load = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=True)
    finally:
        load_done.set()
    sent = json.loads(load.stdout)
    assert done.wait(150), "the control loop did not end"
    t.join()
    hot = [s for s in steps if s.utilisation["CHC"] > 0.9]
    assert hot, "the load never overloaded CHC"
    moved = [s for s in steps if any(a.startswith("forward CHC free") for a in s.actions)]
    assert moved, [s.actions for s in steps]
    assert max(s.forwarding["CHC"] for s in steps) > 0.2
    # while forwarding under load, CHC is back under its maximum and AKL served the rest
    relieved = [s for s in steps if s.forwarding["CHC"] > 0.2 and s.utilisation["CHC"] > 0.3]
    assert relieved
    assert min(s.utilisation["CHC"] for s in relieved) < 0.9
    assert sent["answers"].get("AKL", 0) > 0.1 * sent["sent"]
    # after the load, everything was taken back
    assert any(a.startswith("revert CHC") for s in steps for a in s.actions)
    assert build.LabState.load(lab3.directory).forward["chc"] == []
    after = probe_all(plan, ["c1"], flows=300, port=plan.ports[0])["c1"]
    assert after["answers"] == {"CHC": 300}


def test_status_and_exec_reach_the_lab(lab3: RunningLab, capfd: pytest.CaptureFixture[str]) -> None:
    d = str(lab3.directory)
    assert main(["lab", "status", "--dir", d, "--json"]) == 0
    s = json.loads(capfd.readouterr().out)
    rows = s["nodes"]
    assert {r["node"] for r in rows} == {n.name for n in lab3.plan.nodes}
    for r in rows:
        assert r["up"]
        if r["established"]:
            up, configured = r["established"].split("/")
            assert up == configured, r
    assert s["down"] == []
    assert s["faults"] == []
    assert main(["lab", "exec", "--dir", d, "c1", "--", "ip", "route"]) == 0
    assert "default via 100.64.0." in capfd.readouterr().out
    assert main(["lab", "exec", "--dir", d, "nosuch", "--", "true"]) == 2
    assert "no node 'nosuch'" in capfd.readouterr().err


def test_down_cleans_up_after_up_was_killed() -> None:
    d = lab_directory()
    name = "k" + str(int(time.time() * 1000) % 10**6)
    argv = [sys.executable, "-m", "anyedge", "lab", "up", "-t", str(DATA / "lab3.yaml")]
    argv += ["--dir", str(d), "--name", name]
    up = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # kill it once it has started some daemons, before it finished
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = json.loads((d / build.STATE).read_text()) if (d / build.STATE).exists() else {}
            if state.get("pids"):
                break
            time.sleep(0.02)
        up.send_signal(signal.SIGKILL)
        up.wait()
        state = build.LabState.load(d)
        assert not state.ready
        assert netns.listed(namespace_prefix(name))
        pids = [p for ps in state.pids.values() for p in ps]
        assert pids
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        out = build.down(d, name)
    assert out["namespaces"]
    assert netns.listed(namespace_prefix(name)) == []
    assert not [p for p in pids if netns.alive(p)]
    assert not (d / build.STATE).exists()
    shutil.rmtree(d, ignore_errors=True)


def test_up_refuses_a_lab_that_is_already_there(lab3: RunningLab) -> None:
    with pytest.raises(build.LabError, match="already up"):
        build.up(lab3.world, lab3.plan, lab3.directory)
    # ...and did not touch the running one
    assert dominant(probe_all(lab3.plan, ["c2"], flows=5)["c2"]) == "AKL"


def test_traffic_predictor_measurement_matches_the_prediction(lab3: RunningLab) -> None:
    trials = {t.site: t for t in trial.run(lab3.world, lab3.plan, lab3.directory)}
    assert trials["CHC"].clients == ("c1",)
    assert trials["CHC"].measured == {"AKL": 1.0}
    assert trials["AKL"].measured == {"CHC": 1.0}
    assert trials["SYD"].clients == ()
    assert all(t.agree for t in trials.values()), [t.to_dict() for t in trials.values()]
    # production traffic never moved, and the test prefix is announced again everywhere
    assert {c: dominant(r) for c, r in probe_all(lab3.plan, flows=5).items()} == {
        "c1": "CHC",
        "c2": "AKL",
    }
    state = build.LabState.load(lab3.directory)
    assert all(["203.0.113.0/24", 0] in routes for routes in state.routes.values())


def test_compare_follows_what_the_sites_announce_now(lab3: RunningLab) -> None:
    plan, d = lab3.plan, lab3.directory
    ann = Announcer(plan, d)
    ann.withdraw("AKL")
    try:
        ann.settle()
        rows = compare(lab3.world, plan, d, flows=10, each_site=False)
        assert {r.client: r.model for r in rows} == {"c1": "CHC", "c2": "CHC"}
        assert all(r.agree for r in rows), [r.to_dict() for r in rows]
    finally:
        ann.announce("AKL")
        ann.settle()
    Forwarder(plan, d).set("CHC", [Share(plan.ports[0], "AKL", 0.5)])
    try:
        with pytest.raises(build.LabError, match="forward flows to other sites"):
            compare(lab3.world, plan, d, flows=5, each_site=False)
    finally:
        Forwarder(plan, d).set("CHC", [])


def test_answers_come_back_after_a_link_on_their_way_flaps(lab3: RunningLab) -> None:
    """c1's answers from SYD come back through isp3 and isp1.  Take that link down and up:
    the clients' networks are BGP routes, so when the link returns the way back is
    learned again (static return routes were deleted with the link and never restored,
    leaving c1 cut off until the lab was rebuilt — issue 22)."""
    plan, d = lab3.plan, lab3.directory
    ann = Announcer(plan, d)
    isp3_to_isp1 = next(p.ifname for p in plan.node("isp3").ports if p.peer == "isp1")
    try:
        for site in ("CHC", "AKL"):
            ann.withdraw(site)
        ann.settle()
        assert predicted(lab3.world, ("CHC", "AKL"))["c1"] == "SYD"
        assert dominant(probe_all(plan, ["c1"], flows=10)["c1"]) == "SYD"
        isp3 = plan.node("isp3").namespace
        netns.batch(isp3, [f"link set {isp3_to_isp1} down"])
        # isp1's only way to SYD is gone (its peer isp2 gives it no provider routes)
        deadline = time.monotonic() + 15
        while probe_all(plan, ["c1"], flows=5, timeout=0.5)["c1"]["answers"]:
            assert time.monotonic() < deadline, "c1 kept reaching a site with the link down"
        netns.batch(isp3, [f"link set {isp3_to_isp1} up"])
        build.wait_converged(plan, d, timeout=60)
        got = probe_all(plan, ["c1"], flows=20, timeout=2.0)["c1"]
        assert got["answers"] == {"SYD": 20}, got
    finally:
        netns.batch(plan.node("isp3").namespace, [f"link set {isp3_to_isp1} up"])
        for site in ("CHC", "AKL"):
            ann.announce(site)
        ann.settle()
