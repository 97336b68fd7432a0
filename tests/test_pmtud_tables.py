"""Where pmtud's table comes from, and how it follows changes (:mod:`anyedge.edge.pmtud_site`):
the site file read again when it changes or on SIGHUP, all or nothing (a bad file keeps
the table in force); the running XDP balancer's table read from the kernel, each commit
seen, two quick commits seen by the periodic full read, a vanished balancer (or one
with no table committed yet) reported with the last table kept; and the command line's
refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from anyedge.adapters import netns
from anyedge.balance import Table
from anyedge.edge import build as bpf_build
from anyedge.edge.libbpf import BpfError
from anyedge.edge.pmtud import UDP, Pmtud, Site, flow_of, parse_ptb
from anyedge.edge.pmtud_site import FULL_READ, BalancerSource, FileSource
from anyedge.errors import InputError
from anyedge.lab.ptbgen import ptb4

MACS = [f"02:ae:5e:00:00:{i:02x}" for i in range(3)]
OWN = bytes.fromhex("02ae5e000000")
LATER = 2.0  # seconds past the file check's interval


def _write(path: Path, weights: list[float], text: str | None = None) -> None:
    """Write the site file as operators should: a new file renamed over the old."""
    tmp = path.with_suffix(".new")
    servers = [{"mac": m, "weight": w} for m, w in zip(MACS, weights, strict=True)]
    tmp.write_text(text if text is not None else json.dumps({"seed": 0, "servers": servers}))
    os.replace(tmp, path)


def _owners(site: Site) -> list[int]:
    """Which server each of 300 flows' PTBs goes to (index into MACS; OWN: 0)."""
    core = Pmtud("flow", site, src_rate=1e9, iface_rate=1e9)
    out = []
    for port in range(30000, 30300):
        d = core.decide(ptb4("198.51.100.2", "203.0.113.10", "100.64.1.7", 80, port), 0.0)
        out.append(0 if d.reason == "local" else MACS.index(d.macs[0].hex(":")))
    return out


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.json"
    _write(path, [1, 1, 1])
    return path


def test_a_changed_site_file_is_loaded_and_decisions_follow(site_file: Path) -> None:
    src = FileSource(site_file, OWN)
    core = Pmtud("flow", src.site, src_rate=1e9, iface_rate=1e9)
    before = _owners(src.site)
    assert set(before) == {0, 1, 2}
    assert src.poll(time.monotonic()) is None  # unchanged
    _write(site_file, [1, 0, 1])  # server 1 takes no flows
    new = src.poll(time.monotonic() + LATER)
    assert new is not None
    assert src.site is new
    core.replace_site(new)
    after = _owners(new)
    assert 1 not in after
    assert src.poll(time.monotonic() + 2 * LATER) is None  # loaded once


def test_a_bad_site_file_keeps_the_table_in_force(site_file: Path) -> None:
    src = FileSource(site_file, OWN)
    old = src.site
    _write(site_file, [1, 1, 1], text='{"servers": [{"mac": "02:ae"}]}')
    with pytest.raises(InputError) as e:
        src.poll(time.monotonic() + LATER)
    assert str(site_file) in str(e.value)
    assert "servers[0].mac" in str(e.value)
    assert src.site is old
    assert _owners(src.site) == _owners(old)
    assert src.poll(time.monotonic() + 2 * LATER) is None  # reported once, not every second
    _write(site_file, [1, 1, 1], text="{not json")
    with pytest.raises(InputError, match="not JSON"):
        src.poll(time.monotonic() + 3 * LATER)
    assert src.site is old
    _write(site_file, [2, 1, 1])  # fixed: loaded
    assert src.poll(time.monotonic() + 4 * LATER) is not None
    assert src.site is not old


def test_a_file_without_this_servers_mac_is_refused(site_file: Path) -> None:
    src = FileSource(site_file, bytes.fromhex("02ae5e000001"))
    old = src.site
    servers = [{"mac": m} for m in ("02:00:00:00:00:01", "02:00:00:00:00:02")]
    _write(site_file, [1, 1, 1], text=json.dumps({"servers": servers}))
    with pytest.raises(InputError, match="MAC is not one of them"):
        src.poll(time.monotonic() + LATER)
    assert src.site is old


def test_sighup_reads_the_file_again_at_once(site_file: Path) -> None:
    src = FileSource(site_file, OWN)
    assert src.poll(time.monotonic()) is None
    src.hangup()
    assert src.poll(time.monotonic()) is not None  # within the check interval, unchanged


def test_replace_site_keeps_the_rate_limits(site_file: Path) -> None:
    src = FileSource(site_file, OWN)
    core = Pmtud("flow", src.site, src_rate=1.0, iface_rate=100.0)
    pkt = next(
        p
        for port in range(30000, 31000)
        if (p := ptb4("198.51.100.2", "203.0.113.10", "100.64.1.7", 80, port))
        and core.targets(parse_ptb(p))  # type: ignore[arg-type]
    )
    assert core.decide(pkt, 0.0).reason == "sent"
    core.replace_site(src.site)
    assert core.decide(pkt, 0.0).reason == "rate_source"  # the source's bucket is kept


