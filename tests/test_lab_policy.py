"""MEDs and communities, for real: the model and the lab's daemons agree on catchments
that only the MED and the communities explain.

``tests/data/lab3-policy.yaml`` is the three-site lab with CHC buying transit from isp3
too, sending it MED 50 where SYD (GoBGP) sends MED 10; CHC (FRR) tags its route to isp1
with isp1's action community "not to your peers" (65001:990), AKL (BIRD) tags its
route to isp2 NO_EXPORT; client c3 sits behind isp3.  The routers must hold what the
sites sent (MEDs, communities), and ``lab compare`` must agree client for client with
each site withdrawn in turn — where c3 lands in SYD by the MED, c2 without AKL in SYD
(isp1 keeps CHC's route from its peer isp2), c1 without CHC in SYD (isp2 keeps AKL's
route to itself) — and the same lab without MEDs and communities would put each of
them elsewhere, in the model.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from anyedge.cli.main import main
from anyedge.lab.compare import predicted
from anyedge.model.files.topology import parse_world
from lab_support import DATA, RunningLab, bgp_paths, running_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PREFIX = "198.51.100.0/24"
TOPOLOGY = DATA / "lab3-policy.yaml"


@pytest.fixture(scope="module")
def lab() -> RunningLab:  # type: ignore[misc]
    with running_lab(TOPOLOGY, prefix="po") as lab:
        yield lab


def paths(lab: RunningLab, router: str) -> dict[str, dict[str, Any]]:
    """``router``'s bgpd's paths for the anycast prefix, by the neighbour node."""
    return bgp_paths(lab, router, PREFIX)


def test_routers_hold_what_each_session_sent(lab: RunningLab) -> None:
    isp3 = paths(lab, "isp3")
    assert isp3["chc"].get("metric") == 50
    assert isp3["syd"].get("metric") == 10
    assert isp3["syd"].get("bestpath", {}).get("overall") is True  # the lower MED
    isp1 = paths(lab, "isp1")
    assert "65001:990" in isp1["chc"]["community"]["string"]
    isp2 = paths(lab, "isp2")
    assert "no-export" in isp2["akl"]["community"]["string"]
    assert "akl" not in paths(lab, "isp1")  # NO_EXPORT: isp2 gave it to nobody


def test_compare_agrees_where_meds_and_communities_decide(
    lab: RunningLab, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["lab", "compare", "--dir", str(lab.directory), "--flows", "5", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, [r for r in out["rows"] if not r["agree"]]
    got = {(r["scenario"], r["client"]): r["lab"] for r in out["rows"]}
    assert len(got) == 12
    assert got[("baseline", "c3")] == "SYD"
    assert got[("without AKL", "c2")] == "SYD"
    assert got[("without CHC", "c1")] == "SYD"

    # the same lab with no MED and no community would send each of them elsewhere
    bare = re.sub(r", (med: \d+|communities: \[[a-z-]+\])", "", TOPOLOGY.read_text())
    plain = parse_world(bare, "plain.yaml")
    assert predicted(plain)["c3"] == "CHC"
    assert predicted(plain, ("AKL",))["c2"] == "CHC"
    assert predicted(plain, ("CHC",))["c1"] == "AKL"
