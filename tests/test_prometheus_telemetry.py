"""The Traffic Manager's telemetry from a real Prometheus (Debian's ``prometheus``),
scraping sites' gauges that a prometheus-client exporter in the test serves: the
observation is what the sites exported; a site with garbage or no series is left out
with a reason; a Prometheus that is down or answers garbage makes every site stale, so
the core fails static — never an exception into the loop."""

from __future__ import annotations

import json
import math
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from anyedge.adapters.prometheus import PromError, PromTelemetry, Queries, query
from anyedge.control.core import Config, State, decide

SITES = ["CHC", "AKL", "SYD"]
PLANS = ["free", "pro", "business", "enterprise"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    url: str  # Prometheus
    exporter: str  # the sites' exporter
    cpu: Gauge
    capacity: Gauge
    prometheus: subprocess.Popen[bytes]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return bytes(r.read())


def wait_for(what: str, ok: object, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if ok():  # type: ignore[operator]
                return
        except (OSError, PromError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:g} s")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.skip("Debian's prometheus is not installed (apt-get install prometheus)")
    reg = CollectorRegistry()
    cpu = Gauge("anyedge_site_cpu_ms", "CPU ms/s", ["site", "plan"], registry=reg)
    capacity = Gauge("anyedge_site_capacity_ms", "CPU ms/s", ["site"], registry=reg)
    for s, cap in zip(SITES, (1_000.0, 2_000.0, 4_000.0), strict=True):
        capacity.labels(s).set(cap)
        for p, share in zip(PLANS, (0.4, 0.3, 0.2, 0.1), strict=True):
            cpu.labels(s, p).set(share * (1_200.0 if s == "CHC" else 0.3 * cap))
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=reg)
    d = tmp_path_factory.mktemp("prometheus")
    (d / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - {{job_name: sites, static_configs: [{{targets: ['127.0.0.1:{port}']}}]}}\n"
    )
    web = free_port()
    log = (d / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [exe, f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'data'}",
         f"--web.listen-address=127.0.0.1:{web}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{web}"
    try:
        wait_for(
            "prometheus ready", lambda: get(f"{url}/-/ready") == b"Prometheus Server is Ready.\n"
        )
        q = Queries()
        wait_for("every site scraped", lambda: len(query(url, q.cpu)) == len(SITES) * len(PLANS))
        yield Stack(url, f"http://127.0.0.1:{port}", cpu, capacity, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_observation_is_what_the_sites_exported(stack: Stack) -> None:
    tel = PromTelemetry(stack.url, SITES, PLANS)
    obs = tel.observe(time.time())
    assert tel.up
    assert tel.problems == []
    want_cpu = np.array([[0.4 * t, 0.3 * t, 0.2 * t, 0.1 * t] for t in (1_200.0, 600.0, 1_200.0)])
    np.testing.assert_allclose(obs.cpu, want_cpu)
    np.testing.assert_allclose(obs.capacity, [1_000.0, 2_000.0, 4_000.0])
    np.testing.assert_allclose(obs.utilisation, [1.2, 0.3, 0.3])
    assert np.all(obs.age < 30.0)  # scraped every second


def test_the_core_decides_on_it_and_moves_the_overload(stack: Stack) -> None:
    obs = PromTelemetry(stack.url, SITES, PLANS).observe(time.time())
    lat = np.array([[0.0, 10.0, 25.0], [10.0, 0.0, 30.0], [25.0, 30.0, 0.0]])
    cfg = Config(
        maximum=np.full(3, 0.9), target=np.full(3, 0.85), acceptable=np.full(3, 0.75),
        latency_ms=lat, max_move_share=1.0,
    )  # fmt: skip
    plan = decide(obs, _empty_state(), cfg, 1_000.0)
    forwards = plan.of("forward")
    assert forwards
    assert {a.site for a in forwards} == {0}  # CHC, at 120 %
    assert sum(a.cpu for a in forwards) == pytest.approx(1_200.0 - 1_000.0 * 0.85)


def _empty_state() -> State:
    return State.empty(len(SITES), len(PLANS))


def test_garbage_and_missing_sites_are_left_out_with_a_reason(stack: Stack) -> None:
    stack.capacity.labels("AKL").set(float("nan"))
    try:
        wait_for(
            "NaN scraped",
            lambda: any(math.isnan(x.value) for x in query(stack.url, "anyedge_site_capacity_ms")),
        )
        tel = PromTelemetry(stack.url, [*SITES, "LHR"], PLANS)
        obs = tel.observe(time.time())
    finally:
        stack.capacity.labels("AKL").set(2_000.0)
    assert tel.up
    assert math.isinf(obs.age[1])  # AKL: garbage
    assert math.isinf(obs.age[3])  # LHR: nothing in Prometheus
    assert np.all(obs.age[[0, 2]] < 30.0)
    assert any(p.startswith("AKL: capacity is nan") for p in tel.problems), tel.problems
    assert "LHR: no series in Prometheus" in tel.problems


def test_a_bad_query_or_not_prometheus_fails_static(stack: Stack) -> None:
    for url, queries, says in [
        (stack.url, Queries(cpu="sum by (site, plan) (("), "parse error"),
        (stack.exporter, Queries(), stack.exporter),  # answers, but not Prometheus's API
        (f"http://127.0.0.1:{free_port()}", Queries(), "Connection refused"),
    ]:
        tel = PromTelemetry(url, SITES, PLANS, queries)
        obs = tel.observe(time.time())
        assert not tel.up
        assert np.all(np.isinf(obs.age))
        assert len(tel.problems) == 1
        assert says in tel.problems[0], tel.problems
        cfg = Config(
            maximum=np.full(3, 0.9), target=np.full(3, 0.85), acceptable=np.full(3, 0.75),
            latency_ms=np.zeros((3, 3)),
        )  # fmt: skip
        plan = decide(obs, _empty_state(), cfg, 1_000.0)
        assert [a.reason.code for a in plan.actions] == ["no_fresh_telemetry"]


def test_a_range_query_result_is_refused_not_misread(stack: Stack) -> None:
    with pytest.raises(PromError, match="not an instant vector"):
        query(stack.url, "anyedge_site_capacity_ms[1m]")
    assert (
        json.loads(urllib.request.urlopen(f"{stack.url}/api/v1/query?query=1").read())["data"][
            "resultType"
        ]
        == "scalar"
    )
    with pytest.raises(PromError, match="a scalar, not an instant vector"):
        query(stack.url, "1")
