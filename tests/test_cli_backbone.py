"""``anyedge backbone paths`` on a small topology: JSON, table, bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anyedge.cli.main import main

TINY = (Path(__file__).parent / "data" / "tiny.yaml").read_text(encoding="utf-8")
BACKBONE = """\
backbone:
  links:
    - {sites: [CHC, AKL], capacity_gbps: 100}
    - {sites: [AKL, IAD], km: 14000, capacity_gbps: 400}
  transit_detour: {CHC: 1.3}
origins:
  - {name: us-api, city: Ashburn, country: US, lat: 39.04, lon: -77.49}
"""


@pytest.fixture
def topology(tmp_path: Path) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(TINY + BACKBONE, encoding="utf-8")
    return path


def test_paths_json(topology: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backbone", "paths", "-t", str(topology), "--origin", "us-api", "--json"]) == 0
    rows = {r["site"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"CHC", "AKL", "IAD"}
    # Christchurch's transit detours; the backbone to Washington and out from there wins
    assert rows["CHC"]["via"] == ["CHC", "AKL", "IAD"]
    assert rows["CHC"]["best_ms"] < rows["CHC"]["direct_ms"]
    assert rows["IAD"]["via"] == ["IAD"]
    assert rows["IAD"]["gain"] == 0.0


def test_paths_table_and_site_filter(topology: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["backbone", "paths", "-t", str(topology), "--origin", "us-api", "--site", "CHC"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "CHC > AKL > IAD" in out
    assert "IAD (transit)" not in out


@pytest.mark.parametrize(
    ("args", "place"),
    [(["--origin", "nope"], "--origin"), (["--origin", "us-api", "--site", "XYZ"], "--site")],
)
def test_bad_input_exits_2(
    topology: Path, args: list[str], place: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backbone", "paths", "-t", str(topology), *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"anyedge: error: command line: {place}: unknown")
