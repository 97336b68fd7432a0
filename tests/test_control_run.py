"""``anyedge control run`` as an operator runs it: a subprocess on a real Prometheus
(Debian's) scraping the sites' exporter.  A broken configuration is refused with file
and line (exit 2); an overloaded site's traffic is forwarded and journaled; a site
whose query returns garbage or nothing is left out with its reason; with Prometheus
stopped the controller fails static (no new move, the alert metric set) and decides
again when it returns; SIGTERM leaves the network as it is; ``kill -9`` in the middle
of an enforcement, then a restart, neither repeats nor loses the action."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service_support import (
    SRC,
    TOKEN,
    Prometheus,
    Run,
    Sites,
    controller_yaml,
    enforced,
    free_port,
    post_json,
    wait_for,
)
from service_support import world as sites_and_prometheus

CAPACITY = {"CHC": 1_000.0, "AKL": 2_000.0, "SYD": 4_000.0}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sites, Prometheus]]:
    with sites_and_prometheus(tmp_path_factory.mktemp("prom"), CAPACITY) as w:
        yield w


def _anyedge(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-m", "anyedge", *args], capture_output=True, text=True, env=env,
        timeout=60, check=False,
    )  # fmt: skip


def _codes(directory: Path, code: str) -> int:
    """How many journaled actions have this reason code."""
    db = sqlite3.connect(directory / "journal.sqlite")
    try:
        (n,) = db.execute("SELECT count(*) FROM actions WHERE code = ?", (code,)).fetchone()
    finally:
        db.close()
    return int(n)


def _repeated_holds(directory: Path, code: str) -> bool:
    """Whether two journaled decisions in a row hold for ``code`` and nothing else."""
    db = sqlite3.connect(directory / "journal.sqlite")
    try:
        rows = db.execute("SELECT seq, code FROM actions ORDER BY seq, n").fetchall()
    finally:
        db.close()
    codes: dict[int, set[str]] = {}
    for seq, c in rows:
        codes.setdefault(seq, set()).add(c)
    only = [codes[q] == {code} for q in sorted(codes)]
    return any(a and b for a, b in itertools.pairwise(only))


def _forwards(directory: Path) -> list[tuple[int, str, str, str]]:
    db = sqlite3.connect(directory / "journal.sqlite")
    try:
        rows = db.execute(
            "SELECT seq, site, plan, to_site FROM actions WHERE kind = 'forward' ORDER BY seq, n"
        ).fetchall()
    finally:
        db.close()
    return [(int(a), str(b), str(c), str(d)) for a, b, c, d in rows]


def test_a_broken_configuration_is_refused_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "controller.yaml"
    bad.write_text(
        "prometheus: {url: 'ftp://127.0.0.1:9090'}\n"
        "interval: 0\n"
        "sites:\n"
        "  - {name: CHC, maximum: 0.5, target: 0.9}\n"
        "actuator: {kind: nft}\n"
        "colour: blue\n"
    )
    r = _anyedge("control", "run", "-c", str(bad))
    assert r.returncode == 2
    err = r.stderr
    assert f"{bad}:1: prometheus.url: String should match pattern" in err
    assert f"{bad}:2: interval: Input should be greater than 0" in err
    assert f"{bad}:4: sites[0]: thresholds must be acceptable <= target <= maximum" in err
    assert f"{bad}:6: colour: Extra inputs are not permitted" in err
    assert "Traceback" not in err
    assert not (tmp_path / "journal.sqlite").exists()  # nothing started, nothing written
    bad.write_text("prometheus: {url: 'http://x'}\nsites: [{name: A}]\n  - oops\n")
    r = _anyedge("control", "run", "-c", str(bad))
    assert r.returncode == 2
    assert f"{bad}:3: not valid YAML" in r.stderr
    r = _anyedge("control", "run", "-c", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2
    assert "missing.yaml" in r.stderr


def test_the_sample_configuration_checks() -> None:
    sample = Path(__file__).resolve().parents[1] / "docs" / "examples" / "controller.yaml"
    r = _anyedge("control", "run", "-c", str(sample), "--check")
    assert r.returncode == 0, r.stderr
    assert "ok (3 sites, actuator dry-run)" in r.stdout
    r = _anyedge("control", "run", "-c", str(sample), "--check", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {
        "config": str(sample), "ok": True, "sites": ["AMS", "FRA", "LHR"],
        "actuator": "dry-run", "atlas": False,
    }  # fmt: skip


def test_overload_moves_garbage_is_left_out_and_prometheus_down_fails_static(
    world: tuple[Sites, Prometheus], tmp_path: Path
) -> None:
    sites, prom = world
    sites.calm(prom.url)
    port = free_port()
    # MEL is in the configuration but exports nothing: left out, with its reason
    cfg = controller_yaml(tmp_path, prom.url, CAPACITY, http_port=port, extra_sites=("MEL",))
    run = Run(cfg, port)
    try:
        wait_for("a first step", lambda: run.state()["steps"] >= 2)
        assert _forwards(tmp_path) == []
        wait_for(
            "MEL's reason logged", lambda: "left out of the decision: MEL: no series" in run.log()
        )
        st = run.state()
        assert {s["site"]: s["fresh"] for s in st["sites"]} == {
            "CHC": True, "AKL": True, "SYD": True, "MEL": False,
        }  # fmt: skip
        assert st["telemetry_up"] is True
        assert run.metric("anyedge_controller_telemetry_up") == 1.0

        # garbage: AKL's capacity becomes NaN — left out with a reason, the loop goes on
        sites.cap.labels("AKL").set(float("nan"))
        wait_for("AKL's garbage logged", lambda: "AKL: capacity is nan" in run.log())
        steps = run.state()["steps"]
        wait_for("the loop goes on", lambda: run.state()["steps"] > steps + 1)
        assert not {s["site"]: s["fresh"] for s in run.state()["sites"]}["AKL"]
        sites.cap.labels("AKL").set(CAPACITY["AKL"])
        wait_for("AKL fresh again", lambda: run.state()["sites"][1]["fresh"])

        # overload CHC: its traffic is forwarded, journaled, enforced
        sites.load("CHC", 1.2)
        first = wait_for("a forward journaled", lambda: _forwards(tmp_path))
        assert {f[1] for f in first} == {"CHC"}
        seq = first[0][0]
        wait_for("logged", lambda: f"decision {seq}: forward CHC free -> " in run.log())
        wait_for("enforced", lambda: any(
            e["event"] == "done" and e["seq"] == seq for e in enforced(tmp_path)))  # fmt: skip
        assert run.metric("anyedge_controller_forwards") == len(first)

        # Prometheus down: no new moves, the alert metric set
        prom.stop()
        wait_for("failing static", lambda: run.metric("anyedge_controller_telemetry_up") == 0.0)
        wait_for("logged", lambda: "Prometheus is down, failing static" in run.log())
        assert run.state()["telemetry_up"] is False
        decisions = run.state()["decisions"]
        sites.load("AKL", 1.3)  # an overload nobody can see
        steps = run.state()["steps"]
        wait_for("three steps while down", lambda: run.state()["steps"] >= steps + 3)
        assert all(f[1] == "CHC" for f in _forwards(tmp_path))
        holds = [x for x in run.state()["sites"] if x["fresh"]]
        assert holds == []
        assert run.state()["decisions"] >= decisions  # only holds were journaled
        assert _codes(tmp_path, "no_fresh_telemetry") == 1  # once, not at every step

        # Prometheus back: moves resume
        prom.start()
        wait_for(
            "AKL's overload moved", lambda: any(f[1] == "AKL" for f in _forwards(tmp_path)), 90
        )
        wait_for("logged", lambda: "Prometheus answers again" in run.log())
        assert run.metric("anyedge_controller_telemetry_up") == 1.0
        # the outage was journaled once; Prometheus, just restarted on a busy machine, may
        # miss a scrape and go stale again, but that is a new hold after a decision in
        # between, never the same hold written twice in a row
        assert not _repeated_holds(tmp_path, "no_fresh_telemetry")
        done = len(enforced(tmp_path))
    finally:
        rc = run.stop(signal.SIGTERM)
    # SIGTERM: exit 0, nothing undone — no enforcement after the signal
    assert rc == 0, run.log()
    assert "stopped (SIGTERM); the network keeps decision" in run.log()
    after = enforced(tmp_path)
    assert all(e["event"] in ("begin", "done") for e in after[done:])
    last = [e for e in after if e["event"] == "begin"][-1]
    assert last["state"]["forward"]  # the forwards stay in force


def test_kill_9_mid_action_then_restart_neither_repeats_nor_loses_it(
    world: tuple[Sites, Prometheus], tmp_path: Path
) -> None:
    sites, prom = world
    sites.calm(prom.url)
    port = free_port()
    # each enforcement takes 3 s; no site changes twice within an hour
    cfg = controller_yaml(tmp_path, prom.url, CAPACITY, http_port=port, delay=3.0,
                          min_interval=3600)  # fmt: skip
    run = Run(cfg, port)
    try:
        sites.load("SYD", 1.1)
        wait_for("decision 1 being enforced", lambda: any(
            e["event"] == "begin" and e["seq"] == 1 for e in enforced(tmp_path)))  # fmt: skip
        assert not any(e["event"] == "done" for e in enforced(tmp_path))
    finally:
        rc = run.stop(signal.SIGKILL)
    assert rc == -signal.SIGKILL
    journaled = _forwards(tmp_path)
    assert journaled
    assert {f[0] for f in journaled} == {1}
    assert {f[1] for f in journaled} == {"SYD"}
    begun = [e for e in enforced(tmp_path) if e["event"] == "begin"]
    moves = begun[-1]["state"]["forward"]

    run = Run(cfg, port)  # restarted on the same journal, SYD still overloaded
    try:
        wait_for("resumed and enforced", lambda: any(
            e["event"] == "done" and e["seq"] == 1 for e in enforced(tmp_path)))  # fmt: skip
        wait_for("the log says so", lambda: "resumed at decision 1" in run.log())
        steps = run.state()["steps"]
        wait_for("three more steps", lambda: run.state()["steps"] >= steps + 3, 60)
        assert _forwards(tmp_path) == journaled  # not repeated
        st = run.state()
        assert st["moves"]["forward"] == moves  # not lost
        begun = [e for e in enforced(tmp_path) if e["event"] == "begin"]
        assert [e["seq"] for e in begun] == [1, 1]  # once cut short, once whole
        assert begun[1]["state"] == begun[0]["state"]
    finally:
        rc = run.stop()
    assert rc == 0


def test_overrides_need_the_token_and_take_effect(
    world: tuple[Sites, Prometheus], tmp_path: Path
) -> None:
    sites, prom = world
    sites.calm(prom.url)
    port = free_port()
    cfg = controller_yaml(tmp_path, prom.url, CAPACITY, http_port=port)
    run = Run(cfg, port)
    try:
        url = f"{run.url}/api/overrides"
        assert post_json(url, {"kind": "freeze"}, None)[0] == 401
        assert post_json(url, {"kind": "freeze"}, "wrong-token-wrong-token")[0] == 401
        status, body = post_json(url, {"kind": "pin", "site": "NOPE"}, TOKEN)
        assert status == 400
        assert "NOPE" in body["error"]
        # pin CHC, then overload it: nothing moves, the plan says why
        status, body = post_json(url, {"kind": "pin", "site": "CHC", "note": "maintenance"}, TOKEN)
        assert status == 200
        assert body["kind"] == "pin"
        assert body["site"] == "CHC"
        sites.load("CHC", 1.2)
        wait_for("pinned in the plan", lambda: any(
            a["code"] == "pinned" and a["site"] == "CHC"
            for a in _get_plan(run)))  # fmt: skip
        assert _forwards(tmp_path) == []
        # freeze from the command line, then unpin: still nothing, frozen
        r = _anyedge(
            "control", "override", "-c", str(cfg), "freeze", "--note", "change window", "--json"
        )
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["note"] == "change window"
        assert post_json(url, {"kind": "pin", "site": "CHC", "active": False}, TOKEN)[0] == 200
        wait_for("frozen", lambda: run.state()["frozen"])
        assert run.metric("anyedge_controller_frozen") == 1.0
        steps = run.state()["steps"]
        wait_for("two steps frozen", lambda: run.state()["steps"] >= steps + 2)
        assert _forwards(tmp_path) == []
        # thaw: CHC's overload moves; forbid AKL first, so it goes elsewhere
        assert post_json(url, {"kind": "forbid", "site": "AKL"}, TOKEN)[0] == 200
        r = _anyedge("control", "override", "-c", str(cfg), "freeze", "--off")
        assert r.returncode == 0, r.stderr
        moved = wait_for("CHC forwards", lambda: _forwards(tmp_path))
        assert {f[3] for f in moved} == {"SYD"}  # AKL is nearer, but forbidden
        # drain SYD's... no: drain AKL, which then forwards every plan that may move
        assert post_json(url, {"kind": "drain", "site": "AKL"}, TOKEN)[0] == 200
        wait_for("AKL drains", lambda: any(f[1] == "AKL" for f in _forwards(tmp_path)))
        got = {(f[1], f[2]) for f in _forwards(tmp_path) if f[1] == "AKL"}
        assert got == {("AKL", "free"), ("AKL", "pro"), ("AKL", "business")}
        hist = run_history(run)
        assert [h["kind"] for h in hist][:3] == ["drain", "freeze", "forbid"]
        assert hist[1]["active"] is False
        wait_for("logged", lambda: "override 1 by 127.0.0.1: pin CHC on" in run.log())
        # a wrong site from the command line: exit 2, nothing recorded
        r = _anyedge("control", "override", "-c", str(cfg), "pin", "XXX")
        assert r.returncode == 2
        assert "XXX" in r.stderr
        assert len(run_history(run)) == len(hist)
    finally:
        assert run.stop() == 0


def _get_plan(run: Run) -> list[dict[str, object]]:
    from service_support import get_json

    return list(get_json(f"{run.url}/api/plan"))


def run_history(run: Run) -> list[dict[str, object]]:
    from service_support import get_json

    return list(get_json(f"{run.url}/api/overrides")["history"])


def test_maximum_thresholds_are_learned_from_p95_in_prometheus(
    world: tuple[Sites, Prometheus], tmp_path: Path
) -> None:
    """``learn`` with a p95 query: CHC's load sweeps from 20 % to 85 % while its p95
    follows 5 + 40 u² ms (20 ms at 61 %); after ``learn.every`` the maximum is learned
    near 61 % (AKL and SYD, calm below 50 %, keep the static 90 %), logged and shown,
    and the controller then forwards CHC's load at 75 %, which the static maximum
    allowed."""
    sites, prom = world
    sites.calm(prom.url)
    port = free_port()
    cfg = controller_yaml(
        tmp_path, prom.url, CAPACITY, http_port=port,
        learn="{every: 24, min_points: 12, window: 3600}",
    )  # fmt: skip
    run = Run(cfg, port)
    try:
        for i in range(24):  # one new scrape a second, each a sample
            sites.load("CHC", 0.2 + 0.65 * ((i * 7) % 24) / 23)
            time.sleep(1.0)
        sites.load("CHC", 0.3)
        line = wait_for("learned", lambda: re.search(
            r"learned maximum for CHC: ([\d.]+) \((\w+)", run.log()), 30)  # fmt: skip
        assert line[2] in ("quadratic", "linear")
        learned = float(line[1])
        assert abs(learned - math.sqrt(15 / 40)) < 0.06, run.log()

        def sites_now() -> dict[str, Any]:
            return {s["site"]: s for s in run.state()["sites"]}

        # in force from the next step
        wait_for(
            "in force", lambda: abs(sites_now()["CHC"]["in_force"]["maximum"] - learned) < 1e-3
        )
        st = sites_now()
        assert st["CHC"]["learned"]["maximum"] == pytest.approx(learned, abs=1e-3)
        assert st["AKL"]["learned"] is None
        assert st["AKL"]["in_force"]["maximum"] == 0.9
        # up to 85 % the static 90 % held nothing: no forward was decided before the
        # maximum was learned (after it, a scrape still showing the sweep's top may be
        # forwarded on the learned maximum, which is what comes next anyway)
        log = run.log()
        assert "forward CHC" not in log[: log.index(line[0])], log
        sites.load("CHC", 0.75)
        first = wait_for("CHC forwards on the learned maximum", lambda: _forwards(tmp_path))
        assert {f[1] for f in first} == {"CHC"}
    finally:
        assert run.stop() == 0, run.log()
