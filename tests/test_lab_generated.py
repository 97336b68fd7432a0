"""The model meets reality on generated Internets of 10 to 20 routers.

For three random lab topologies of 10, 15 and 20 routers
(:func:`anyedge.lab.generate.generate`: a tier-1 clique, transit and access routers,
sites with mixed speakers, clients behind access routers), the routing engine's
catchments must agree with real BGP client for client, with every site announcing and
with each site withdrawn in turn.  (Five, of 10, 12, 15, 18 and 20 routers, showed
nothing three do not; each costs about 30 s.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from anyedge.lab.compare import compare
from anyedge.lab.generate import generate
from anyedge.model.files.topology import dump_yaml
from lab_support import running_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]


@pytest.mark.parametrize(("seed", "routers"), [(1, 10), (3, 15), (5, 20)])
def test_model_and_lab_agree_on_a_generated_internet(
    tmp_path: Path, seed: int, routers: int
) -> None:
    topology = tmp_path / "lab.yaml"
    topology.write_text(dump_yaml(generate(seed, routers=routers, sites=4, clients=6)))
    with running_lab(topology) as lab:
        rows = compare(lab.world, lab.plan, lab.directory, flows=10)
    assert len(rows) == 6 * 5  # six clients, baseline and four withdrawals
    assert [r.to_dict() for r in rows if not r.agree] == []
    assert any(r.lab is not None for r in rows)
    # the withdrawals were not all no-ops: some client moved
    base = {r.client: r.lab for r in rows if r.scenario == "baseline"}
    assert any(r.lab != base[r.client] for r in rows if r.scenario != "baseline")
