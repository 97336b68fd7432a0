"""Delay lines: the pure line's rules, then real frames between two namespaces through
``python -m anyedge.lab.delayline`` (TAP devices, as the lab uses them).

The real tests bound round trips from below only — a frame can never arrive before its
delay, whatever the machine is doing; how close above it lands is a measurement
(bench/bench_delayline.py), not a test.
"""

from __future__ import annotations

import json
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from anyedge.adapters import netns
from anyedge.lab.delayline import End, Line, LinkSpec, Shape

SRC = str(Path(__file__).resolve().parent.parent / "src")
A_IP, B_IP = "192.0.2.1", "192.0.2.2"


# ------------------------------------------------------------------ the pure line


def test_a_frame_leaves_exactly_when_due() -> None:
    line = Line(Shape(delay_ms=2.0))
    assert line.accept(10.0, b"one")
    assert line.release(10.0019) == []
    assert line.next_due() == pytest.approx(10.002)
    assert line.release(10.002) == [b"one"]
    assert (line.passed, line.lost) == (1, 0)


def test_jitter_never_sends_early_nor_reorders() -> None:
    line = Line(Shape(delay_ms=1.0, jitter_ms=5.0), random.Random(7))
    sent = [(i * 0.0001, i.to_bytes(2, "big")) for i in range(2_000)]
    dues = []
    for now, frame in sent:
        line.accept(now, frame)
        dues.append(line.queue[-1][0])
    assert all(d >= now for d, (now, _) in zip(dues, sent, strict=True))
    assert dues == sorted(dues)
    out = line.release(1e9)
    assert out == [f for _, f in sent]
    # the jitter is there: the one-way times spread over milliseconds
    spread = [d - now for d, (now, _) in zip(dues, sent, strict=True)]
    assert max(spread) - min(spread) > 0.005


def test_loss_drops_about_its_share_and_nothing_else() -> None:
    line = Line(Shape(loss=0.3), random.Random(1))
    kept = sum(line.accept(0.0, b"x") for _ in range(10_000))
    # 3 standard deviations of a binomial(10,000, 0.3): 137
    assert abs(line.lost - 3_000) < 140
    assert kept + line.lost == 10_000
    assert len(line.release(0.0)) == kept


