"""``anyedge catchment`` from the command line: tables, JSON, knobs and bad input."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from anyedge.cli.main import main
from anyedge.model.files import format_as_rel
from anyedge.model.worldgen.asgraph import caida_like

TINY = Path(__file__).parent / "data" / "tiny.yaml"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_table_on_a_topology(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(["catchment", "-t", str(TINY)], capsys)
    assert rc == 0, err
    assert "catchment of 198.51.100.0/24" in out
    for code in ("CHC", "AKL"):
        assert code in out


def test_json_shares_and_withdraw(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["catchment", "-t", str(TINY), "--json"], capsys)
    assert rc == 0
    base = json.loads(out)
    assert base["mode"] == "metro"
    assert sum(r["share"] for r in base["sites"]) == pytest.approx(1.0)
    rc, out, _ = run(["catchment", "-t", str(TINY), "--withdraw", "CHC", "--json"], capsys)
    assert rc == 0
    after = {r["site"]: r["share"] for r in json.loads(out)["sites"]}
    assert "CHC" not in after or after["CHC"] == 0.0
    assert sum(after.values()) == pytest.approx(1.0)


def test_full_json_has_paths_ending_in_our_asn(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["catchment", "-t", str(TINY), "--json", "--full"], capsys)
    assert rc == 0
    data = json.loads(out)
    assert {r["asn"] for r in data["ases"]} == {1001, 2001, 10001, 10002}
    assert all(r["path"][-1] == 64500 for r in data["eyeballs"] if r["site"])
    assert {r["metro"] for r in data["metros"]} == {2192362, 2193733}


def test_address_picks_the_covering_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["catchment", "-t", str(TINY), "--address", "2001:db8::1", "--json"], capsys)
    assert rc == 0
    data = json.loads(out)
    assert data["prefix"] == "2001:db8::/48"
    assert "CHC" not in data["announced"]  # the IPv6 prefix is announced by AKL and IAD only


@pytest.mark.parametrize(
    ("args", "place"),
    [
        (["--withdraw", "XXX"], "--withdraw: unknown site 'XXX'"),
        (["--prepend", "CHC"], "--prepend: expected NAME=N"),
        (["--prefix", "10.0.0.0/8"], "--prefix: 10.0.0.0/8 is not one of"),
        (["--address", "not-an-ip"], "--address: not an IP address"),
        (["--address", "10.1.2.3"], "--address: no prefix covers"),
        (["--origin", "5"], "--origin: --origin goes with --as-rel"),
    ],
)
def test_bad_knobs_exit_2(args: list[str], place: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(["catchment", "-t", str(TINY), *args], capsys)
    assert rc == 2
    assert out == ""
    assert place in err
    assert "Traceback" not in err


def test_as_rel_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g = caida_like(500, seed=2)
    path = tmp_path / "g.as-rel"
    path.write_text(format_as_rel(g.internet(), source="bgp"), encoding="utf-8")
    rc, out, err = run(
        [
            "catchment",
            "--as-rel",
            str(path),
            "--origin",
            "400",
            "--origin",
            "450",
            "--json",
            "--full",
        ],
        capsys,
    )
    assert rc == 0, err
    data = json.loads(out)
    assert data["ases"] == 500
    assert sum(o["ases"] for o in data["origins"]) + data["unreached_ases"] == 500
    routes = {r["asn"]: r for r in data["routes"]}
    assert routes[400]["relation"] == "origin"
    assert routes[400]["path"] == [400]
    rc, out, _ = run(
        [
            "catchment",
            "--as-rel",
            str(path),
            "--origin",
            "400",
            "--origin",
            "450",
            "--withdraw",
            "450",
            "--json",
        ],
        capsys,
    )
    assert rc == 0
    assert [o["asn"] for o in json.loads(out)["origins"]] == [400]
    rc, _, err = run(["catchment", "--as-rel", str(path), "--origin", "99999"], capsys)
    assert rc == 2
    assert "AS99999 is not in" in err
    rc, _, err = run(
        ["catchment", "--as-rel", str(path), "--origin", "400", "--mode", "metro"], capsys
    )
    assert rc == 2
    assert "only --mode as" in err


def test_as_rel_with_a_provider_loop_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "loop.as-rel"
    path.write_text("# loop\n1|2|-1\n2|3|-1\n3|1|-1\n", encoding="utf-8")
    rc, _, err = run(["catchment", "--as-rel", str(path), "--origin", "1"], capsys)
    assert rc == 2
    assert f"{path}:" in err
    assert "provider loop" in err


def test_prepend_is_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(["catchment", "-t", str(TINY), "--prepend", "CHC=300"], capsys)
    assert out == ""
    assert rc == 2
    assert "--prepend: at most 32 prepends, got 300" in err
    g = caida_like(200, seed=2)
    path = tmp_path / "g.as-rel"
    path.write_text(format_as_rel(g.internet()), encoding="utf-8")
    rc, _, err = run(
        [
            "catchment",
            "--as-rel",
            str(path),
            "--origin",
            "150",
            "--prepend",
            "150=99999999999999999999",
        ],
        capsys,
    )
    assert rc == 2
    assert "at most 32 prepends" in err


def test_link_down_and_site_down(capsys: pytest.CaptureFixture[str]) -> None:
    """AS10002's users reach CHC through their provider AS2001 (CHC's and AKL's
    transit, which picks CHC on the tie-break); with CHC's transit session down they go
    to AKL, while AS10001's stay on CHC over its peering.  CHC cut off is CHC withdrawn."""
    base = ["catchment", "-t", str(TINY), "--json", "--mode", "as"]
    rc, out, _ = run(base, capsys)
    before = {r["site"]: r["rps"] for r in json.loads(out)["sites"]}
    rc, out, err = run([*base, "--link-down", "CHC-2001", "--link-down", "2001-10001"], capsys)
    assert rc == 0, err
    data = json.loads(out)
    assert data["faults"] == {"links_down": ["CHC-2001", "2001-10001"], "sites_down": []}
    after = {r["site"]: r["rps"] for r in data["sites"]}
    assert before == {"CHC": 85000.0, "AKL": 0.0, "IAD": 0.0}
    assert after == {"CHC": 80000.0, "AKL": 5000.0, "IAD": 0.0}
    assert {r["site"] for r in data["change"]} == {s for s in after if after[s] != before.get(s)}
    rc, out, _ = run([*base, "--site-down", "chc"], capsys)
    cut = json.loads(out)
    assert cut["faults"]["sites_down"] == ["CHC"]
    rc, out, _ = run([*base, "--withdraw", "CHC"], capsys)
    gone = json.loads(out)
    assert {r["site"]: r["rps"] for r in cut["sites"] if r["rps"]} == {"AKL": 85000.0}
    assert {r["site"]: r["rps"] for r in gone["sites"] if r["rps"]} == {"AKL": 85000.0}
    rc, out, _ = run(["catchment", "-t", str(TINY), "--link-down", "CHC-10001"], capsys)
    assert rc == 0
    assert "with CHC-10001 down" in out


