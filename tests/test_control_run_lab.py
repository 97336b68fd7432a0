"""The lab as a production rehearsal (marker ``lab``): the lab of tests/data/lab3.yaml,
whose site services serve their counters over HTTP, Debian's Prometheus scraping them
directly (``anyedge lab prometheus-config``: file_sd), and ``anyedge control run`` on
the configuration ``anyedge lab controller-config`` writes — telemetry by PromQL,
forwarding by nftables in the sites' namespaces.  The closed loop: c1 overloads CHC
(300 free requests/s at 1 ms each where CHC can serve 200 ms/s), the controller
forwards CHC's free plan to AKL, and takes it back when the load ends; while it
forwards, the dashboard (in headless Chromium) shows it.  With ``--withdraw`` and CHC
forbidden to forward, the controller withdraws CHC's prefix through CHC's own FRR
instead, and BGP takes c1 to AKL."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from anyedge.adapters.prometheus import query
from lab_support import DATA, RunningLab, running_lab
from service_support import SRC, Page, Prometheus, Run, chromium, free_port, wait_for

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab3() -> Iterator[RunningLab]:
    with running_lab(DATA / "lab3.yaml") as lab:
        yield lab


def _actions(journal: Path, kind: str) -> list[tuple[int, str, str, str]]:
    db = sqlite3.connect(journal)
    try:
        rows = db.execute(
            "SELECT seq, site, plan, to_site FROM actions WHERE kind = ? ORDER BY seq, n", (kind,)
        ).fetchall()
    finally:
        db.close()
    return [(int(a), str(b), str(c), str(d)) for a, b, c, d in rows]


def _anyedge(*args: str) -> str:
    """``anyedge ARGS`` as a process; its output (a failure fails the test)."""
    env = {**os.environ, "PYTHONPATH": SRC}
    r = subprocess.run([sys.executable, "-m", "anyedge", *args], capture_output=True,
                       text=True, env=env, timeout=120, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def _prometheus(lab: RunningLab, tmp_path: Path) -> Prometheus:
    """Debian's Prometheus on ``anyedge lab prometheus-config``, once it has every site."""
    yml = tmp_path / "prometheus.yml"
    _anyedge("lab", "prometheus-config", "--dir", str(lab.directory), "-o", str(yml))
    prom = Prometheus(tmp_path / "prom", [], yml.read_text())
    try:
        sites = "count by (site) (anyedge_lab_cpu_ms_total)"
        wait_for("every site scraped", lambda: len(query(prom.url, sites)) == 3)
    except BaseException:
        prom.stop()
        raise
    return prom


def _controller_config(
    lab: RunningLab, tmp_path: Path, prom: Prometheus, http: int, *extra: str
) -> tuple[Path, str]:
    cfg = tmp_path / "controller.yaml"
    said = _anyedge("lab", "controller-config", "--dir", str(lab.directory), "--prometheus",
                    prom.url, "--http-port", str(http), "-o", str(cfg), *extra)  # fmt: skip
    return cfg, said