@pytest.fixture
def attached() -> Iterator[tuple[str, object]]:
    """A namespace with a veth and the balancer attached to it, as server 0 of three."""
    from anyedge.edge.balancer import Balancer

    if os.geteuid() != 0:
        pytest.skip("needs root")
    lacking = bpf_build.missing_tools()
    if lacking:
        pytest.skip("cannot build BPF programs, missing: " + ", ".join(lacking))
    a, b = f"aepmt{os.getpid()}a", f"aepmt{os.getpid()}b"
    netns.add(a)
    netns.add(b)
    try:
        netns.veth(a, "eth0", b, "eth0")
        netns.batch(a, ["link set eth0 down", f"link set eth0 address {MACS[0]}"])
        with Balancer(self_index=0, seed=7) as lb:
            lb.set_servers(MACS)
            lb.set_services(["203.0.113.10"])
            lb.replace(Table.build([1.0] * 3, seed=7))
            lb.attach("eth0", netns=a)
            try:
                yield a, lb
            finally:
                lb.detach()
    finally:
        netns.remove(a)
        netns.remove(b)


@pytest.mark.lab
def test_the_balancers_table_is_read_and_followed(attached: tuple[str, object]) -> None:
    from anyedge.edge.balancer import Balancer

    ns, lb = attached
    table = lb.table  # type: ignore[attr-defined]
    with netns.entered(ns):
        src = BalancerSource("eth0", OWN)  # (/sys here is not the namespace's)
        try:
            snap = src.snapshot
            assert snap.seed == 7
            assert snap.self_index == 0
            assert [m.hex(":") for m in snap.macs] == MACS
            assert np.array_equal(snap.first, table.first)
            assert (snap.second == -1).all()
            assert src.poll(time.monotonic()) is None

            drained = table.drain(1)  # one commit: seen at the next look
            lb.replace(drained)  # type: ignore[attr-defined]
            new = src.poll(time.monotonic())
            assert new is not None
            assert new.table is src.snapshot
            assert np.array_equal(src.snapshot.first, drained.first)
            assert np.array_equal(src.snapshot.second, drained.second)
            assert (src.snapshot.second == 1).sum() == (table.first == 1).sum()
            # the decision by it: flows of server 1's old buckets go to their new owners
            core = Pmtud("flow", new, src_rate=1e9, iface_rate=1e9)
            moved = 0
            for port in range(30000, 30300):
                pkt = ptb4("198.51.100.2", "203.0.113.10", "100.64.1.7", 80, port, proto=UDP)
                b = flow_of(parse_ptb(pkt), 7) & 0xFFFF  # type: ignore[arg-type]
                first = int(drained.first[b])
                assert core.decide(pkt, 0.0).macs == (() if first == 0 else (src.site.macs[first],))
                moved += int(table.first[b]) == 1
            assert moved > 50

            # two commits before the next look bring the same array back: the full read
            # finds the change
            lb.replace(drained.settled())  # type: ignore[attr-defined]
            lb.replace(drained.settled().remove(1))  # type: ignore[attr-defined]
            assert src.poll(time.monotonic()) is None
            assert src.poll(time.monotonic() + FULL_READ + 1) is not None
            assert (src.snapshot.second == -1).all()
            assert 1 not in src.snapshot.first

            lb.detach()  # type: ignore[attr-defined]
            kept = src.site
            with pytest.raises(BpfError, match="no XDP program"):
                src.poll(time.monotonic() + 3 * FULL_READ)
            assert src.site is kept

            with Balancer(self_index=0) as fresh:  # attached, no table committed yet
                fresh.set_servers(MACS)
                fresh.attach("eth0", netns=ns)
                try:
                    with pytest.raises(BpfError, match="no table in force yet"):
                        src.poll(time.monotonic() + 6 * FULL_READ)
                    with pytest.raises(BpfError, match="no table in force yet"):
                        BalancerSource("eth0", OWN)
                    assert src.site is kept
                finally:
                    fresh.detach()
        finally:
            src.close()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    argv = [sys.executable, "-m", "anyedge", "pmtud", "run", "--iface", "lo", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)


def test_table_balancer_and_a_site_file_together_exit_2(site_file: Path) -> None:
    r = _run("--mode", "flow", "--table", "balancer", "--site", str(site_file))
    assert r.returncode == 2
    assert "--site" in r.stderr
    assert "not with --table balancer" in r.stderr
    assert "ready" not in r.stdout


def test_table_balancer_without_a_balancer_exits_1() -> None:
    r = _run("--mode", "flow", "--table", "balancer")
    assert r.returncode == 1
    assert r.stderr.startswith("anyedge: error: --table balancer:")
    assert "ready" not in r.stdout
