"""The lab's site service and client probes, for real on loopback (no namespaces, no root).

The service runs as a subprocess (``python -m anyedge.lab.service``), as in the lab;
the probes are called in-process, and through their command line where the command line
itself is under test.  Every service started here is ended by its process id.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from anyedge.lab import probe
from anyedge.lab.probe import probe_flows, probe_load, probe_watch, summarize_timeline
from anyedge.lab.service import read_stats

CODE = "TST"
LOCAL = "127.0.0.1"


def free_port(avoid: Sequence[int] = ()) -> int:
    """A port free for both TCP and UDP on loopback right now."""
    for _ in range(100):
        with (
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u,
        ):
            t.bind((LOCAL, 0))
            port = int(t.getsockname()[1])
            if port in avoid:
                continue
            try:
                u.bind((LOCAL, port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port on loopback")


@dataclass
class Service:
    proc: subprocess.Popen[str]
    stats: Path
    ports: list[int]

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        """End the process (by its pid); its exit status, stdout and stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return self.proc.returncode, out, err


def service_argv(
    stats: Path, ports: Sequence[int], addresses: Sequence[str] = (LOCAL,)
) -> list[str]:
    argv = [sys.executable, "-m", "anyedge.lab.service", "--site", CODE]
    for a in addresses:
        argv += ["--address", a]
    return [*argv, "--ports", ",".join(map(str, ports)), "--stats", str(stats)]


