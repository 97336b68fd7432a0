"""``anyedge control run`` with ``actuator.balancer`` (Unimog): a site's server weights
follow its servers' CPU, through the real loader — the lab's edge agent, which holds
one balancer XDP program per server, attached in the server's namespace.

Prometheus scrapes an exporter whose per-server CPU follows the weights the agent has
in force: server s0 is three times as slow as s1, so at equal weights s0 runs at 90 %
and s1 at 30 %; the controller moves buckets from s0 to s1 until both run at 45 %
(weights 0.5 and 1.5, a quarter and three quarters of the buckets), then leaves the
table alone.  The pure rule is checked without root at the end."""

from __future__ import annotations

import math
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric

from anyedge.adapters import netns
from anyedge.api.unimog import new_weights
from anyedge.balance.table import ServerState
from anyedge.edge import build
from anyedge.lab.build import wait_ready
from anyedge.lab.edge import ask
from service_support import Run, controller_yaml, free_port, wait_for
from service_support import world as sites_and_prometheus

CAPACITY = {"CHC": 2_000.0, "AKL": 2_000.0}
WORK = 600.0  # ms/s the site's traffic costs on a server as fast as s1
COST = {"s0": 3.0, "s1": 1.0}  # s0 is three times as slow
SERVER_CAPACITY = 1_000.0


class Servers:
    """Per-server CPU as the agent's weights make it, read at each scrape."""

    def __init__(self, agent: Path) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        t = ask(self.agent, "CHC", {"op": "table"})
        total = sum(t["weight"])
        cpu = GaugeMetricFamily("anyedge_server_cpu_ms", "CPU ms/s", labels=["site", "server"])
        cap = GaugeMetricFamily("anyedge_server_capacity_ms", "ms/s", labels=["site", "server"])
        for n, w in zip(t["names"], t["weight"], strict=True):
            cpu.add_metric(["CHC", n], WORK * w / total * COST[n])
            cap.add_metric(["CHC", n], SERVER_CAPACITY)
        yield cpu
        yield cap


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Path]:
    """The edge agent of a site with two servers, each in its own namespace."""
    if build.missing_tools():
        pytest.skip("cannot build BPF programs: " + ", ".join(build.missing_tools()))
    tag = secrets.token_hex(3)
    s0, s1 = f"aesvb-{tag}-s0", f"aesvb-{tag}-s1"
    made: list[str] = []
    pids: list[int] = []
    try:
        for ns in (s0, s1):
            netns.add(ns)
            made.append(ns)
        netns.veth(s0, "eth0", s1, "eth0")
        sock, log = tmp_path / "edge.sock", tmp_path / "edge.log"
        argv = [sys.executable, "-m", "anyedge.lab.edge", "--socket", str(sock),
                "--service", "192.0.2.10", "--server", f"s0={s0}",
                "--server", f"s1={s1}"]  # fmt: skip
        pids.append(netns.spawn(s0, argv, log))
        wait_ready(pids[0], log, "the edge agent", 60)
        yield sock
    finally:
        netns.stop(pids)
        for ns in made:
            netns.remove(ns)