def test_a_full_queue_drops_and_counts() -> None:
    line = Line(Shape(delay_ms=100.0), limit=3)
    assert [line.accept(0.0, b"x") for _ in range(5)] == [True, True, True, False, False]
    assert line.overflowed == 2


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"delay_ms": -1.0}, "delay_ms"),
        ({"jitter_ms": float("nan")}, "jitter_ms"),
        ({"loss": 1.5}, "loss"),
    ],
)
def test_a_bad_shape_is_refused(kwargs: dict[str, float], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Shape(**kwargs)


# ------------------------------------------------------------- real frames, real devices


@dataclass
class Wire:
    a: str
    b: str
    proc: subprocess.Popen[str]


def _wire(tmp_path: Path, shape: Shape) -> Iterator[Wire]:
    tag = secrets.token_hex(3)
    a, b = f"aedl-{tag}-a", f"aedl-{tag}-b"
    made: list[str] = []
    proc = None
    try:
        for ns in (a, b):
            netns.add(ns)
            made.append(ns)
        spec = tmp_path / "links.json"
        spec.write_text(json.dumps([LinkSpec(End(a, "eth1"), End(b, "eth1"), shape).to_dict()]))
        ready = tmp_path / "ready.json"
        argv = [sys.executable, "-m", "anyedge.lab.delayline", str(spec), "--seed", "1"]
        proc = subprocess.Popen(
            [*argv, "--ready", str(ready)],
            env={"PYTHONPATH": SRC, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        end = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < end, "the delay line did not come up in 30 s"
            time.sleep(0.05)
        netns.batch(a, [f"addr add {A_IP}/24 dev eth1"])
        netns.batch(b, [f"addr add {B_IP}/24 dev eth1"])
        yield Wire(a, b, proc)
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
            proc.communicate(timeout=10)  # and closes its pipes
        for ns in made:
            netns.remove(ns)


@pytest.fixture
def wire(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Wire]:
    yield from _wire(tmp_path, request.param)


def _udp_round_trips(w: Wire, count: int, size: int = 100) -> list[float | None]:
    """``count`` UDP echoes from a to b: each round trip in ms, None if lost."""
    with netns.entered(w.b):
        echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        echo.bind((B_IP, 7))
    with netns.entered(w.a):
        cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.settimeout(0.5)
    cli.settimeout(0.5)
    out: list[float | None] = []
    try:
        for i in range(count):
            payload = i.to_bytes(4, "big") * (size // 4)
            t0 = time.perf_counter()
            cli.sendto(payload, (B_IP, 7))
            try:
                data, peer = echo.recvfrom(4096)
                echo.sendto(data, peer)
                while cli.recv(4096) != payload:  # a late echo of an earlier one
                    pass
                out.append((time.perf_counter() - t0) * 1e3)
            except TimeoutError:
                out.append(None)
    finally:
        echo.close()
        cli.close()
    return out


@pytest.mark.lab
@pytest.mark.parametrize("wire", [Shape(delay_ms=3.0)], indirect=True)
def test_every_round_trip_takes_at_least_twice_the_delay(wire: Wire) -> None:
    rtts = _udp_round_trips(wire, 40)
    assert None not in rtts
    assert min(r for r in rtts if r is not None) >= 6.0


@pytest.mark.lab
@pytest.mark.parametrize("wire", [Shape(loss=1.0)], indirect=True)
def test_a_link_that_loses_everything_carries_nothing(wire: Wire) -> None:
    assert _udp_round_trips(wire, 5) == [None] * 5


@pytest.mark.lab
@pytest.mark.parametrize("wire", [Shape(delay_ms=1.0)], indirect=True)
def test_tcp_carries_a_megabyte_whole_and_the_wire_dies_with_its_process(
    wire: Wire,
) -> None:
    data = random.Random(3).randbytes(1 << 20)
    with netns.entered(wire.b):
        srv = socket.create_server((B_IP, 9000))
    srv.settimeout(20)
    with netns.entered(wire.a):
        cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    cli.settimeout(20)
    got = bytearray()

    def read() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(20)
            while chunk := conn.recv(65536):
                got.extend(chunk)

    reader = threading.Thread(target=read)
    try:
        reader.start()
        cli.connect((B_IP, 9000))
        cli.sendall(data)
        cli.shutdown(socket.SHUT_WR)
        reader.join(30)
    finally:
        cli.close()
        srv.close()
    assert bytes(got) == data  # whole frames with their checksums: no offload left undone
    wire.proc.kill()
    wire.proc.wait(10)
    # the process held the devices: they went with it, like a cut wire
    end = time.monotonic() + 5
    while "eth1" in netns.run(wire.a, ["ip", "-o", "link"]) and time.monotonic() < end:
        time.sleep(0.05)
    assert "eth1" not in netns.run(wire.a, ["ip", "-o", "link"])


@pytest.mark.lab
@pytest.mark.parametrize("wire", [Shape()], indirect=True)
def test_sighup_gives_a_running_link_its_new_shape(wire: Wire, tmp_path: Path) -> None:
    spec = tmp_path / "links.json"
    assert None not in _udp_round_trips(wire, 3)

    def reshape(shape: Shape) -> None:
        d = json.loads(spec.read_text())
        d[0].update(delay_ms=shape.delay_ms, jitter_ms=shape.jitter_ms, loss=shape.loss)
        spec.write_text(json.dumps(d))
        wire.proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)  # the handler runs between two frames

    reshape(Shape(loss=1.0))
    assert _udp_round_trips(wire, 3) == [None] * 3  # cut while it runs
    reshape(Shape(delay_ms=4.0))
    rtts = _udp_round_trips(wire, 5)
    assert None not in rtts
    assert min(r for r in rtts if r is not None) >= 8.0  # and back, slower
