"""Prepends per session, without root: the topology's ``prepend`` (a site's, by the
neighbour's ASN; a lab link's), the routing engine's AS-path lengths, and what each
site speaker's configuration says for a session with a prepend of its own.

The real daemons are in test_lab_prepend.py; bad input in test_files_errors.py.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np

from anyedge.adapters.bgp.base import Neighbor, Route, SpeakerConfig
from anyedge.adapters.bgp.bird import render_bird_conf
from anyedge.adapters.bgp.exabgp import announce_lines
from anyedge.adapters.bgp.frr import site_config
from anyedge.adapters.bgp.gobgp import render_gobgp_toml
from anyedge.lab.plan import client_names, lab_world
from anyedge.model.files.topology import load_world, parse_world, save_world
from anyedge.routing import Announcement, Mode, Router, Seeds

DATA = Path(__file__).parent / "data"
PREFIX = "198.51.100.0/24"


def test_the_lab_model_carries_each_session_s_prepend() -> None:
    model = lab_world(load_world(DATA / "lab3-prepend.yaml"))
    ses, codes = model.network.sessions, model.network.sites.code
    got = {
        (codes[int(s)], int(a)): int(p)
        for s, a, p in zip(ses.site, ses.asn, ses.prepend, strict=True)
    }
    assert got == {
        ("CHC", 65001): 1,
        ("AKL", 65002): 1,
        ("SYD", 65001): 0,
        ("SYD", 65003): 2,
    }


def test_the_neighbour_sees_the_longer_path(tmp_path: Path) -> None:
    model = lab_world(load_world(DATA / "lab3-prepend.yaml"))
    ann = Announcement.everywhere(len(model.network.sites))
    seeds = Seeds.of_world(model, ann.with_prepend(0, 1))  # CHC prepends once for all
    asn = model.internet.asn[seeds.at]
    length = {
        (int(o), int(a)): int(n) for o, a, n in zip(seeds.origin, asn, seeds.length, strict=True)
    }
    # the AS that holds the seed, then anyedge's ASN once, per prefix and per session
    assert length == {(0, 65001): 4, (1, 65002): 3, (2, 65001): 2, (2, 65003): 4}

    c = Router(model, Mode.AS).catchment()
    metro = model.internet.metros.id
    clients = client_names(load_world(DATA / "lab3-prepend.yaml"))
    paths = {
        clients[int(metro[model.internet.eyeballs.metro[e]]) - 1]: c.eyeball_path(e)
        for e in range(len(model.internet.eyeballs))
    }
    assert paths == {"c1": [65001, 64500], "c2": [65002, 64500, 64500]}

    # a topology's own sites carry it too, and save and load keep it
    saved = save_world(model, tmp_path / "w")
    again = load_world(saved)
    assert np.array_equal(again.network.sessions.prepend, model.network.sessions.prepend)


def test_a_site_prepend_in_the_topology_file() -> None:
    text = (DATA / "tiny.yaml").read_text()
    assert "    transit: [2001, 1001]\n" in text
    world = parse_world(
        text.replace(
            "    transit: [2001, 1001]\n", "    transit: [2001, 1001]\n    prepend: {1001: 3}\n"
        )
    )
    ses = world.network.sessions
    assert ses.prepend_of(1, 1001) == 3
    assert ses.prepend_of(1, 2001) == 0
    assert int(ses.prepend.sum()) == 3


def cfg(tmp_path: Path) -> SpeakerConfig:
    return SpeakerConfig(
        node="s",
        namespace="unused",
        workdir=tmp_path,
        asn=64500,
        router_id="10.0.0.7",
        neighbors=(
            Neighbor("100.64.0.1", 65001, "100.64.0.2", "eth1"),
            Neighbor("100.64.0.5", 65003, "100.64.0.6", "eth2", prepend=2),
        ),
    )


def test_frr_sends_through_a_route_map_per_session_prepend(tmp_path: Path) -> None:
    text = site_config(cfg(tmp_path), {PREFIX: Route(PREFIX, prepend=1)})
    assert "route-map SESSION-2 permit 10\n set as-path prepend 64500 64500\n" in text
    assert "  neighbor 100.64.0.1 route-map ORIGINATED out" in text
    assert "  neighbor 100.64.0.5 route-map SESSION-2 out" in text
    assert f"  network {PREFIX} route-map ORIGIN-P1" in text  # the prefix's own prepend


def test_bird_exports_through_a_filter_per_session_prepend(tmp_path: Path) -> None:
    text = render_bird_conf(cfg(tmp_path), {PREFIX: Route(PREFIX, prepend=1)})
    plain, longer = text.split("\nfilter originated_only_2\n")
    assert plain.count("bgp_path.prepend(64500);") == 1  # the prefix's own
    assert longer.split("accept;")[0].count("bgp_path.prepend(64500);") == 1 + 2
    p1, p2 = text.split("protocol bgp peer")[1:]
    assert "export filter originated_only;" in p1
    assert "export filter originated_only_2;" in p2


def test_gobgp_prepends_for_the_neighbour_set(tmp_path: Path) -> None:
    conf = tomllib.loads(render_gobgp_toml(cfg(tmp_path)))
    [ns] = conf["defined-sets"]["neighbor-sets"]
    assert ns == {"neighbor-set-name": "session-2", "neighbor-info-list": ["100.64.0.5"]}
    [policy] = conf["policy-definitions"]
    first, last = policy["statements"]
    assert first["conditions"]["match-neighbor-set"]["neighbor-set"] == "session-2"
    assert first["actions"]["bgp-actions"]["set-as-path-prepend"] == {"as": "64500", "repeat-n": 2}
    assert last["conditions"]["bgp-conditions"] == {"route-type": "local"}


def test_exabgp_announces_neighbour_by_neighbour(tmp_path: Path) -> None:
    assert announce_lines(cfg(tmp_path), Route(PREFIX, prepend=1)) == [
        f"neighbor 100.64.0.1 announce route {PREFIX} next-hop self origin igp "
        "as-path [ 64500 64500 ]",
        f"neighbor 100.64.0.5 announce route {PREFIX} next-hop self origin igp "
        "as-path [ 64500 64500 64500 64500 ]",
    ]
    plain = SpeakerConfig("s", "unused", tmp_path, 64500, "10.0.0.7", cfg(tmp_path).neighbors[:1])
    [line] = announce_lines(plain, Route(PREFIX))
    assert line.startswith("announce route")
