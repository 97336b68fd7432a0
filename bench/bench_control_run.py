"""Benchmark: one step of ``anyedge control run`` — four PromQL queries to a real
Prometheus, the decision, the journal — against the decision alone.

A prometheus-client exporter serves CPU time per plan and capacity for N sites (default
50, one of them overloaded, so that steps decide something); Debian's ``prometheus``
scrapes it every second; the service (:class:`anyedge.api.service.Service`, dry-run
actuator, journal in a temporary directory) steps on it.  Prints the median time of a
step, of the telemetry alone, and of ``decide`` alone on the same observation, and the
ratio of a step to the decision: what the service adds to the core is HTTP to
Prometheus and one SQLite transaction.

Run: ``python bench/bench_control_run.py [SITES]`` (needs ``prometheus`` on PATH).
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from anyedge.adapters.prometheus import query
from anyedge.api.config import ControllerIn
from anyedge.api.service import Service
from anyedge.control.core import decide


def _median(f: object, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(n_sites: int = 50) -> None:
    exe = shutil.which("prometheus")
    if exe is None:
        sys.exit("prometheus is not installed (apt-get install prometheus)")
    sites = [f"S{i:03d}" for i in range(n_sites)]
    plans = ["free", "pro", "business", "enterprise"]
    reg = CollectorRegistry()
    cpu = Gauge("anyedge_site_cpu_ms", "CPU ms/s", ["site", "plan"], registry=reg)
    cap = Gauge("anyedge_site_capacity_ms", "CPU ms/s", ["site"], registry=reg)
    for i, s in enumerate(sites):
        cap.labels(s).set(1_000.0)
        for p, share in zip(plans, (0.4, 0.3, 0.2, 0.1), strict=True):
            cpu.labels(s, p).set(share * (1_200.0 if i == 0 else 300.0))
    server, thread = start_http_server(0, addr="127.0.0.1", registry=reg)
    d = Path(tempfile.mkdtemp(prefix="bench-control-run-"))
    (d / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s}\nscrape_configs:\n"
        f"  - {{job_name: s, static_configs: [{{targets: ['127.0.0.1:{server.server_port}']}}]}}\n"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        web = int(sock.getsockname()[1])
    proc = subprocess.Popen(
        [exe, f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'data'}",
         f"--web.listen-address=127.0.0.1:{web}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{web}"
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=2).close()
                if len(query(url, "anyedge_site_capacity_ms")) == n_sites:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        doc = ControllerIn.model_validate(
            {
                "prometheus": {"url": url},
                "journal": str(d / "journal.sqlite"),
                "guardrails": {"min_interval": 0, "max_move_share": 1.0},
                "sites": [{"name": s} for s in sites],
                "latency_ms": {a: {b: 10.0 + j for j, b in enumerate(sites) if b != a}
                               for a in sites[:1]},
                "http": None,
            }
        )  # fmt: skip
        quiet = open(os.devnull, "w")  # noqa: SIM115
        service = Service(doc, d / "controller.yaml", log=quiet)
        try:
            now = time.time()
            obs = service.telemetry.observe(now)
            cfg = service.controller.config
            state = service.controller.state
            assert service.telemetry.up, service.telemetry.problems
            step = _median(lambda: service.step(time.time()), 30)
            tel = _median(lambda: service.telemetry.observe(time.time()), 30)
            from anyedge.control.core import State

            st = state if state is not None else State.empty(n_sites, 4)
            dec = _median(lambda: decide(obs, st, cfg, now), 200)
            seq = service.controller.seq
            print(f"{n_sites} sites: one step {1000 * step:.1f} ms (telemetry, 4 PromQL "
                  f"queries: {1000 * tel:.1f} ms); decide alone {1000 * dec:.2f} ms; "
                  f"step / decide = {step / dec:.0f}x; journal decisions {seq}")  # fmt: skip
        finally:
            service.close()
            quiet.close()
    finally:
        proc.terminate()
        proc.wait(20)
        server.shutdown()
        server.server_close()
        thread.join(5)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
