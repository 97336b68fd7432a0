"""The relay's kernel fast path with real packets: ``anyedge turn serve`` with
``fast_path:`` in a namespace between a client's and a peer's, and the project's own
TURN client (``turn_peers.TurnUdpClient``) relaying through it.

    client ns  100.64.0.2 --eth0-- 100.64.0.1 [relay ns] 100.64.1.1 --eth1-- peer ns 100.64.1.2

The XDP program is on both of the relay's interfaces.  Once the channel is bound its
ChannelData goes to the peer and the peer's datagrams come back as ChannelData, and
every one of them was relayed in the kernel: the relay's packet totals (what the core
counts, fast path included) equal the fast path's own, so the user-space relay saw none.
A peer without a permission gets nothing through; a user over its bandwidth is sent back
to user space, which drops what exceeds the bucket; a released allocation leaves the
maps at once and its ChannelData reaches user space, which has no allocation for it.

The client's and the peer's interfaces compute their checksums in software (``ethtool
-K tx off``: a veth otherwise hands the relay frames whose UDP checksum is only begun,
which a NIC never does) and run GRO, which gives their veth the NAPI that frames
redirected in XDP need.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from anyedge.adapters import netns
from anyedge.edge import build
from anyedge.services.turn.fastpath import open_fast_path
from turn_peers import TurnUdpClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVER, PEER, STRANGER = "100.64.0.1", ("100.64.1.2", 6000), ("100.64.1.3", 6000)
USER, PASSWORD = "alice", "wonderland-2026"
BANDWIDTH = 2_000  # bytes/s; the bucket holds 65,536: a debt lasts long after the pause
SO_RCVBUFFORCE = 33  # not in Python's socket module


@dataclass
class Relay:
    client_ns: str
    relay_ns: str
    peer_ns: str
    log: Path
    port: int = 9641  # the metrics port of the worker that holds the allocation

    def scrape(self) -> dict[str, float]:
        with netns.entered(self.relay_ns):
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read()
        out = {}
        for line in text.decode().splitlines():
            m = re.match(r"^(anyedge_turn_\w+)(\{[^}]*\})? (\S+)$", line)
            if m:
                labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
                labels.pop("worker", None)
                key = m.group(1) + "".join(f":{v}" for _, v in sorted(labels.items()))
                out[key] = float(m.group(3))
        return out

    def port_sessions(self, port: int) -> bool:
        self.port = port
        try:
            return bool(self.sessions())
        except OSError:  # no worker there
            return False

    def sessions(self) -> list[dict[str, object]]:
        with netns.entered(self.relay_ns):
            url = f"http://127.0.0.1:{self.port}/sessions"
            body = urllib.request.urlopen(url, timeout=5).read()
        return json.loads(body)["sessions"]  # type: ignore[no-any-return]

    def wait(self, what: str, ok: object, timeout: float = 30.0) -> dict[str, float]:
        end = time.monotonic() + timeout
        while True:
            m = self.scrape()
            if callable(ok) and ok(m):
                return m
            if time.monotonic() > end:
                raise AssertionError(f"{what}: not within {timeout} s; metrics {m}")
            time.sleep(0.2)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (namespaces, XDP)"
    lacking = build.missing_tools()
    if lacking:
        return "cannot build BPF programs, missing: " + ", ".join(lacking)
    if shutil.which("ethtool") is None:
        return "needs ethtool (Debian: ethtool; .ci/run installs it)"
    return None


@pytest.fixture(
    params=[(1, "native"), (2, "native"), (1, "generic")],
    ids=["1 worker", "2 workers", "generic XDP"],
)
def relay(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Relay]:
    """The three namespaces and ``turn serve`` with ``workers`` workers and the program in
    XDP ``mode``: with two workers, it is loaded before they fork and both write the
    same maps."""
    workers, mode = request.param
    with relay_lab(tmp_path, workers, mode) as r:
        yield r


@contextmanager
def relay_lab(tmp_path: Path, workers: int, mode: str) -> Iterator[Relay]:
    """The three namespaces and ``turn serve`` in the middle one (module docstring)."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    base = f"aetfp{os.getpid()}"
    c, r, p = f"{base}-c", f"{base}-r", f"{base}-p"
    try:
        for ns in (c, r, p):
            netns.add(ns)
        netns.veth(c, "eth0", r, "eth0")
        netns.veth(r, "eth1", p, "eth0")
        netns.batch(c, ["addr add 100.64.0.2/24 dev eth0", "route add default via 100.64.0.1"])
        netns.batch(r, ["addr add 100.64.0.1/24 dev eth0", "addr add 100.64.1.1/24 dev eth1"])
        netns.batch(
            p,
            [
                "addr add 100.64.1.2/24 dev eth0",
                "addr add 100.64.1.3/24 dev eth0",
                "route add default via 100.64.1.1",
            ],
        )
        for ns in (c, p):
            netns.run(ns, ["ethtool", "-K", "eth0", "tx", "off", "gro", "on"])
        conf = tmp_path / "turn.yaml"
        conf.write_text(
            f"""realm: fast.test
listen: [{{transport: udp, address: {SERVER}, port: 3478}}]
relay: {{ipv4: {SERVER}, ports: [50000, 50999]}}
auth: {{users: {{{USER}: {PASSWORD}}}, fleet_keys: [fleet-key-2026]}}
limits: {{allow_peers: [100.64.1.0/24], user_bandwidth: {BANDWIDTH}}}
workers: {workers}
log: text
metrics: {{address: 127.0.0.1, port: 9641}}
fast_path: {{interfaces: [eth0, eth1], mode: {mode}}}
"""
        )
        log = tmp_path / "serve.log"
        env = {"PYTHONPATH": str(ROOT / "src")}
        pid = netns.spawn(
            r, [sys.executable, "-m", "anyedge", "turn", "serve", "-c", str(conf)], log, env
        )
        relay = Relay(c, r, p, log)
        try:
            end = time.monotonic() + 60
            while True:
                try:
                    relay.scrape()
                    break
                except OSError:
                    if time.monotonic() > end or not netns.alive(pid):
                        why = f"turn serve did not start:\n{log.read_text()}"
                        raise AssertionError(why) from None
                    time.sleep(0.2)
            yield relay
        finally:
            netns.stop([pid], grace=10)
    finally:
        for ns in (c, r, p):
            netns.remove(ns)
        assert not netns.listed(base)