def start(stats: Path, nports: int = 1, addresses: Sequence[str] = (LOCAL,)) -> Service:
    """Start the service on ``nports`` free ports and wait for its ``ready`` line.

    A port found free may be taken before the service binds it (by a test run alongside):
    then the service exits with status 2 and is started again on other ports.
    """
    for _ in range(3):
        ports: list[int] = []
        for _ in range(nports):
            ports.append(free_port(avoid=ports))
        proc = subprocess.Popen(
            service_argv(stats, ports, addresses),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        svc = Service(proc, stats, ports)
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            line = proc.stdout.readline() if sel.select(10.0) else ""  # EOF if it exited
        if line == "ready\n":
            return svc
        rc, out, err = svc.stop()
        if not (rc == 2 and "Address already in use" in err):
            break
    raise AssertionError(f"service not ready (exit {rc}): {line!r} {out!r} {err!r}")


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory for Unix sockets (their paths may not exceed 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="ae-lab-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def service(sockdir: Path) -> Iterator[Service]:
    """A service answering ``TST`` on two ports of 127.0.0.1."""
    svc = start(sockdir / "stats.sock", nports=2)
    try:
        yield svc
    finally:
        rc, _, err = svc.stop()
        assert rc == 0, err
        assert err == "", err  # no traceback, no logged exception in a callback


def probe_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "anyedge.lab.probe", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


# -- the service's replies ------------------------------------------------------------------


def test_udp_reply_is_the_code_and_echoes_tagged_requests(service: Service) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.connect((LOCAL, service.ports[0]))
        for request, reply in [
            (b"seq 17", b"TST seq 17"),
            (b"hello", b"TST"),
            (b"", b"TST"),
            (b"sequence", b"TST"),
        ]:
            s.send(request)
            assert s.recv(100) == reply


def test_tcp_reply_is_one_line_then_close(service: Service) -> None:
    with socket.create_connection((LOCAL, service.ports[1]), timeout=2) as s:
        s.sendall(b"seq 3\n")
        assert s.makefile("rb").read() == b"TST seq 3\n"  # read to EOF: the service closed
    with socket.create_connection((LOCAL, service.ports[1]), timeout=2) as s:
        s.shutdown(socket.SHUT_WR)  # no line at all, just EOF
        assert s.makefile("rb").read() == b"TST\n"


def test_answers_on_each_given_address_only(sockdir: Path) -> None:
    svc = start(sockdir / "s.sock", addresses=[LOCAL, "127.0.0.2"])
    port = svc.ports[0]
    try:
        for address in (LOCAL, "127.0.0.2"):
            got = probe_flows(address, port, 20, timeout=1.0)
            assert got["answers"] == {CODE: 20}, address
        # Bound to its addresses, not to the wildcard: another loopback address is silent.
        got = probe_flows("127.0.0.3", port, 5, timeout=0.2, retries=0)
        assert got["answers"] == {}
        assert got["lost"] == 5
    finally:
        assert svc.stop()[0] == 0


# -- flows ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_flows_all_answered_from_distinct_source_ports(service: Service, tcp: bool) -> None:
    got = probe_flows(LOCAL, service.ports[0], 200, timeout=1.0, tcp=tcp, per_flow=True)
    assert got["answers"] == {CODE: 200}
    assert got["lost"] == 0
    assert got["flows"] == 200
    assert [code for code, _ in got["per_flow"]] == [CODE] * 200
    sports = [sport for _, sport in got["per_flow"]]
    assert len(set(sports)) == 200
    assert all(1024 <= p <= 65535 and p not in service.ports for p in sports)
    assert got["elapsed"] < 30  # a deadline, not a speed test


def test_source_ports_stay_distinct_when_sockets_are_reused(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With few sockets open at a time the kernel hands closed ports out again; each flow
    must still get a port of its own."""
    monkeypatch.setattr(probe, "WINDOW", 2)  # TCP: two connections at a time
    got = probe_flows(LOCAL, service.ports[0], 300, tcp=True, per_flow=True)
    assert got["answers"] == {CODE: 300}
    assert len({sport for _, sport in got["per_flow"]}) == 300
    monkeypatch.setattr(probe, "_fd_budget", lambda: 1)  # UDP: batches of 64 sockets
    got = probe_flows(LOCAL, service.ports[0], 300, per_flow=True)
    assert got["answers"] == {CODE: 300}
    assert len({sport for _, sport in got["per_flow"]}) == 300


def test_probes_sharing_a_process_share_its_file_descriptors(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probes run in threads of one process (the lab's, one per client) each take their
    share of the descriptors left: at most that many sockets open at once."""
    opened: list[int] = []
    real = probe._bind_distinct

    def counting(*args: Any) -> Any:
        opened.append(len(os.listdir("/proc/self/fd")))
        return real(*args)

    monkeypatch.setattr(probe, "_bind_distinct", counting)
    monkeypatch.setattr(probe, "_fd_budget", lambda: 1000)
    base = len(os.listdir("/proc/self/fd"))
    got = probe_flows(LOCAL, service.ports[0], 300, per_flow=True, share=10)  # batches of 100
    assert got["answers"] == {CODE: 300}
    assert len({sport for _, sport in got["per_flow"]}) == 300
    assert max(opened) - base <= 100 + 2  # a batch, and the selector's own
    opened.clear()
    got = probe_flows(LOCAL, service.ports[0], 60, tcp=True, per_flow=True, share=200)  # 5
    assert got["answers"] == {CODE: 60}
    assert max(opened) - base <= 5 + 2


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_flows_to_a_silent_port_are_lost(tcp: bool) -> None:
    # a port held by this test, so that no other test's service takes it meanwhile:
    # nothing reads the UDP socket, and the TCP one does not listen (refused)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM) as held:
        held.bind((LOCAL, 0))
        got = probe_flows(LOCAL, held.getsockname()[1], 30, timeout=0.2, tcp=tcp, retries=1)
    assert got == {"answers": {}, "lost": 30, "flows": 30, "elapsed": got["elapsed"]}


def test_flows_command_line_prints_one_json_object(service: Service) -> None:
    port = str(service.ports[1])
    r = probe_cli("flows", "--address", LOCAL, "--port", port, "--flows", "50", "--per-flow")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["answers"] == {CODE: 50}
    assert got["lost"] == 0
    assert len(got["per_flow"]) == 50
    assert len({sport for _, sport in got["per_flow"]}) == 50
    r = probe_cli("flows", "--address", LOCAL, "--port", port, "--flows", "40", "--tcp")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["answers"] == {CODE: 40}
    assert "per_flow" not in got


# -- stats ----------------------------------------------------------------------------------


def test_stats_count_requests_and_bytes_per_port(service: Service) -> None:
    a, b = service.ports
    before = read_stats(service.stats)
    assert before["requests"] == {str(a): 0, str(b): 0}
    assert probe_flows(LOCAL, a, 50, retries=0)["lost"] == 0  # 50 datagrams of b"probe"
    assert probe_flows(LOCAL, b, 30, tcp=True)["lost"] == 0  # 30 lines b"probe\n"
    assert probe_load(LOCAL, b, rate=200, duration=0.1)["lost"] == 0  # 20 datagrams b"load"
    st = read_stats(service.stats)
    assert st["site"] == CODE
    assert st["pid"] == service.proc.pid
    assert abs(st["time"] - time.time()) < 5
    assert st["time"] >= before["time"]
    assert st["requests"] == {str(a): 50, str(b): 50}
    assert st["bytes_in"] == {str(a): 50 * 5, str(b): 30 * 6 + 20 * 4}
    assert st["bytes_out"] == {str(a): 50 * 3, str(b): 30 * 4 + 20 * 3}


def test_stale_stats_socket_is_replaced_and_a_live_one_refused(sockdir: Path) -> None:
    path = sockdir / "stats.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # closed without unlinking: a stale socket file is left
    assert path.is_socket()
    svc = start(path)
    try:
        assert read_stats(path)["pid"] == svc.proc.pid
        # A second service on the same stats socket must not take it from the first.
        r = subprocess.run(
            service_argv(path, [free_port(avoid=svc.ports)]),
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert r.returncode == 2
        assert "in use" in r.stderr
        assert read_stats(path)["pid"] == svc.proc.pid
    finally:
        assert svc.stop()[0] == 0
    assert not path.exists()


# -- watch and load -------------------------------------------------------------------------


def test_watch_gives_a_timeline_of_answers(service: Service) -> None:
    wall = time.time()
    got = probe_watch(LOCAL, service.ports[0], duration=0.3, interval=0.01)
    assert abs(got["start"] - wall) < 1
    timeline = got["timeline"]
    assert len(timeline) == 30
    assert [who for _, who in timeline] == [CODE] * 30
    times = [t for t, _ in timeline]
    assert times == sorted(times)
    assert times[0] < 1.0
    assert 0.25 <= times[-1] < 10  # paced by the clock, not sent in a burst
    assert got["sent"] == 30
    assert got["answered"] == 30
    assert got["lost"] == 0
    assert got["answers"] == {CODE: 30}
    assert got["changes"] == []
    assert got["outages"] == []
    assert read_stats(service.stats)["requests"][str(service.ports[0])] == 30


def test_watch_summary_finds_changes_and_outages() -> None:
    timeline: list[list[object]] = [
        [0.0, "CHC"],
        [0.01, "CHC"],
        [0.02, None],
        [0.03, None],
        [0.04, "AKL"],
        [0.05, None],
        [0.06, "AKL"],
        [0.07, "CHC"],
    ]
    got = summarize_timeline(timeline)
    assert got["sent"] == 8
    assert got["answered"] == 5
    assert got["lost"] == 3
    assert got["answers"] == {"AKL": 2, "CHC": 3}
    assert list(got["answers"]) == ["CHC", "AKL"]  # most answers first
    assert got["changes"] == [
        {"from": "CHC", "to": "AKL", "last_old": 0.01, "first_new": 0.04, "gap": 0.03, "lost": 2},
        {"from": "AKL", "to": "CHC", "last_old": 0.06, "first_new": 0.07, "gap": 0.01, "lost": 0},
    ]
    assert got["outages"] == [
        {"start": 0.02, "end": 0.03, "lost": 2},
        {"start": 0.05, "end": 0.05, "lost": 1},
    ]


def test_watch_command_line(service: Service) -> None:
    r = probe_cli("watch", "--address", LOCAL, "--port", str(service.ports[1]), "--duration", "0.1")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["answers"] == {CODE: 10}
    assert len(got["timeline"]) == 10


def test_load_sends_rate_times_duration(service: Service) -> None:
    port = service.ports[1]
    t0, cpu0 = time.monotonic(), time.process_time()
    got = probe_load(LOCAL, port, rate=200, duration=1.0, flows=8)
    took, cpu = time.monotonic() - t0, time.process_time() - cpu0
    assert got["sent"] == 200
    assert got["answers"] == {CODE: 200}
    assert got["lost"] == 0
    assert got["flows"] == 8
    assert 0.9 <= got["elapsed"] < 10  # the last datagram went out after about 1 s
    assert took < 30
    assert cpu < 0.5 * took  # paced by waiting, not by a busy loop
    assert read_stats(service.stats)["requests"][str(port)] == 200


@pytest.mark.parametrize("mode", ["watch", "load"])
def test_sigterm_ends_a_watch_or_a_load_with_what_it_sent(service: Service, mode: str) -> None:
    """A steady probe across steps of unknown length: started for 60 s, ended early."""
    argv = [sys.executable, "-m", "anyedge.lab.probe", mode, "--address", LOCAL]
    argv += ["--port", str(service.ports[0]), "--duration", "60"]
    argv += ["--interval", "0.01"] if mode == "watch" else ["--rate", "100"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if mode == "watch":
            assert p.stderr is not None
            assert p.stderr.readline().strip() == probe.WATCHING
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
    got = json.loads(out)
    assert 0 < got["sent"] < 6000  # ended long before its 60 s
    assert got["lost"] == 0
    assert got["answers"] == {CODE: got["sent"]}
    if mode == "watch":
        assert len(got["timeline"]) == got["sent"]


def test_load_to_a_silent_port_counts_losses() -> None:
    got = probe_load(LOCAL, free_port(), rate=100, duration=0.2, flows=4, timeout=0.2)
    assert got["sent"] == 20
    assert got["answers"] == {}
    assert got["lost"] == 20


# -- bad arguments, signals -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ports", "70000"], "port out of range"),
        (["--ports", "7001,7001"], "port given twice"),
        (["--ports", "7001,x"], "not a port number"),
        (["--ports", "7001", "--address", "not-an-ip"], "not an IP address"),
    ],
)
def test_service_rejects_bad_arguments(sockdir: Path, args: list[str], message: str) -> None:
    argv = [sys.executable, "-m", "anyedge.lab.service", "--site", CODE, "--address", LOCAL]
    argv += ["--stats", str(sockdir / "s.sock"), *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert message in r.stderr
    assert r.stdout == ""
    assert not (sockdir / "s.sock").exists()


def test_service_reports_a_port_in_use(sockdir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind((LOCAL, 0))
        busy.listen()
        port = int(busy.getsockname()[1])
        r = subprocess.run(
            service_argv(sockdir / "s.sock", [port]), capture_output=True, text=True, timeout=10
        )
    assert r.returncode == 2
    assert f"cannot listen on TCP {LOCAL} port {port}" in r.stderr
    assert "Traceback" not in r.stderr
    assert "ready" not in r.stdout
    assert not (sockdir / "s.sock").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["load", "--port", "9", "--rate", "20001", "--duration", "1"], "rate must be more than"),
        (["load", "--port", "9", "--rate", "0", "--duration", "1"], "rate must be more than 0"),
        (["load", "--port", "9", "--rate", "10", "--duration", "601"], "at most 600: 601"),
        (["watch", "--port", "9", "--duration", "1", "--interval", "0"], "at least 0.001"),
        (["watch", "--port", "9", "--duration", "0.1", "--interval", "0.5"], "interval must be"),
        (["flows", "--port", "9", "--flows", "0"], "flows must be at least 1"),
        (["flows", "--port", "0", "--flows", "5"], "port must be at least 1"),
        (["flows", "--port", "9"], "the following arguments are required: --flows"),
    ],
)
def test_probe_rejects_bad_arguments(args: list[str], message: str) -> None:
    r = probe_cli(args[0], "--address", LOCAL, *args[1:])
    assert r.returncode == 2
    assert message in r.stderr
    assert r.stdout == ""


def test_probe_rejects_a_name_for_an_address_and_an_unknown_mode() -> None:
    r = probe_cli("flows", "--address", "localhost", "--port", "9", "--flows", "1")
    assert r.returncode == 2
    assert "not an IP address" in r.stderr
    r = probe_cli("jump", "--address", LOCAL)
    assert r.returncode == 2
    assert "invalid choice" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_ends_the_service_and_removes_its_socket(sockdir: Path, sig: int) -> None:
    svc = start(sockdir / "stats.sock")
    port = svc.ports[0]
    assert svc.stats.is_socket()
    pid = svc.proc.pid
    rc, out, err = svc.stop(sig)
    assert rc == 0, err
    assert out == ""  # "ready" was read already; nothing after it
    assert err == ""
    assert not svc.stats.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped: gone
    # Its ports are free again.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((LOCAL, port))