def _overload_chc(lab: RunningLab, seconds: int) -> subprocess.Popen[str]:
    """c1 sends CHC 300 free requests/s (1 ms each, where CHC can serve 200 ms/s)."""
    plan = lab.plan
    argv = ["ip", "netns", "exec", plan.node("c1").namespace, sys.executable, "-m",
            "anyedge.lab.probe", "load", "--address", plan.service_address,
            "--port", str(plan.ports[0]), "--rate", "300", "--duration", str(seconds),
            "--flows", "512"]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_closed_loop_through_prometheus(lab3: RunningLab, tmp_path: Path) -> None:
    prom: Prometheus | None = None
    run: Run | None = None
    try:
        # Prometheus scrapes every site service directly, found through their file_sd files
        prom = _prometheus(lab3, tmp_path)
        http = free_port()
        cfg, _ = _controller_config(lab3, tmp_path, prom, http)
        run = Run(cfg, http)
        wait_for("every site fresh", lambda: all(s["fresh"] for s in run.state()["sites"]))
        load = _overload_chc(lab3, 15)
        try:
            # while CHC is hot: the dashboard, in Chromium, shows the forward and why
            wait_for("CHC forwards", lambda: run.state()["moves"]["forward"])
            out, _ = chromium(tmp_path, f"{run.url}/")
            page = Page(out)
            rows = [a for t, a in page.tags if t == "tr" and a.get("class") == "forward"]
            assert ("CHC", "AKL") in {(a["data-site"], a["data-to"]) for a in rows}
            assert "is above the maximum" in page.text["forwards"]
            # the map: a circle per site where the world puts it, an arrow CHC -> AKL
            circles = {a["data-site"]: a for t, a in page.tags if t == "circle"}
            assert set(circles) == {"CHC", "AKL", "SYD"}
            flows = {(a["data-site"], a["data-to"]) for t, a in page.tags if t == "line"
                     and a.get("class") == "flow"}  # fmt: skip
            assert ("CHC", "AKL") in flows
            stdout, stderr = load.communicate(timeout=90)
        finally:
            if load.poll() is None:
                load.kill()
                load.communicate()
        assert load.returncode == 0, stderr
        sent = json.loads(stdout)
        journal = tmp_path / "journal.sqlite"
        moved = _actions(journal, "forward")
        assert moved, run.log()
        assert {(m[1], m[2], m[3]) for m in moved} >= {("CHC", "free", "AKL")}
        assert sent["answers"].get("AKL", 0) > 0.1 * sent["sent"]  # AKL served some of it
        # the load is over: CHC takes it all back
        wait_for("CHC took it back", lambda: not run.state()["moves"]["forward"], 120)
        assert any(a[1] == "CHC" for a in _actions(journal, "revert"))
        wait_for("logged", lambda: "forward CHC free -> AKL" in run.log())
        assert run.metric("anyedge_controller_telemetry_up") == 1.0
        print("\n".join(ln for ln in run.lines if "decision" in ln))  # pytest -s shows it
        print(f"load: {sent['answers']} of {sent['sent']}")
    finally:
        if run is not None:
            assert run.stop() == 0, run.log()
        if prom is not None:
            prom.stop()


def test_the_loop_withdraws_through_the_sites_own_speaker(lab3: RunningLab, tmp_path: Path) -> None:
    """``controller-config --withdraw``: the ``network`` actuator with the sites' own
    speakers and the lab model's atlas.  CHC may not forward here, so when c1 overloads
    it the controller withdraws CHC's prefix through CHC's FRR — BGP takes c1 to AKL,
    as the atlas says."""
    import yaml

    prom: Prometheus | None = None
    run: Run | None = None
    plan = lab3.plan
    prefix = plan.site_node("CHC").prefixes[0]

    from anyedge.lab.build import initial_routes, router_of, speaker_of

    isp1 = router_of(plan, plan.node("isp1"), lab3.directory)
    chc_ip = next(p.peer_address for p in plan.node("isp1").bgp_ports if p.peer == "chc")

    def chc_heard() -> bool:  # c1's ISP has the prefix from CHC
        out = isp1.vtysh(f"show ip bgp neighbors {chc_ip} routes json")
        return prefix in json.loads(out or "{}").get("routes", {})

    try:
        prom = _prometheus(lab3, tmp_path)
        http = free_port()
        cfg, said = _controller_config(lab3, tmp_path, prom, http, "--withdraw")
        assert "actuator network" in said
        assert (tmp_path / "atlas.json").exists()
        doc = yaml.safe_load(cfg.read_text())
        for s in doc["sites"]:
            s["can_forward"] = s["name"] != "CHC"
        cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
        assert chc_heard()
        run = Run(cfg, http)
        wait_for("every site fresh", lambda: all(s["fresh"] for s in run.state()["sites"]))
        load = _overload_chc(lab3, 12)
        try:
            wait_for("CHC withdrawn", lambda: run.state()["moves"]["withdrawn"])
            (w,) = run.state()["moves"]["withdrawn"]
            assert (w["site"], w["prefix"]) == ("CHC", prefix)
            assert w["cpu"] > 0
            assert w["basis"] > 0
            wait_for("CHC's FRR withdrew it at isp1", lambda: not chc_heard())
            stdout, stderr = load.communicate(timeout=90)
        finally:
            if load.poll() is None:
                load.kill()
                load.communicate()
        assert load.returncode == 0, stderr
        sent = json.loads(stdout)
        assert sent["answers"].get("AKL", 0) > 0.1 * sent["sent"]  # BGP took c1 to AKL
        assert any(a[1] == "CHC" for a in _actions(tmp_path / "journal.sqlite", "withdraw"))
        assert run.state()["enforce_error"] is None
    finally:
        if run is not None:
            assert run.stop() == 0, run.log()
        if prom is not None:
            prom.stop()
        # the lab's state still says CHC announces its prefixes: make it so again
        chc = speaker_of(plan, plan.site_node("CHC"), lab3.directory)
        chc.assume([])
        chc.apply(initial_routes(plan.site_node("CHC")))
        wait_for("isp1 hears CHC again", chc_heard, 30)
