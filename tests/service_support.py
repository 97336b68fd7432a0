"""What the tests of ``anyedge control run`` share: the sites' exporter (prometheus-client
in the test's process), a real Prometheus (Debian's) scraping it that can be stopped and
started again on the same port and data, and the controller as a user runs it — a
subprocess whose log is read line by line."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

PLANS = ["free", "pro", "business", "enterprise"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


def p95_at(utilisation: float) -> float:
    """The sites' p95 latency (ms) at a utilisation: 5 + 40 u², 20 ms at u = √(3/8)."""
    return 5.0 + 40.0 * utilisation**2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, headers: dict[str, str] | None = None) -> bytes:
    """The body at ``url``; an HTTP error status raises ``HTTPStatus`` (an OSError) with
    the response closed (a starting Prometheus answers 503, and an unclosed error
    response leaves its socket to the garbage collector)."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return bytes(r.read())
    except urllib.error.HTTPError as e:
        with e:
            raise HTTPStatus(url, e.code, e.read()) from None


class HTTPStatus(OSError):
    def __init__(self, url: str, code: int, body: bytes) -> None:
        super().__init__(f"{url}: HTTP {code}")
        self.code, self.body = code, body


def get_json(url: str) -> Any:
    return json.loads(get(url))


def post_json(url: str, body: object, token: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def wait_for(what: str, ok: Callable[[], object], timeout: float = 60.0) -> Any:
    end = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < end:
        try:
            v = ok()
            if v:
                return v
        except (OSError, ValueError, KeyError) as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:g} s (last error: {last})")


@contextlib.contextmanager
def world(directory: Path, capacity: dict[str, float]) -> Iterator[tuple[Sites, Prometheus]]:
    """The sites' exporter and a Prometheus that has scraped every site."""
    from anyedge.adapters.prometheus import query

    sites = Sites(capacity)
    try:
        prom = Prometheus(directory, [f"127.0.0.1:{sites.port}"])
        try:
            q = "sum by (site) (anyedge_site_capacity_ms)"
            wait_for("every site scraped", lambda: len(query(prom.url, q)) == len(capacity))
            yield sites, prom
        finally:
            prom.stop()
    finally:
        sites.close()