@pytest.mark.lab
def test_the_balancer_evens_out_the_servers_cpu(agent: Path, tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("Debian's prometheus is not installed")
    with sites_and_prometheus(tmp_path / "prom", CAPACITY) as (sites, prom):
        sites.registry.register(Servers(agent))
        sites.calm(prom.url)
        wait_for("Prometheus has the servers", lambda: _scraped(prom.url))
        port = free_port()
        actuator = (
            "actuator:\n  kind: dry-run\n"
            f"  balancer: {{damping: 0.5, min_change: 0.01, sites: {{CHC: {{agent: {agent}}}}}}}"
        )
        cfg = controller_yaml(tmp_path, prom.url, CAPACITY, http_port=port, actuator=actuator)
        run = Run(cfg, port)
        try:
            table = lambda: ask(agent, "CHC", {"op": "show"})  # noqa: E731

            def even() -> bool:
                w = [s["weight"] for s in table()["servers"]]
                return abs(w[0] - 0.5) < 0.02 and abs(w[1] - 1.5) < 0.02

            wait_for("the weights even out the CPU", even, 60)

            def in_kernel() -> tuple[list[dict[str, Any]], list[int]] | None:
                """The table, if it is what each server's XDP program reads from its
                bucket map (not in the middle of a change)."""
                rows = table()["servers"]
                buckets = [r["buckets"] for r in rows]
                kernel = ask(agent, "CHC", {"op": "kernel"})
                return (rows, buckets) if kernel == {"s0": buckets, "s1": buckets} else None

            rows, buckets = wait_for("the kernel's bucket maps hold the table", in_kernel)
            assert sum(buckets) == 1 << 16
            assert abs(buckets[0] / (1 << 16) - 0.25) < 0.01  # a quarter of the flows
            # the buckets s0 gave up name it as their second hop (its connections go on)
            assert rows[0]["second_hop_buckets"] > 0
            assert rows[1]["second_hop_buckets"] == 0  # s1 gave nothing up
            assert "balancer CHC: weights s0" in run.log()
            print("\n".join(ln for ln in run.lines if "balancer" in ln))  # pytest -s shows it
            assert (run.metric("anyedge_controller_balancer_moved_buckets_total") or 0) > 0
            metrics = _metrics(run)
            assert metrics['anyedge_server_weight{server="s1",site="CHC"}'] == pytest.approx(
                rows[1]["weight"]
            )
            assert "anyedge_controller_enforce_failures_total{" not in "\n".join(metrics)
            state = run.state()["balancer"]["CHC"]
            assert state["error"] is None
            assert state["problems"] == []
            assert state["weights"]["s0"] == pytest.approx(rows[0]["weight"])
        finally:
            assert run.stop() == 0, run.log()


def _scraped(url: str) -> bool:
    from anyedge.adapters.prometheus import query

    return len(query(url, "anyedge_server_cpu_ms")) == 2


def _metrics(run: Run) -> dict[str, float]:
    from service_support import get

    out = {}
    for line in get(f"{run.url}/metrics").decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


# ------------------------------------------------------------------ the rule, no root


def test_new_weights_even_out_and_leave_out_what_is_unknown() -> None:
    active, draining = int(ServerState.ACTIVE), int(ServerState.DRAINING)
    names = ["a", "b", "c", "d"]
    cpu = {"a": 900.0, "b": 300.0, "c": 500.0}  # d is not in Prometheus
    cap = {"a": 1000.0, "b": 1000.0, "c": 1000.0, "d": 1000.0}
    want, problems = new_weights(
        names, [1, 1, 1, 1], [active, active, draining, active], cpu, cap, damping=1.0
    )
    assert want is not None
    assert set(want) == {"a", "b"}  # c is draining, d unknown: both keep their weights
    assert want["a"] == pytest.approx(0.5)
    assert want["b"] == pytest.approx(1.5)
    assert problems == ["d: no CPU time (nan)"]
    # even already (within min_change): the table is left as it is
    even, _ = new_weights(names[:2], [0.5, 1.5], [active] * 2, {"a": 450, "b": 451}, cap)
    assert even is None
    # garbage from Prometheus leaves the server out, with the reason
    none, why = new_weights(names[:2], [1, 1], [active] * 2, {"a": -1, "b": 1}, {"b": 0, "a": 1})
    assert none is None
    assert why == ["a: no CPU time (-1)", "b: no capacity (0)"]
    assert not math.isnan(sum(want.values()))


def test_bad_balancer_and_speaker_settings_name_their_line(tmp_path: Path) -> None:
    from anyedge.api.config import load
    from anyedge.errors import InputError

    bad = tmp_path / "controller.yaml"
    bad.write_text(
        "prometheus: {url: 'http://127.0.0.1:9090'}\n"
        "sites: [{name: CHC}]\n"
        "actuator:\n"
        "  kind: speakers\n"
        "  speakers:\n"
        "    CHC: {driver: bird, namespace: x, workdir: w, asn: 64500, router_id: 10.0.0.7}\n"
        "  balancer: {damping: 0, sites: {AKL: {agent: edge.sock}}}\n"
    )
    with pytest.raises(InputError) as e:
        load(bad)
    err = e.value.render()
    assert f"{bad}:6: actuator.speakers.CHC: a bird speaker needs its neighbors" in err
    assert f"{bad}:7: actuator.balancer.damping: Input should be greater than 0" in err
    bad.write_text(
        "prometheus: {url: 'http://127.0.0.1:9090'}\n"
        "sites: [{name: CHC}]\n"
        "actuator: {kind: dry-run, balancer: {sites: {AKL: {agent: edge.sock}}}}\n"
    )
    with pytest.raises(InputError, match=r"actuator\.balancer names site 'AKL', which is not"):
        load(bad)
    # a network actuator (forwards by nftables, withdrawals by the speakers) needs both
    bad.write_text(
        "prometheus: {url: 'http://127.0.0.1:9090'}\n"
        "sites: [{name: CHC}]\n"
        "actuator: {kind: network, ports: {free: 1, pro: 2, business: 3},\n"
        "  nft: {CHC: {anycast: [192.0.2.1], ingress: [eth0]}}}\n"
    )
    with pytest.raises(InputError, match="a network actuator needs both nft"):
        load(bad)
    # learned maxima need each site's p95 latency
    bad.write_text(
        "prometheus: {url: 'http://127.0.0.1:9090'}\nsites: [{name: CHC}]\nlearn: {every: 60}\n"
    )
    with pytest.raises(InputError, match=r"learn needs prometheus\.queries\.p95"):
        load(bad)