def _udp(ns: str, addr: tuple[str, int]) -> socket.socket:
    with netns.entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)  # the kernel relays in bursts
    s.bind(addr)
    s.settimeout(3.0)
    return s


@pytest.mark.lab
def test_channels_relay_in_the_kernel_and_fall_back_to_user_space(relay: Relay) -> None:
    assert "fast_path_unavailable" not in relay.log.read_text()
    peer, stranger = _udp(relay.peer_ns, PEER), _udp(relay.peer_ns, STRANGER)
    with netns.entered(relay.client_ns):
        client = TurnUdpClient((SERVER, 3478), USER, PASSWORD, local=("0.0.0.0", 0))
    client.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
    with client, peer, stranger:
        relayed = client.allocate()
        client.channel_bind(0x4001, PEER)
        relay.port = next(p for p in (9641, 9642) if relay.port_sessions(p))
        relay.wait("the channel in the kernel", lambda m: m["anyedge_turn_fast_path_channels"] == 1)

        # the peer first: its ARP for its gateway teaches the relay its MAC address, which
        # the kernel's FIB needs before XDP can send it anything (until then: user space)
        n = 200
        for i in range(n):
            peer.sendto(b"to the client %03d" % i, relayed)
        back = [client.receive(timeout=3.0) for _ in range(n)]
        assert {(src, kind) for src, _, kind in back} == {(PEER, "ChannelData")}
        assert sorted(d for _, d, _ in back) == [b"to the client %03d" % i for i in range(n)]
        for i in range(n):
            client.send_channel(0x4001, b"to the peer %03d" % i + bytes(85))
        got = [peer.recvfrom(2048) for _ in range(n)]
        assert {src for _, src in got} == {relayed}
        assert sorted(d[:15] for d, _ in got) == [b"to the peer %03d" % i for i in range(n)]

        # every packet counted by the core came from the kernel's maps: none in user space
        m = relay.wait(
            "the kernel's counters charged back",
            lambda m: m["anyedge_turn_fast_path_packets_total:to_peer"] >= n,
        )
        for d in ("to_peer", "to_client"):
            assert m[f"anyedge_turn_fast_path_packets_total:{d}"] == n
            assert m[f"anyedge_turn_packets_total:{d}"] == n
        assert m["anyedge_turn_fast_path_bytes_total:to_peer"] == 100 * n
        if relay.port == 9641:  # worker 0 shows the program's own counters
            assert m["anyedge_turn_fast_path_frames_total:to_peer"] == n
            assert m["anyedge_turn_fast_path_frames_total:to_client"] == n
        (session,) = relay.sessions()
        assert session["to_peer"] == {"packets": n, "bytes": 100 * n}
        assert session["to_client"] == {"packets": n, "bytes": 17 * n}

        # a peer without a permission gets nothing through (user space drops it)
        stranger.sendto(b"let me in", relayed)
        with pytest.raises(TimeoutError):
            client.receive(timeout=1.0)
        m = relay.wait(
            "the stranger dropped", lambda m: m["anyedge_turn_dropped_total:no_permission"] >= 1
        )
        assert m["anyedge_turn_packets_total:to_client"] == n

        # over its bandwidth: back to user space, which drops what exceeds the bucket
        for _ in range(100):
            client.send_channel(0x4001, bytes(1000))
        assert len([peer.recvfrom(2048) for _ in range(100)]) == 100  # the kernel relayed them
        relay.wait(
            "paused over bandwidth",
            lambda m: (
                m["anyedge_turn_fast_path_paused_total"] == 1
                and m["anyedge_turn_fast_path_channels"] == 0
            ),
        )
        for _ in range(10):
            client.send_channel(0x4001, bytes(1000))
        m = relay.wait(
            "dropped in user space", lambda m: m["anyedge_turn_dropped_total:bandwidth"] == 10
        )
        assert m["anyedge_turn_fast_path_packets_total:to_peer"] == n + 100
        peer.settimeout(0.5)
        with pytest.raises(TimeoutError):
            peer.recvfrom(2048)

        # released: out of the maps (the worker takes it out when it closes the relayed
        # address, which may come just after the answer the client reads); its
        # ChannelData reaches user space
        client.release()
        relay.wait(
            "the channel out of the kernel's maps",
            lambda m: m["anyedge_turn_fast_path_channels"] == 0,
        )
        client.send_channel(0x4001, b"after release")
        relay.wait(
            "ChannelData after release in user space",
            lambda m: m["anyedge_turn_dropped_total:no_allocation"] >= 1,
        )
        with pytest.raises(TimeoutError):
            peer.recvfrom(2048)


