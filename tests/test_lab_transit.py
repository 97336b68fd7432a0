"""Magic Transit on a lab site, through the lab's own BGP speaker (marker ``lab``).

``tests/data/lab_transit.yaml`` is one ISP (FRR), one site (CHC, BIRD) and a client.
With the lab up and an embedded store, ``anyedge lab transit CHC`` runs as a process:
a customer written to the store gets its namespace beside the site's and its prefix
announced by the site's speaker (the ISP's kernel table learns it: the customer is
``docs/examples/transit-lab.yaml``, put as docs/transit.md puts it); removing the
customer withdraws it; SIGTERM leaves the ISP with the site's own prefixes only and no
customer namespace behind.  A site the lab does not have is bad input (exit status 2).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from anyedge.adapters import netns
from anyedge.cli.main import main
from anyedge.store import EmbeddedWriter
from anyedge.transit.config import remove_customer
from lab_support import DATA, running_lab
from transit_support import why_not

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
EXAMPLE = ROOT / "docs" / "examples" / "transit-lab.yaml"
OWN = {"198.51.100.0/24", "203.0.113.0/24"}  # the topology's prefix and the lab's test one
ACME = "192.0.2.0/25"

pytestmark = pytest.mark.lab


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"no {what} within {timeout:g} s")
        time.sleep(0.2)


def test_lab_transit_announces_customers_through_the_sites_speaker() -> None:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    with running_lab(DATA / "lab_transit.yaml", "tr") as lab, tempfile.TemporaryDirectory() as tmp:
        isp = lab.plan.node("isp1").namespace
        site = lab.plan.node("chc").namespace

        def learnt() -> set[str]:
            out = netns.run(isp, ["ip", "-j", "route", "show", "proto", "bgp"])
            return {r["dst"] for r in json.loads(out or "[]")}

        wait_for(lambda: learnt() == OWN, 30, "the site's own prefixes at the ISP")
        writer = EmbeddedWriter(os.path.join(tmp, "config.db"))
        host, port = writer.address
        argv = [sys.executable, "-m", "anyedge", "lab", "transit"]
        opts = ["--dir", str(lab.directory), "--connect", f"{host}:{port}"]
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        bad = subprocess.run([*argv, "XYZ", *opts], env=env, capture_output=True, text=True)
        assert bad.returncode == 2, bad.stderr
        assert "no site 'XYZ' in the lab" in bad.stderr
        p = subprocess.Popen([*argv, "CHC", *opts], env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert p.stdout is not None
            assert json.loads(p.stdout.readline())["endpoint"] == ["198.51.100.1"]
            # docs/transit.md's example file, as the docs put it
            put = ["transit", "put", str(EXAMPLE), "--connect", f"{host}:{port}"]
            assert main(put) == 0
            wait_for(lambda: learnt() == OWN | {ACME}, 30, "acme's prefix at the ISP")
            assert netns.exists(f"{site}-mt-acme")
            remove_customer(writer, "acme")
            wait_for(lambda: learnt() == OWN, 30, "acme's prefix withdrawn")
            assert main(put) == 0
            wait_for(lambda: learnt() == OWN | {ACME}, 30, "acme's prefix back")
            p.send_signal(signal.SIGTERM)
            assert p.wait(timeout=60) == 0
            wait_for(lambda: learnt() == OWN, 30, "only the site's own prefixes left")
            assert not netns.exists(f"{site}-mt-acme")
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
            writer.close()
