"""``anyedge predict`` from the command line: one scenario, the atlas, and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from anyedge.cli.main import main
from anyedge.predict import Atlas

TINY = str(Path(__file__).parent / "data" / "tiny.yaml")


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> Any:
    rc, out, err = run([*args, "--json"], capsys)
    assert rc == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def atlas_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    f = tmp_path_factory.mktemp("atlas") / "tiny-atlas.json"
    assert main(["predict", "-t", TINY, "--all", "--out", str(f), "--json"]) == 0
    return f


def test_site_json(capsys: pytest.CaptureFixture[str]) -> None:
    # CHC's users (its peer 10001 in both cities, and 10002 behind 2001) all fail over,
    # through transit 2001, to AKL
    sc = run_json(["predict", "-t", TINY, "--site", "CHC"], capsys)
    assert sc["name"] == "CHC"
    assert sc["kind"] == "single"
    assert sc["failed"] == ["CHC"]
    assert sc["section"] is None
    assert sc["failed_rps"] == 85000.0
    assert sc["unreached_rps"] == 0.0
    assert sc["to"] == [{"site": "AKL", "rps": 85000.0, "share": 1.0}]
    total = sum(f["share"] for f in sc["to"]) + sc["unreached_rps"] / sc["failed_rps"]
    assert total == pytest.approx(1.0)
    (r,) = sc["receivers"]
    assert r["site"] == "AKL"
    assert r["cpu_after"] > r["cpu_before"]
    assert r["capacity"] == r["capacity_before"] == 16 * 64000
    assert r["overloaded"] is False
    assert sc["excess_cpu"] == 0.0


def test_site_lower_case_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_json(["predict", "-t", TINY, "--site", "chc"], capsys) == run_json(
        ["predict", "-t", TINY, "--site", "CHC"], capsys
    )


def test_two_sites_are_a_pair(capsys: pytest.CaptureFixture[str]) -> None:
    sc = run_json(["predict", "-t", TINY, "--site", "CHC", "--site", "AKL"], capsys)
    assert sc["kind"] == "pair"
    assert sc["name"] == "CHC+AKL"
    assert sorted(sc["failed"]) == ["AKL", "CHC"]
    assert [f["site"] for f in sc["to"]] == ["IAD"]
    assert sc["to"][0]["share"] == 1.0
    # the order on the command line does not matter
    again = run_json(["predict", "-t", TINY, "--site", "AKL", "--site", "CHC"], capsys)
    assert again == sc


def test_section_on_an_mcp_site(capsys: pytest.CaptureFixture[str]) -> None:
    sc = run_json(["predict", "-t", TINY, "--section", "IAD02"], capsys)
    assert sc["kind"] == "section"
    assert sc["section"] == "IAD02"
    assert sc["failed"] == []
    assert sc["to"] == []
    assert sc["failed_rps"] == 0.0
    (r,) = sc["receivers"]
    assert r["site"] == "IAD"
    assert r["capacity_before"] == 2 * 40 * 96000
    assert r["capacity"] == 40 * 96000


def test_section_table(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(["predict", "-t", TINY, "--section", "IAD02"], capsys)
    assert rc == 0, err
    assert "section IAD02 fails" in out
    assert "IAD" in out


def test_site_table(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(["predict", "-t", TINY, "--site", "CHC"], capsys)
    assert rc == 0, err
    assert "CHC withdraws" in out
    assert "100.0 %" in out
    assert "AKL" in out


def test_all_writes_a_loadable_atlas(atlas_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = atlas_file.parent / "again.json"
    summary = run_json(["predict", "-t", TINY, "--all", "--out", str(f)], capsys)
    assert summary["scenarios"] == 9
    assert summary["by_kind"] == {"single": 3, "pair": 3, "region": 1, "section": 2}
    assert summary["prefix"] == "198.51.100.0/24"
    atlas = Atlas.load(f)
    assert len(atlas.scenarios) == summary["scenarios"]
    assert atlas.data.sites == ["CHC", "AKL", "IAD"]
    assert atlas.data.k == 5
    assert atlas.data.mode == "metro"
    assert [sc.name for sc in atlas.scenarios] == [
        "CHC",
        "AKL",
        "IAD",
        "CHC+AKL",
        "CHC+IAD",
        "AKL+IAD",
        "CHC+AKL+IAD",
        "IAD01",
        "IAD02",
    ]
    assert f.read_text(encoding="utf-8") == atlas_file.read_text(encoding="utf-8")


def test_all_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "atlas.json"
    rc, out, err = run(["predict", "-t", TINY, "--all", "--out", str(f)], capsys)
    assert rc == 0, err
    assert "failover atlas of 198.51.100.0/24: 9 scenarios" in out
    assert f"atlas written to {f}" in out
    assert Atlas.load(f).data.sites == ["CHC", "AKL", "IAD"]


def test_all_in_as_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "as.json"
    summary = run_json(
        ["predict", "-t", TINY, "--all", "--mode", "as", "--k", "1", "--out", str(f)], capsys
    )
    # k = 1: CHC+AKL, AKL+CHC (the same pair) and IAD+AKL; no region beyond the pairs
    assert summary["by_kind"] == {"single": 3, "pair": 2, "section": 2}
    atlas = Atlas.load(f)
    assert (atlas.data.mode, atlas.data.k) == ("as", 1)
    assert [sc.name for sc in atlas.scenarios if sc.kind == "pair"] == ["CHC+AKL", "AKL+IAD"]


@pytest.mark.parametrize(
    "what",
    [
        ["--site", "CHC"],
        ["--site", "chc"],
        ["--site", "AKL", "--site", "CHC"],
        ["--site", "CHC", "--site", "AKL", "--site", "IAD"],
        ["--section", "IAD02"],
        ["--section", "iad02"],
    ],
)
def test_atlas_gives_what_is_computed(
    atlas_file: Path, what: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    direct = run_json(["predict", "-t", TINY, *what], capsys)
    read = run_json(["predict", "--atlas", str(atlas_file), *what], capsys)
    assert read == direct


def test_prefix_option(capsys: pytest.CaptureFixture[str]) -> None:
    # the IPv6 prefix is announced by AKL and IAD only: CHC has nothing to lose
    sc = run_json(["predict", "-t", TINY, "--prefix", "2001:db8::/48", "--site", "CHC"], capsys)
    assert sc["failed_rps"] == 0.0
    assert sc["to"] == []
    sc = run_json(["predict", "-t", TINY, "--prefix", "2001:db8::/48", "--site", "AKL"], capsys)
    assert sc["failed_rps"] > 0
    assert [f["site"] for f in sc["to"]] == ["IAD"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-t", TINY, "--site", "XYZ"], "--site: unknown site 'XYZ'"),
        (["-t", TINY, "--site", "CHC", "--site", "XYZ"], "unknown site 'XYZ'"),
        (["-t", TINY, "--section", "IAD09"], "--section: unknown section 'IAD09'"),
        (["-t", TINY, "--section", "IAD02", "--site", "CHC"], "--section"),
        (["-t", TINY, "--all", "--site", "CHC"], "give either --all"),
        (["-t", TINY, "--all", "--section", "IAD02"], "give either --all"),
        (["-t", TINY], "give either --all"),
        (["-t", TINY, "--site", "CHC", "--k", "-1"], "--k: must be 0 or more"),
        (["-t", TINY, "--all", "--k", "-1"], "--k: must be 0 or more"),
        (["-t", TINY, "--all", "--jobs", "0"], "--jobs: must be at least 1"),
        (["-t", TINY, "--site", "CHC", "--prefix", "10.0.0.0/8"], "is not one of the topology"),
        (["-t", TINY, "--site", "CHC", "--prefix", "nonsense"], "not a prefix"),
        (["-t", "no-such-topology.yaml", "--site", "CHC"], "no-such-topology.yaml"),
    ],
)
def test_bad_input(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(["predict", *args], capsys)
    assert rc == 2
    assert out == ""
    assert err.startswith("anyedge: error: ")
    assert message in err
    assert "Traceback" not in err


def test_bad_atlas_input(
    atlas_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.json"
    rc, _, err = run(["predict", "--atlas", str(missing), "--site", "CHC"], capsys)
    assert rc == 2
    assert err.startswith(f"anyedge: error: {missing}: cannot read")
    rc, _, err = run(["predict", "--atlas", str(atlas_file), "--site", "XYZ"], capsys)
    assert rc == 2
    assert err == f"anyedge: error: {atlas_file}: scenarios: the atlas has no scenario XYZ\n"
    rc, _, err = run(["predict", "--atlas", str(atlas_file), "--section", "IAD09"], capsys)
    assert rc == 2
    assert "the atlas has no scenario IAD09" in err
    rc, _, err = run(["predict", "--atlas", str(atlas_file), "--all"], capsys)
    assert rc == 2
    assert "--atlas" in err
    # an atlas of singles only has no pair
    singles = tmp_path / "singles.json"
    assert main(["predict", "-t", TINY, "--all", "--k", "0", "--out", str(singles), "--json"]) == 0
    capsys.readouterr()
    assert {sc.kind for sc in Atlas.load(singles).scenarios} == {"single", "section"}
    rc, _, err = run(["predict", "--atlas", str(singles), "--site", "CHC", "--site", "AKL"], capsys)
    assert rc == 2
    assert "the atlas has no scenario AKL+CHC" in err
    assert "Traceback" not in err
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2", encoding="utf-8")
    rc, _, err = run(["predict", "--atlas", str(bad), "--site", "CHC"], capsys)
    assert rc == 2
    assert err.startswith(f"anyedge: error: {bad}:1: not valid JSON")


def test_out_in_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "no-such-dir" / "atlas.json"
    rc, out, err = run(["predict", "-t", TINY, "--all", "--out", str(f), "--json"], capsys)
    assert rc == 2
    assert out == ""
    assert err.startswith(f"anyedge: error: {f}: --out: its directory does not exist")


def test_out_is_checked_before_the_atlas_is_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run(["predict", "-t", TINY, "--all", "--out", str(tmp_path), "--json"], capsys)
    assert rc == 2
    assert "--out: is a directory" in err
    rc, _, err = run(
        ["predict", "-t", TINY, "--site", "CHC", "--out", str(tmp_path / "a.json")], capsys
    )
    assert rc == 2
    assert "--out goes with --all" in err


def test_single_section_site_is_a_site_failure(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["predict", "-t", TINY, "--section", "CHC01"], capsys)
    assert rc == 2
    assert "CHC01 is the only section of CHC" in err


def test_atlas_for_another_prefix_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "atlas.json"
    assert run(["predict", "-t", TINY, "--all", "--out", str(f), "--json"], capsys)[0] == 0
    rc, _, err = run(
        ["predict", "--atlas", str(f), "--site", "CHC", "--prefix", "2001:db8::/48"], capsys
    )
    assert rc == 2
    assert "this atlas is for 198.51.100.0/24" in err
    rc, _, err = run(["predict", "--atlas", str(f), "--site", "CHC", "-t", TINY], capsys)
    assert rc == 2
    assert "do not go with --atlas" in err


def test_default_world_christchurch_goes_to_auckland(capsys: pytest.CaptureFixture[str]) -> None:
    sc = run_json(["predict", "--site", "CHC"], capsys)
    assert sc["name"] == "CHC"
    assert sc["failed_rps"] > 0
    first = sc["to"][0]
    assert first["site"] == "AKL"
    assert first["share"] > 0.99
    assert [f["rps"] for f in sc["to"]] == sorted((f["rps"] for f in sc["to"]), reverse=True)
