"""A lab site with servers (``tests/data/lab_edge.yaml``): a client, an ISP, and the
site CHC with four servers on one bridge behind its router, which spreads the anycast
prefix over them by ECMP; every server runs the XDP load balancer and the service.

1,000 TCP connections from the client are held open while servers are added, drained
and removed through the functions ``anyedge lab edge servers`` calls: with daisy
chaining (the second hop) none breaks; without it exactly the connections whose bucket
moved break, and their share is the share of buckets the change moved.  Then the
commands themselves, in a subprocess, with their exit statuses.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from anyedge.adapters import netns
from anyedge.balance import Table, flow_hash
from anyedge.edge import build as bpf_build
from anyedge.lab import edge
from lab_support import DATA, RunningLab, running_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

N = 1000
PORT = edge.HOLD_PORT


@pytest.fixture
def edge_lab() -> Iterator[RunningLab]:
    lacking = bpf_build.missing_tools()
    if lacking:
        pytest.skip("cannot build BPF programs, missing: " + ", ".join(lacking))
    with running_lab(DATA / "lab_edge.yaml") as lab:
        yield lab


def _open(lab: RunningLab, n: int) -> list[socket.socket]:
    vip = lab.plan.service_address
    conns: list[socket.socket] = []
    try:
        with netns.entered(lab.plan.node("c1").namespace):
            for _ in range(n):
                conns.append(socket.create_connection((vip, PORT), timeout=5.0))
    except BaseException:
        for c in conns:
            c.close()
        raise
    return conns


def _ask(conns: list[socket.socket], deadline: float = 15.0) -> list[str]:
    """Send a line on every connection, then collect every answer line ("" when the
    connection was reset or gave none before the deadline)."""
    for c in conns:
        c.setblocking(False)
        with contextlib.suppress(OSError):
            c.send(b"who\n")
    got = dict.fromkeys(range(len(conns)), b"")
    done: dict[int, str] = {}
    sel = selectors.DefaultSelector()
    for i, c in enumerate(conns):
        sel.register(c, selectors.EVENT_READ, i)
    end = time.monotonic() + deadline
    while len(done) < len(conns) and time.monotonic() < end:
        for key, _ in sel.select(0.2):
            i = key.data
            try:
                chunk = conns[i].recv(100)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            got[i] += chunk
            if not chunk or got[i].endswith(b"\n"):
                done[i] = got[i].decode().strip() if chunk else ""
                sel.unregister(conns[i])
    sel.close()
    return [done.get(i, "") for i in range(len(conns))]


def _first_hops(lab: RunningLab, conns: list[socket.socket], table: Table) -> np.ndarray:
    """Each connection's first hop in ``table`` (the balancers hash with seed 0)."""
    src = int(ipaddress.ip_address(lab.plan.node("c1").ports[0].ip))
    dst = int(ipaddress.ip_address(lab.plan.service_address))
    sports = np.array([c.getsockname()[1] for c in conns])
    return table.lookup(flow_hash(src, dst, sports, PORT, 6))[0]


