"""``anyedge probes``: a topology's second operator joins; bad input exits with 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anyedge.cli.main import main
from test_cli_bad_input import refused
from test_routing_operators import TWO_SITES

DATA = Path(__file__).parent / "data"


def test_probes_measure_before_and_after_the_topologys_operator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topo = tmp_path / "t.yaml"
    topo.write_text(TWO_SITES % "operators: [{name: cdn, asn: 64400, sites: [AKL]}]")
    assert main(["probes", "-t", str(topo), "--probes", "50", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sites"] == {"before": 1, "after": 2}
    assert out["before"]["probes"] == out["after"]["probes"] == 50
    # AS65001 hears both sites at the same length and takes the lower origin ASN, the
    # CDN's AKL, farther from Wellington than CHC: adding a site made it slower
    assert out["after"]["median_ms"] > out["before"]["median_ms"]
    assert set(out["after"]["by_country"]) == {"NZ"}


def test_probes_refuse_more_sites_than_there_are(tmp_path: Path) -> None:
    topo = tmp_path / "t.yaml"
    topo.write_text(TWO_SITES % "")
    refused("probes", "-t", str(topo), "--every", "1", says="--theirs: 50 sites, but only 0")
    refused(
        "probes",
        "-t",
        str(DATA / "lab3.yaml"),
        "--theirs",
        "1",
        says="internet: no fixed-line user network to place probes in",
    )
    refused("probes", "--probes", "0", says="--probes")
