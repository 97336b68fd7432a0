"""Withdrawal through every kind of BGP speaker, measured with real probes.

``tests/data/lab4.yaml`` has four sites, one per speaker kind (FRR, BIRD, GoBGP,
ExaBGP), each the home site of one client.  Withdrawing a site's prefix through its own
speaker must move its client to the site the routing model predicts within 5 s, with
few probes lost, and announcing it again must bring the client back.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from anyedge.lab.compare import predicted
from anyedge.lab.failover import measure
from anyedge.lab.measure import dominant, probe_all
from lab_support import DATA, RunningLab, running_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

INTERVAL = 0.01  # one probe every 10 ms


@pytest.fixture(scope="module")
def lab4() -> Iterator[RunningLab]:
    with running_lab(DATA / "lab4.yaml") as lab:
        yield lab


@pytest.mark.parametrize(
    ("site", "speaker", "client"),
    [("CHC", "frr", "c1"), ("AKL", "bird", "c2"), ("SYD", "gobgp", "c3"), ("SIN", "exabgp", "c4")],
)
def test_withdrawal_moves_clients_within_5_s(
    lab4: RunningLab, site: str, speaker: str, client: str
) -> None:
    assert str(lab4.plan.site_node(site).speaker) == speaker
    assert predicted(lab4.world)[client] == site
    moved = measure(lab4.plan, lab4.directory, site, interval=INTERVAL)
    [m] = [m for m in moved if m.client == client]
    assert m.moved_to == predicted(lab4.world, (site,))[client]
    assert m.seconds is not None
    assert m.seconds < 5.0
    # probes are lost only while routes move, not before or after
    assert m.lost * INTERVAL <= m.seconds + 1.0, (m.lost, m.seconds)
    # announced again, the client is back at its site
    assert dominant(probe_all(lab4.plan, [client], flows=10)[client]) == site
