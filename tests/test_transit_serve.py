"""``anyedge transit serve`` as a process (marker ``lab``): the daemon of one server; and
docs/transit.md's Python example, run.

A store writer in the test, a server namespace, and ``anyedge transit serve --host-ns``
started as a real process.  ``anyedge transit put`` makes a customer; the daemon makes
its namespace with its rules and serves its GRE counters for Prometheus; SIGTERM ends it
and it removes what it made.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from anyedge.adapters import netns
from anyedge.store import EmbeddedWriter
from anyedge.transit.nsnft import NamespaceNft
from store_support import free_ports
from transit_support import why_not

SRC = Path(__file__).resolve().parent.parent / "src"
EXAMPLE = SRC.parent / "docs" / "examples" / "transit-acme.yaml"


@pytest.mark.lab
def test_serve_applies_the_store_and_cleans_up(tmp_path: Path) -> None:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    base = f"aetrsv{os.getpid() % 10000}{secrets.token_hex(2)}"
    host = f"{base}-h"
    netns.add(host)
    netns.batch(host, ["addr add 192.0.2.100/32 dev lo"])
    writer = EmbeddedWriter(tmp_path / "config.db")
    (metrics,) = free_ports(1)
    connect = f"{writer.address[0]}:{writer.address[1]}"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    argv = [sys.executable, "-m", "anyedge", "transit"]
    log = (tmp_path / "serve.log").open("w")  # what the daemon says, if it fails
    p = subprocess.Popen(
        [*argv, "serve", "--endpoint", "192.0.2.100", "--host-ns", host,
         "--ns-prefix", f"{base}-", "--metrics-port", str(metrics), "--connect", connect],
        stdout=subprocess.PIPE, stderr=log, text=True, env=env,
    )  # fmt: skip
    try:
        assert p.stdout is not None
        assert json.loads(p.stdout.readline())["endpoint"] == ["192.0.2.100"]
        put = subprocess.run(
            [*argv, "put", "--json", str(EXAMPLE), "--connect", connect],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        assert json.loads(put.stdout) == {"acme": 1, "beta": 1}
        deadline = time.monotonic() + 30
        while not (netns.exists(f"{base}-acme") and netns.exists(f"{base}-beta")):
            assert time.monotonic() < deadline, "the daemon made no namespaces"
            time.sleep(0.1)
        want = ["replies", "attackers", "ftp", *["games"] * 4, "ping", "default"]  # v4, v6 each
        while True:  # the namespace comes before its rules
            n = NamespaceNft(f"{base}-acme")
            try:
                rules = [i["rule"] for i in n.ruleset()["nftables"] if "rule" in i]
            finally:
                n.close()
            if [r["comment"] for r in rules] == want or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert [r["comment"] for r in rules] == want
        page = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10).read()
        assert b"anyedge_transit_gre_packets_total" in page or b"# HELP anyedge_transit" in page
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
        assert not netns.listed(f"{base}-a")
        assert not netns.listed(f"{base}-b")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stdout is not None:
            p.stdout.close()
        log.close()
        writer.close()
        for ns in netns.listed(base):
            netns.remove(ns)
    assert not netns.listed(base)


@pytest.mark.lab
def test_the_docs_python_example_runs(tmp_path: Path) -> None:
    """docs/transit.md's Python example, run in a server namespace of the test's own (its
    threads start there) with a unique namespace prefix and the store file in tmp_path."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    doc = (SRC.parent / "docs" / "transit.md").read_text(encoding="utf-8")
    code = re.findall(r"```python\n(.*?)```", doc, flags=re.S)[0]
    base = f"aetrdx{os.getpid() % 10000}{secrets.token_hex(2)}"
    code = code.replace('"mt-"', f'"{base}-"').replace('"config.db"', repr(str(tmp_path / "c.db")))
    host = f"{base}-host"
    netns.add(host)
    netns.batch(host, ["addr add 192.0.2.100/32 dev lo"])
    names: dict[str, Any] = {}
    failed: list[BaseException] = []

    def run() -> None:
        try:
            with netns.entered(host):
                exec(code, names)
        except BaseException as e:
            failed.append(e)

    try:
        t = threading.Thread(target=run)
        t.start()
        t.join(60)
        assert not failed, failed
        assert netns.exists(f"{base}-acme")
    finally:
        for name in ("applier", "gre", "replica", "writer"):
            if name in names:
                names[name].close()
        for ns in netns.listed(base):
            netns.remove(ns)
    assert not netns.listed(base)