def test_held_connections_survive_add_drain_remove_with_the_second_hop(
    edge_lab: RunningLab,
) -> None:
    """Per change, 1,000 fresh connections are opened and answered (by the server their
    bucket names), the change is made on every server of the site, and every connection
    asks again.  With the second hop: 0 broken.  Without: the broken ones are exactly
    those whose bucket moved, and their share is the share of buckets moved."""
    lab, d, plan = edge_lab, edge_lab.directory, edge_lab.plan
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    t0 = time.monotonic()
    lines = []
    try:
        for on, steps in (
            (True, [("add", "s4"), ("drain", "s1"), ("remove", "s1")]),
            (False, [("add", "s5"), ("drain", "s2"), ("remove", "s2")]),
        ):
            edge.second_hop(d, plan, "CHC", on)
            for op, name in steps:
                conns = _open(lab, N)
                try:
                    first = _ask(conns)
                    before, names = edge.table(d, plan, "CHC")
                    owner = _first_hops(lab, conns, before)
                    assert first == [f"CHC/{names[o]}" for o in owner]
                    out = edge.change(d, plan, "CHC", op, name)
                    after, _ = edge.table(d, plan, "CHC")
                    now = _first_hops(lab, conns, after)
                    moved = {int(i) for i in np.flatnonzero(now != owner)}
                    again = _ask(conns)
                    broken = {i for i in range(N) if again[i] != first[i]}
                    share = out["moved"] / out["buckets"]
                    lines.append(
                        f"second hop {'on' if on else 'off'}, {op} {name}: "
                        f"{len(moved)} of {N} moved, {len(broken)} broken; "
                        f"{share:.1%} of buckets moved"
                    )
                    if on:
                        assert broken == set(), lines[-1]
                    else:
                        assert broken == moved, lines[-1]
                        assert abs(len(broken) / N - share) < 0.05, lines[-1]
                    if op != "remove":
                        assert 0.1 < share < 0.4, lines[-1]  # about a quarter or a fifth
                finally:
                    for c in conns:
                        c.close()
    finally:
        print("\n".join(lines))
    rows = edge.servers(d, plan, "CHC")["servers"]
    assert [(r["name"], r["state"]) for r in rows] == [
        ("s0", "active"),
        ("s1", "removed"),
        ("s2", "removed"),
        ("s3", "active"),
        ("s4", "active"),
        ("s5", "active"),
    ]
    assert not netns.exists(edge.server_namespace(plan.site_node("CHC"), "s1"))
    counted = edge.stats(d, plan, "CHC")
    kinds = {c["kind"] for cs in counted["servers"].values() for c in cs}
    assert {"first_hop", "second_hop", "local"} <= kinds
    print(f"{time.monotonic() - t0:.1f} s")
    assert time.monotonic() - t0 < 120


def _udp(lab: RunningLab, vip: str, port: int) -> bytes:
    """One UDP request from the client: the answer, or b"" after a second."""
    with netns.entered(lab.plan.node("c1").namespace):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.settimeout(1.0)
        s.sendto(b"who", (vip, port))
        try:
            return s.recv(100)
        except TimeoutError:
            return b""


