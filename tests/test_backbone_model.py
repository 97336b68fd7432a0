"""The backbone in the model: the default world's backbone, the topology YAML's
``backbone:`` and ``origins:`` (errors with file, line and place, exit 2), round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from anyedge.cli.main import main
from anyedge.model import FIBRE_KM_PER_MS, World, great_circle_km
from anyedge.model.files import TOPOLOGY_FILE, load_world, parse_world, save_world

TINY = (Path(__file__).parent / "data" / "tiny.yaml").read_text(encoding="utf-8")
BACKBONE = """\
backbone:
  route_factor: 1.5
  links:
    - {sites: [CHC, AKL], capacity_gbps: 100}
    - {sites: [AKL, IAD], km: 14000, capacity_gbps: 400}
  transit_detour: {CHC: 1.2}
origins:
  - {name: nz-web, city: Wellington, country: NZ, lat: -41.29, lon: 174.78}
  - {name: us-api, city: Ashburn, country: US, lat: 39.04, lon: -77.49}
"""


def test_default_world_has_a_connected_backbone(default_world: World) -> None:
    bb, sites = default_world.backbone, default_world.network.sites
    n, links = len(sites), bb.links
    graph = coo_matrix((links.km, (links.a, links.b)), shape=(n, n))
    assert connected_components(graph, directed=False)[0] == 1
    gc = great_circle_km(
        sites.lat[links.a], sites.lon[links.a], sites.lat[links.b], sites.lon[links.b]
    )
    assert np.all(links.km >= gc)  # fibre is never shorter than the great circle
    assert np.all(links.km <= 1.5 * gc + 1.0)
    code = sites.code
    pairs = {frozenset((code[a], code[b])) for a, b in zip(links.a, links.b, strict=True)}
    # the post's long-haul routes: Lisbon-Johannesburg, the AAE-1 corridor, transatlantic
    for a, b in (("LIS", "JNB"), ("MRS", "SIN"), ("LHR", "EWR")):
        assert frozenset((a, b)) in pairs, (a, b)
    assert len(bb.origins) >= 10
    assert bb.detour(n)[code.index("JNB")] > bb.detour(n)[code.index("AMS")] == 1.0


def test_default_world_backbone_round_trips(default_world: World, tmp_path: Path) -> None:
    again = load_world(save_world(default_world, tmp_path))
    assert again.backbone == default_world.backbone


def test_topology_backbone_and_origins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    world = parse_world(TINY + BACKBONE)
    bb, code = world.backbone, world.network.sites.code
    chc, akl = code.index("CHC"), code.index("AKL")
    links = bb.links
    assert len(links) == 2
    assert bb.origins.name == ("nz-web", "us-api")
    row = int(np.flatnonzero((links.a == min(chc, akl)) & (links.b == max(chc, akl)))[0])
    s = world.network.sites
    gc = float(great_circle_km(s.lat[chc], s.lon[chc], s.lat[akl], s.lon[akl]))
    assert links.km[row] == pytest.approx(1.5 * gc)
    assert links.latency_ms[row] == pytest.approx(1.5 * gc / FIBRE_KM_PER_MS)
    assert 14000.0 in links.km.tolist()
    assert bb.detour(3)[chc] == 1.2
    assert bb.detour(3)[akl] == 1.0
    # through `anyedge world --out` and back
    src = tmp_path / "in.yaml"
    src.write_text(TINY + BACKBONE, encoding="utf-8")
    assert main(["world", "-t", str(src), "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert load_world(tmp_path / "out" / TOPOLOGY_FILE) == world


# (text in BACKBONE, what replaces it, place, words in the message); the line
# expected is the one the replaced text is on
BAD = [
    (
        "{sites: [CHC, AKL], capacity_gbps: 100}",
        "{sites: [CHC, XYZ], capacity_gbps: 100}",
        "backbone.links[0].sites[1]",
        "unknown site XYZ",
    ),
    (
        "{sites: [CHC, AKL], capacity_gbps: 100}",
        "{sites: [CHC, CHC], capacity_gbps: 100}",
        "backbone.links[0].sites",
        "two different sites",
    ),
    (
        "{sites: [AKL, IAD], km: 14000",
        "{sites: [AKL, CHC], km: 14000",
        "backbone.links[1].sites",
        "already linked",
    ),
    ("km: 14000", "km: -3", "backbone.links[1].km", "greater than 0"),
    (
        "capacity_gbps: 100}",
        "capacity_gbps: 100, colour: red}",
        "backbone.links[0].colour",
        "unknown field",
    ),
    ("{CHC: 1.2}", "{CHC: 0.5}", "backbone.transit_detour.CHC", "greater than or equal to 1"),
    ("name: us-api", "name: nz-web", "origins[1].name", "already defined"),
    ("country: US", "country: XX", "origins[1].country", "unknown ISO country"),
]


@pytest.mark.parametrize(
    ("old", "new", "place", "words"), BAD, ids=[b[2] + ":" + b[3] for b in BAD]
)
def test_bad_backbone_exits_2_naming_file_line_place(
    old: str,
    new: str,
    place: str,
    words: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert BACKBONE.count(old) == 1
    path = tmp_path / TOPOLOGY_FILE
    path.write_text(TINY + BACKBONE.replace(old, new), encoding="utf-8")
    out_dir = tmp_path / "out"
    rc = main(["world", "-t", str(path), "--out", str(out_dir)])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    first = TINY.count("\n") + 1  # the line `backbone:` is on
    lnum = first + BACKBONE[: BACKBONE.index(old)].count("\n")
    head = f"anyedge: error: {path}:{lnum}: {place}: "
    assert any(ln.startswith(head) and words in ln for ln in err.splitlines()), (head, err)
    assert not out_dir.exists()  # nothing half-written