class Sites:
    """The sites' exporter: CPU ms/s per plan and capacity per site, set by the test."""

    def __init__(self, capacity: dict[str, float]) -> None:
        self.registry = CollectorRegistry()
        self.cpu = Gauge(
            "anyedge_site_cpu_ms", "CPU ms/s", ["site", "plan"], registry=self.registry
        )
        self.cap = Gauge("anyedge_site_capacity_ms", "CPU ms/s", ["site"], registry=self.registry)
        self.p95 = Gauge("anyedge_site_p95_ms", "p95 latency, ms", ["site"], registry=self.registry)
        self.capacity = capacity
        for s, c in capacity.items():
            self.cap.labels(s).set(c)
            self.load(s, 0.3)
        self.port = free_port()
        self.server, self.thread = start_http_server(
            self.port, addr="127.0.0.1", registry=self.registry
        )

    def load(self, site: str, utilisation: float) -> None:
        """Set the site's CPU time to ``utilisation`` of its capacity, spread over plans,
        and its p95 latency on the curve :func:`p95_at` (20 ms at about 61 %)."""
        total = utilisation * self.capacity[site]
        for p, share in zip(PLANS, (0.4, 0.3, 0.2, 0.1), strict=True):
            self.cpu.labels(site, p).set(share * total)
        self.p95.labels(site).set(p95_at(utilisation))

    def calm(self, prometheus_url: str, utilisation: float = 0.3) -> None:
        """Every site at ``utilisation``, and wait until Prometheus has scraped it: a
        controller started next must not read an earlier test's overload from a scrape
        that predates the change."""
        from anyedge.adapters.prometheus import query

        for s in self.capacity:
            self.load(s, utilisation)
        want = {s: utilisation * c for s, c in self.capacity.items()}

        def scraped() -> bool:
            samples = query(prometheus_url, "sum by (site) (anyedge_site_cpu_ms)")
            got = {x.labels.get("site"): x.value for x in samples}
            return all(abs(got.get(s, -1.0) - w) < 1e-6 * max(w, 1.0) for s, w in want.items())

        wait_for("Prometheus scraped the calm sites", scraped)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Prometheus:
    """Debian's prometheus scraping ``targets`` every second (or as ``config`` says);
    :meth:`stop` and :meth:`start` keep its port and its data."""

    def __init__(self, directory: Path, targets: list[str], config: str | None = None) -> None:
        exe = shutil.which("prometheus")
        if exe is None:
            pytest.skip("Debian's prometheus is not installed (apt-get install prometheus)")
        self.exe, self.dir = exe, directory
        directory.mkdir(parents=True, exist_ok=True)
        t = ", ".join(f"'{x}'" for x in targets)
        (directory / "prometheus.yml").write_text(
            config  # a whole prometheus.yml (e.g. anyedge lab prometheus-config's)
            or "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs:\n  - {{job_name: sites, static_configs: [{{targets: [{t}]}}]}}\n"
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        log = (self.dir / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(
            [self.exe, f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        wait_for("prometheus ready", lambda: get(f"{self.url}/-/ready").startswith(b"Prometheus"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def controller_yaml(
    directory: Path,
    prometheus: str,
    sites: dict[str, float],
    *,
    http_port: int,
    delay: float = 0.0,
    min_interval: float = 0.0,
    token_file: str | None = "token",
    extra_sites: tuple[str, ...] = (),
    prefix: str | None = None,
    atlas: str | None = None,
    actuator: str | None = None,
    cannot_forward: tuple[str, ...] = (),
    learn: str | None = None,
) -> Path:
    """A controller.yaml for these sites, all 10 ms apart, deciding every second."""
    names = [*sites, *extra_sites]
    p95 = ", queries: {p95: 'max by (site) (anyedge_site_p95_ms)'}" if learn else ""
    lines = [
        f"prometheus: {{url: '{prometheus}', timeout: 2{p95}}}",
        "interval: 1",
        "journal: journal.sqlite",
        f"guardrails: {{stale_after: 5, max_move_share: 1.0, min_interval: {min_interval}}}",
        "sites:",
        *(
            f"  - {{name: {s}, maximum: 0.9, target: 0.8, acceptable: 0.6"
            + (", can_forward: false" if s in cannot_forward else "")
            + (f", prefixes: ['{prefix}']}}" if prefix else "}")
            for s in names
        ),
        "latency_ms:",
        *(f"  {a}: {{{_row(names, i)}}}" for i, a in enumerate(names[:-1])),
        actuator or f"actuator: {{kind: dry-run, log: enforced.jsonl, delay: {delay}}}",
        f"http: {{address: 127.0.0.1, port: {http_port}"
        + (f", token_file: {token_file}}}" if token_file else "}"),
    ]
    if atlas is not None:
        lines.append(f"atlas: {atlas}")
    if learn is not None:
        lines.append(f"learn: {learn}")
    (directory / "token").write_text("s3cret-token-for-the-test\n")
    path = directory / "controller.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _row(names: list[str], i: int) -> str:
    return ", ".join(f"{b}: {10 * (i + j + 1)}" for j, b in enumerate(names) if j > i)


TOKEN = "s3cret-token-for-the-test"


class Run:
    """``anyedge control run -c CONFIG`` as a subprocess; its stderr is collected."""

    def __init__(self, config: Path, http_port: int) -> None:
        env = {**os.environ, "PYTHONPATH": SRC}
        env.pop("ANYEDGE_TOKEN", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "anyedge", "control", "run", "-c", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self.lines: list[str] = []
        self._out: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        self._o = threading.Thread(target=self._read_out, daemon=True)
        self._o.start()
        self.url = f"http://127.0.0.1:{http_port}"
        wait_for("the API listening", lambda: get(f"{self.url}/api/state"))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._out.append(line)

    def log(self) -> str:
        return "\n".join(self.lines)

    def state(self) -> Any:
        return get_json(f"{self.url}/api/state")

    def metric(self, name: str) -> float | None:
        for line in get(f"{self.url}/metrics").decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._t.join(5)
        self._o.join(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
        return rc


def enforced(directory: Path) -> list[dict[str, Any]]:
    path = directory / "enforced.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium(tmp_path: Path, url: str) -> tuple[str, str]:
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(exe):
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    args = [exe, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
            "--v=0", "--virtual-time-budget=5000", "--dump-dom", url]  # fmt: skip
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish: {url}")
    assert proc.returncode == 0, err[-2000:]
    assert "Uncaught" not in err, err[-2000:]
    return out, err


class Page(HTMLParser):
    """Tags with their attributes, and the text inside each element with an id."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: dict[str, str] = {}
        self._open: list[str | None] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag not in ("br", "input", "meta", "line", "rect", "option"):
            self._open.append(a.get("id"))
            if a.get("id"):
                self.text[a["id"]] = ""

    def handle_endtag(self, tag: str) -> None:
        if self._open and tag not in ("br", "input", "meta", "line", "rect", "option"):
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for i in self._open:
            if i:
                self.text[i] += data
