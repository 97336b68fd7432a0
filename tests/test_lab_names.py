"""Names in the lab: interface names the topology leaves out are generated (a node's k-th
link is eth<k>), and `lab probe --client` chooses clients by name or glob.

The three-site lab names every interface as the rule would, so it must read the same
with every name left out, and with some left out; and the lab's plan (addresses,
interfaces the daemons use) is then the same too.  A clash is in test_files_errors.py.
"""

from __future__ import annotations

import re
from pathlib import Path

from anyedge.lab.plan import make_plan
from anyedge.model.files.topology import load_world, parse_world

LAB3 = Path(__file__).parent / "data" / "lab3.yaml"


def test_names_left_out_are_the_ones_lab3_gives() -> None:
    text = LAB3.read_text()
    bare = re.sub(r'"([a-z0-9]+):eth[0-9]+"', r'"\1"', text)
    assert bare != text
    assert ":eth" not in bare.split("links:")[1]
    given, generated = load_world(LAB3), parse_world(bare, "bare.yaml")
    assert generated.lab == given.lab
    assert make_plan(generated) == make_plan(given)


def test_given_and_generated_names_mix() -> None:
    text = LAB3.read_text()
    # leave out isp1's names only (its links are its 1st to 4th: eth1 to eth4), and
    # rename one of chc's by hand to something the rule would never give
    mixed = re.sub(r'"isp1:eth[0-9]"', '"isp1"', text).replace('"chc:eth2"', '"chc:bb0"')
    lab = parse_world(mixed, "mixed.yaml").lab
    ends = {e for k in lab.links for e in (k.a, k.b)}
    assert {("isp1", f"eth{i}") for i in range(1, 5)} <= ends
    assert ("chc", "bb0") in ends
    assert ("chc", "eth1") in ends


def test_probe_chooses_clients_by_name_or_glob() -> None:
    from anyedge.lab.measure import choose_clients

    plan = make_plan(load_world(LAB3))
    assert choose_clients(plan, ["c2"]) == (["c2"], [])
    assert choose_clients(plan, ["c*"]) == (["c1", "c2"], [])
    assert choose_clients(plan, ["c2", "c1", "c?"]) == (["c1", "c2"], [])  # the lab's order
    chosen, bad = choose_clients(plan, ["c1", "c9", "isp1", "x*"])
    assert chosen == ["c1"]
    assert bad == ["no client 'c9'", "isp1 is a router, not a client", "no client 'x*'"]
