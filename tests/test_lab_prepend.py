"""Prepends per session, for real: the model and the lab's daemons agree on a catchment
that only a per-session prepend explains.

``tests/data/lab3-prepend.yaml`` is the three-site lab with SYD (GoBGP) buying transit
from isp1 as well, CHC (FRR) prepending once towards isp1, AKL (ExaBGP) once towards
isp2 and SYD twice towards isp3 only.  The routers must hear exactly the AS paths the
model gives each session (isp1: CHC's of 2, SYD's of 1; isp2: AKL's of 2; isp3: SYD's
of 3 direct), c1 must land in SYD (it would stay on
CHC were SYD's prepend per site), and ``lab compare`` must agree client for client with
each site withdrawn in turn.  The same lab checks ``lab probe --client``.
"""

from __future__ import annotations

import json

import pytest

from anyedge.cli.main import main
from anyedge.lab.compare import predicted
from lab_support import DATA, RunningLab, bgp_paths, running_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PREFIX = "198.51.100.0/24"


@pytest.fixture(scope="module")
def lab() -> RunningLab:  # type: ignore[misc]
    with running_lab(DATA / "lab3-prepend.yaml", prefix="pp") as lab:
        yield lab


def paths_heard(lab: RunningLab, router: str) -> dict[str, list[int]]:
    """The AS paths ``router``'s bgpd holds for the anycast prefix, by neighbour node."""
    return {
        node: [int(a) for a in p["aspath"]["string"].split()]
        for node, p in bgp_paths(lab, router, PREFIX).items()
    }


def test_each_router_hears_its_session_s_prepend(lab: RunningLab) -> None:
    isp1 = paths_heard(lab, "isp1")
    assert isp1["chc"] == [64500, 64500]  # FRR's outbound route map, once more
    assert isp1["syd"] == [64500]  # SYD prepends towards isp3 only
    assert paths_heard(lab, "isp2")["akl"] == [64500, 64500]  # ExaBGP's path for isp2 alone
    isp3 = paths_heard(lab, "isp3")
    assert isp3["syd"] == [64500, 64500, 64500]  # GoBGP's policy for that neighbour
    assert isp3["isp1"] == [65001, 64500]  # isp1's best: SYD's short path


def test_compare_agrees_where_a_session_prepend_moves_a_client(
    lab: RunningLab, capsys: pytest.CaptureFixture[str]
) -> None:
    assert predicted(lab.world) == {"c1": "SYD", "c2": "AKL"}
    rc = main(["lab", "compare", "--dir", str(lab.directory), "--flows", "5", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, [r for r in out["rows"] if not r["agree"]]
    got = {(r["scenario"], r["client"]): r["lab"] for r in out["rows"]}
    assert got[("baseline", "c1")] == "SYD"
    assert got[("without SYD", "c1")] == "CHC"
    assert got[("without AKL", "c2")] == "SYD"  # over isp1's peering: SYD's short path


def test_probe_chooses_its_clients(lab: RunningLab, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--dir", str(lab.directory)]
    assert main(["lab", "probe", *d, "--client", "c2", "--flows", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["c2"]
    assert out["c2"]["answers"] == {"AKL": 3}
    assert main(["lab", "probe", *d, "--client", "c*", "--flows", "3", "--json"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)) == ["c1", "c2"]
    assert main(["lab", "probe", *d, "--client", "c1", "--client", "c9", "--client", "isp2"]) == 2
    err = capsys.readouterr().err
    assert "--client" in err
    assert "no client 'c9'" in err
    assert "isp2 is a router, not a client" in err
