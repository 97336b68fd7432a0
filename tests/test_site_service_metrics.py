"""A lab service's counters over HTTP, scraped by a real Prometheus (marker ``lab``):
the service runs in a namespace of its own and listens for ``/metrics`` in the test's
namespace, registering itself in a file_sd target file that Prometheus watches."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from anyedge.adapters import netns
from anyedge.adapters.prometheus import query
from anyedge.lab.build import wait_ready
from service_support import SRC, Prometheus, free_port, get, wait_for

pytestmark = pytest.mark.lab

ADDRESS = "192.0.2.1"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, Path, list[int], int]]:
    ns = f"aesvm-{secrets.token_hex(3)}"
    netns.add(ns)
    pid = None
    try:
        netns.batch(ns, ["link set lo up", f"addr add {ADDRESS}/32 dev lo"])
        ports = [free_port(), free_port()]
        sd = tmp_path / "metrics-CHC.json"
        argv = [sys.executable, "-m", "anyedge.lab.service", "--site", "CHC/s0",
                "--address", ADDRESS, "--ports", ",".join(map(str, ports)),
                "--metrics", "127.0.0.1:0",
                "--metrics-netns", f"/proc/{os.getpid()}/ns/net", "--metrics-sd", str(sd),
                "--plans", "free,pro", "--cpu-ms", "1,4", "--capacity", "500"]  # fmt: skip
        log = tmp_path / "service.log"
        pid = netns.spawn(ns, argv, log, {**os.environ, "PYTHONPATH": SRC})
        wait_ready(pid, log, "the service", 10)
        yield ns, sd, ports, pid
    finally:
        if pid is not None:
            netns.stop([pid])
        netns.remove(ns)


def _udp(ns: str, port: int, n: int) -> None:
    with netns.entered(ns), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for _ in range(n):
            s.sendto(b"hello", (ADDRESS, port))
            assert s.recv(100) == b"CHC/s0"


def test_prometheus_scrapes_the_service_directly(
    service: tuple[str, Path, list[int], int], tmp_path: Path
) -> None:
    ns, sd, ports, _ = service
    target = json.loads(sd.read_text())[0]["targets"][0]
    _udp(ns, ports[0], 3)
    _udp(ns, ports[1], 2)
    text = get(f"http://{target}/metrics").decode()  # from this namespace, over TCP
    got = {
        (x.name, tuple(sorted(x.labels.items()))): x.value
        for fam in text_string_to_metric_families(text)
        for x in fam.samples
    }
    free = (("plan", "free"), ("server", "s0"), ("site", "CHC"))
    pro = (("plan", "pro"), ("server", "s0"), ("site", "CHC"))
    assert got[("anyedge_lab_requests_total", free)] == 3
    assert got[("anyedge_lab_requests_total", pro)] == 2
    assert got[("anyedge_lab_cpu_ms_total", pro)] == 8  # 2 requests at 4 ms
    assert got[("anyedge_lab_sent_bytes_total", free)] == 3 * len(b"CHC/s0")
    assert got[("anyedge_site_capacity_ms", (("server", "s0"), ("site", "CHC")))] == 500
    config = (
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - {{job_name: lab, file_sd_configs: [{{files: ['{sd}']}}]}}\n"
    )
    prom = Prometheus(tmp_path / "prom", [], config)
    try:
        q = "sum by (site, plan) (anyedge_lab_cpu_ms_total)"
        got = wait_for("Prometheus scraped it", lambda: query(prom.url, q))
        assert {(x.labels["site"], x.labels["plan"]): x.value for x in got} == {
            ("CHC", "free"): 3.0, ("CHC", "pro"): 8.0,
        }  # fmt: skip
    finally:
        prom.stop()
    # a bad request is answered with 404, and the service goes on
    with pytest.raises(OSError, match="404"):
        get(f"http://{target}/other")
    assert "anyedge_lab_requests_total" in get(f"http://{target}/metrics").decode()


def test_the_target_file_goes_when_the_service_stops(
    service: tuple[str, Path, list[int], int],
) -> None:
    _, sd, _, pid = service
    assert sd.exists()
    netns.stop([pid])  # SIGTERM
    wait_for("the target file is removed", lambda: not sd.exists(), 10)


def test_metrics_options_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "anyedge.lab.service", "--site", "CHC", "--address",
            "127.0.0.1", "--ports", "7001,7002", "--stats", str(tmp_path / "s.sock")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": SRC}
    for extra, says in [
        (["--plans", "free"], "--plans: one per port (2), got 1"),
        (["--cpu-ms", "1,x"], "argument --cpu-ms: not numbers: '1,x'"),
        (["--metrics", "nowhere"], "argument --metrics: not ADDRESS:PORT: 'nowhere'"),
    ]:
        r = subprocess.run([*base, *extra], capture_output=True, text=True, env=env, timeout=30)
        assert r.returncode == 2, r.stderr
        assert says in r.stderr, r.stderr
    assert not (tmp_path / "s.sock").exists()  # nothing started