def test_faults_that_do_not_fit_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(
        ["catchment", "-t", str(TINY), "--link-down", "CHC-1001", "--site-down", "SYD"], capsys
    )
    assert rc == 2
    assert out == ""
    assert "--link-down: site CHC has no session with AS1001" in err
    assert "--site-down: unknown site 'SYD'" in err


def test_as_rel_link_down_equals_the_graph_without_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a bare CAIDA graph, --link-down gives every AS the route it has in the same
    file without that line."""
    g = caida_like(300, seed=4)
    text = format_as_rel(g.internet(), source="bgp")
    path = tmp_path / "g.as-rel"
    path.write_text(text, encoding="utf-8")
    base = ["catchment", "--as-rel", "--origin", "250", "--origin", "280", "--json", "--full"]
    rc, out, _ = run([*base[:2], str(path), *base[2:]], capsys)
    before = json.loads(out)["routes"]
    # the link the most routes to origin 250 cross, between two ASes that have others
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    degree = Counter(a for ln in lines for a in ln.split("|")[:2])
    hops = Counter(
        frozenset(map(str, r["path"][i : i + 2]))
        for r in before
        if r["origin"] == 250
        for i in range(len(r["path"]) - 1)
    )
    pair = next(p for p, _ in hops.most_common() if all(degree[x] > 1 for x in p))
    a, b = sorted(pair)
    line = next(ln for ln in lines if set(ln.split("|")[:2]) == set(pair))
    cut = tmp_path / "cut.as-rel"
    cut.write_text(text.replace(line + "\n", ""), encoding="utf-8")
    rc, out, err = run([*base[:2], str(path), *base[2:], "--link-down", f"AS{a}-{b}"], capsys)
    assert rc == 0, err
    faulted = json.loads(out)
    assert faulted["faults"]["links_down"] == [f"AS{a}-{b}"]
    rc, out, _ = run([*base[:2], str(cut), *base[2:]], capsys)
    assert faulted["routes"] == json.loads(out)["routes"]
    assert faulted["routes"] != before
    rc, _, err = run([*base[:2], str(path), *base[2:], "--link-down", "250-99999"], capsys)
    assert rc == 2
    assert "AS99999 is not in the graph" in err
