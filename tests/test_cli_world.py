"""``anyedge world`` in-process through :func:`anyedge.cli.main.main`, and once as a script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from anyedge import __version__
from anyedge.cli.main import EXIT_BAD_INPUT, main
from anyedge.model.summary import RTT_BANDS_MS

SMALL = ["--sites", "40", "--mcp", "4"]
FAST = ["--min-city-population", "500000"]  # fewer metros: quicker where size does not matter


def _json(out: str) -> dict[str, object]:
    data = json.loads(out)
    assert isinstance(data, dict)
    return data


def test_world_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["world", *SMALL, "--json"]) == 0
    out, err = capsys.readouterr()
    s = _json(out)
    assert s["sites"] == 40
    assert s["mcp_sites"] == 4
    assert s["peak_demand_rps"] == pytest.approx(40e6, rel=1e-6)
    by = s["by_continent"]
    assert isinstance(by, list)
    assert sum(r["sites"] for r in by) == 40
    assert sum(r["mcp_sites"] for r in by) == 4
    within = s["population_within_ms"]
    assert isinstance(within, dict)
    assert set(within) == {str(b) for b in RTT_BANDS_MS}
    assert all(0.0 <= v <= 1.0 for v in within.values())
    assert "building" not in out  # progress never goes to stdout
    assert err == ""  # and --json is quiet


def test_world_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["world", *SMALL, *FAST]) == 0
    out, _ = capsys.readouterr()
    assert "sites" in out
    assert "capacity" in out
    assert "40 (4)" in out  # sites (multi-colo)
    assert "by continent" in out
    assert "Europe" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_world_headroom_sizes_the_sites(capsys: pytest.CaptureFixture[str]) -> None:
    servers = []
    for room in ("1", "2"):
        assert main(["world", *SMALL, *FAST, "--headroom", room, room, "--json"]) == 0
        servers.append(_json(capsys.readouterr().out)["servers"])
    low, high = (int(str(n)) for n in servers)
    assert 1.7 * low < high < 2.3 * low


def test_world_out_and_load_back(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_dir = tmp_path / "w"
    assert main(["world", *SMALL, "--out", str(out_dir), "--json"]) == 0
    built = _json(capsys.readouterr().out)
    for name in ("topology.yaml", "internet.as-rel", "metros.csv", "eyeballs.csv"):
        assert (out_dir / name).is_file(), name
        assert (out_dir / name).stat().st_size > 0, name
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "eyeballs.csv",
        "internet.as-rel",
        "metros.csv",
        "topology.yaml",
    ]
    assert built["sites"] == 40
    assert built.pop("files") == [
        str(out_dir / n) for n in ("topology.yaml", "internet.as-rel", "metros.csv", "eyeballs.csv")
    ]

    assert main(["world", "-t", str(out_dir), "--json"]) == 0
    loaded = _json(capsys.readouterr().out)
    assert loaded == built

    # The topology file itself loads to the same world.
    assert main(["world", "--topology", str(out_dir / "topology.yaml"), "--json"]) == 0
    assert _json(capsys.readouterr().out) == built


def test_world_out_table_says_where(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_dir = tmp_path / "saved"
    assert main(["world", "--sites", "5", "--mcp", "1", *FAST, "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    for name in ("topology.yaml", "internet.as-rel", "metros.csv", "eyeballs.csv"):
        assert f"{out_dir}/{name}" in out  # every file it wrote, named
    assert (out_dir / "topology.yaml").is_file()


def test_world_out_must_be_a_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("not a directory\n")
    assert main(["world", "--sites", "5", "--mcp", "1", *FAST, "--out", str(f), "--json"]) == 2
    _, err = capsys.readouterr()
    assert "--out" in err
    assert "not a directory" in err
    assert f.read_text() == "not a directory\n"


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--sites", "0"], "--sites"),
        (["--mcp", "5", "--sites", "3"], "--mcp"),
        (["--peak-rps", "-1"], "--peak-rps"),
        (["--tier1", "0"], "--tier1"),
        (["--headroom", "0.8", "1.2"], "--headroom"),
        (["--headroom", "1.5", "1.2"], "--headroom"),
    ],
)
def test_world_bad_options(
    capsys: pytest.CaptureFixture[str], args: list[str], option: str
) -> None:
    assert main(["world", *args, "--json"]) == EXIT_BAD_INPUT == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("anyedge: error: ")
    assert f"{option}: " in err
    assert "Traceback" not in err


def test_world_missing_topology(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["world", "-t", str(tmp_path / "nope.yaml"), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("anyedge: error: ")
    assert "nope.yaml" in err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["world", "--sites", "many"]) == 2
    _, err = capsys.readouterr()
    assert "--sites" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    out, _ = capsys.readouterr()
    assert out.strip() == f"anyedge, version {__version__}"
    assert __version__ == "0.1.0"


def _script() -> str:
    beside = Path(sys.executable).with_name("anyedge")
    if beside.exists():
        return str(beside)
    found = shutil.which("anyedge")
    assert found is not None, "the anyedge console script is not installed"
    return found


def test_console_script() -> None:
    proc = subprocess.run(
        [_script(), "world", "--sites", "30", "--mcp", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    s = _json(proc.stdout)
    assert s["sites"] == 30
    assert s["mcp_sites"] == 3
    assert proc.stderr == ""


def test_console_script_bad_input() -> None:
    proc = subprocess.run(
        [_script(), "world", "--sites", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "anyedge: error: command line: --sites: must be at least 1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_world_reports_demand_after_routing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["world", *SMALL, *FAST, "--json"]) == 0
    served = _json(capsys.readouterr().out)["served"]
    assert isinstance(served, dict)
    within = served["demand_within_ms"]
    assert [within[str(b)] for b in RTT_BANDS_MS] == sorted(within.values())  # cumulative
    assert 0 < served["median_ms"] <= served["p90_ms"]
    assert within["100"] + served["unreached"] <= 1 + 1e-9
    assert main(["world", *SMALL, *FAST]) == 0
    assert "after routing" in capsys.readouterr().out