def test_without_the_hook_the_relay_stays_in_user_space(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An interface that is not there (or a kernel, a toolchain or privileges that are
    not) leaves the relay to user space, with one line saying why."""
    with caplog.at_level(logging.WARNING, logger="anyedge.turn"):
        assert open_fast_path(["aenone0"], "native") is None
    (line,) = [json.loads(r.getMessage()) for r in caplog.records]
    assert line["event"] == "fast_path_unavailable"
    assert line["error"]


def test_turn_check_shows_the_fast_path_and_refuses_a_bad_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from anyedge.cli.main import main

    conf = tmp_path / "turn.yaml"
    head = f"""realm: fast.test
listen: [{{transport: udp, address: {SERVER}, port: 3478}}]
auth: {{users: {{{USER}: {PASSWORD}}}, fleet_keys: [fleet-key-2026]}}
workers: 1
"""
    conf.write_text(head + "fast_path: {interfaces: [eth0, eth1]}\n")
    assert main(["turn", "check", "-c", str(conf)]) == 0
    shown = json.loads(capsys.readouterr().out)["fast_path"]
    assert shown == {"interfaces": ["eth0", "eth1"], "mode": "native"}
    for bad, why in (
        ("fast_path: {interfaces: []}", "fast_path.interfaces"),
        ("fast_path: {interfaces: [eth0/1]}", "'eth0/1' is not an interface name"),
        ("fast_path: {interfaces: [eth0], mode: turbo}", "fast_path.mode"),
    ):
        conf.write_text(head + bad + "\n")
        assert main(["turn", "check", "-c", str(conf)]) == 2
        err = capsys.readouterr().err
        assert "turn.yaml:5" in err
        assert why in err