def _local(counted: dict[str, Any]) -> int:
    """Packets the site's balancers kept for their own server (summed)."""
    return sum(c["packets"] for cs in counted["servers"].values() for c in cs
               if c["kind"] == "local")  # fmt: skip


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "anyedge", "lab", "edge", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_edge_commands_show_and_change_the_table(edge_lab: RunningLab) -> None:
    d = str(edge_lab.directory)
    p = _cli("servers", "--dir", d, "chc", "--json")
    assert p.returncode == 0, p.stderr
    shown = json.loads(p.stdout)
    assert [(r["name"], r["buckets"]) for r in shown["servers"]] == [
        (f"s{i}", 16384) for i in range(4)
    ]
    assert shown["second_hop"] is True

    with netns.entered(edge_lab.plan.node("c1").namespace):  # some traffic to count
        for _ in range(20):
            with socket.create_connection((edge_lab.plan.service_address, PORT), 5.0) as c:
                c.sendall(b"who\n")
                assert c.recv(100).startswith(b"CHC/s")

    p = _cli("servers", "--dir", d, "CHC", "--drain", "s3")
    assert p.returncode == 0, p.stderr
    assert "16384 of 65536 buckets moved" in p.stdout
    assert "draining" in p.stdout
    p = _cli("servers", "--dir", d, "CHC", "--add", "s4")
    assert p.returncode == 0, p.stderr
    p = _cli("stats", "--dir", d, "CHC", "--json")
    assert p.returncode == 0, p.stderr
    counted = json.loads(p.stdout)
    assert set(counted["servers"]) == {"s0", "s1", "s2", "s3", "s4"}
    local = [c["packets"] for cs in counted["servers"].values() for c in cs if c["kind"] == "local"]
    assert sum(local) >= 20
    p = _cli("stats", "--dir", d, "CHC")
    assert p.returncode == 0
    assert "local" in p.stdout

    # L4Drop at the site: UDP to the plan's port is dropped, TCP still answered
    vip, udp_port = edge_lab.plan.service_address, edge_lab.plan.ports[0]
    rules = edge_lab.directory.parent / (edge_lab.directory.name + "-rules.yaml")
    bad = edge_lab.directory.parent / (edge_lab.directory.name + "-bad.yaml")
    try:
        rules.write_text(
            f"rules:\n  - name: no-udp\n    protocol: udp\n    destination_ports: {udp_port}\n"
        )
        bad.write_text("rules:\n  - name: x\n    source: 198.51.100.1/24\n")
        local_before = _local(edge.stats(edge_lab.directory, edge_lab.plan, "CHC"))
        p = _cli("rules", "--dir", d, "CHC", "-f", str(rules))
        assert p.returncode == 0, p.stderr
        # on every server, in front of its balancer
        assert "1 rules in force on s0:eth0, s1:eth0, s2:eth0, s3:eth0, s4:eth0" in p.stdout
        assert [_udp(edge_lab, vip, udp_port) for _ in range(3)] == [b""] * 3
        with netns.entered(edge_lab.plan.node("c1").namespace):
            for _ in range(10):
                with socket.create_connection((vip, PORT), 5.0) as c:
                    c.sendall(b"who\n")
                    assert c.recv(100).startswith(b"CHC/s")
        counted = edge.stats(edge_lab.directory, edge_lab.plan, "CHC")
        # what L4Drop passed went on to the balancers (tail calls): their counters moved
        assert _local(counted) >= local_before + 10
        assert counted["rules"][0]["name"] == "no-udp"
        assert counted["rules"][0]["packets"] == 3
        # a server added now gets the rules too
        p = _cli("servers", "--dir", d, "CHC", "--add", "s5")
        assert p.returncode == 0, p.stderr
        assert [_udp(edge_lab, vip, udp_port) for _ in range(6)] == [b""] * 6
        assert edge.stats(edge_lab.directory, edge_lab.plan, "CHC")["rules"][0]["packets"] == 9
        p = _cli("stats", "--dir", d, "CHC", "--json")
        assert json.loads(p.stdout)["rules"][0]["packets"] == 9
        p = _cli("rules", "--dir", d, "CHC", "-f", str(bad))
        assert p.returncode == 2, p.stderr
        assert "rules[0].source: not a prefix" in p.stderr
        rules.write_text("rules: []\n")
        p = _cli("rules", "--dir", d, "CHC", "-f", str(rules))
        assert p.returncode == 0, p.stderr
        assert _udp(edge_lab, vip, udp_port).startswith(b"CHC/s")
    finally:
        rules.unlink(missing_ok=True)
        bad.unlink(missing_ok=True)

    for args, code, words in (
        (("servers", "--dir", d, "XYZ"), 2, "no site 'XYZ'"),
        (("servers", "--dir", d, "CHC", "--drain", "s9"), 2, "no server s9"),
        (("servers", "--dir", d, "CHC", "--add", "s0"), 2, "already has a server s0"),
        (("servers", "--dir", d, "CHC", "--add", "s9", "--drain", "s0"), 2, "one change"),
        (("servers", "--dir", d + "-none", "CHC"), 3, "no lab here"),
        (("stats", "--dir", d + "-none", "CHC"), 3, "no lab here"),
        (("rules", "--dir", d, "CHC", "-f", d + "-none.yaml"), 2, "none.yaml"),
    ):
        p = _cli(*args)
        assert p.returncode == code, (args, p.stdout, p.stderr)
        assert p.stderr.startswith("anyedge: error:"), p.stderr
        assert words in p.stderr, p.stderr
