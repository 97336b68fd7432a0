"""``anyedge control run`` acting on a real network (marker ``lab``: root, namespaces,
real daemons): with ``actuator.kind: nft`` an overloaded site's namespace gets the
nftables forwarding table the state says, and loses it as the traffic comes back; with
``actuator.kind: speakers`` a site that cannot forward withdraws its prefix through its
real BGP speaker — FRR, BIRD, GoBGP and ExaBGP in turn, each peering with a real FRR
router — when the atlas says its users have somewhere to go, and announces it again
when the load is gone.  Telemetry comes from Debian's Prometheus."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from anyedge.adapters import netns
from anyedge.adapters.bgp.base import Neighbor, Route, SpeakerConfig
from anyedge.adapters.bgp.bird import Bird
from anyedge.adapters.bgp.exabgp import ExaBgp
from anyedge.adapters.bgp.frr import Frr, RouterNeighbor
from anyedge.adapters.bgp.gobgp import GoBgp
from lab_support import lab_directory
from service_support import Prometheus, Run, Sites, controller_yaml, free_port, wait_for
from service_support import world as sites_and_prometheus

pytestmark = pytest.mark.lab

CAPACITY = {"CHC": 1_000.0, "AKL": 2_000.0, "SYD": 4_000.0}
PREFIX = "198.51.100.0/24"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sites, Prometheus]]:
    with sites_and_prometheus(tmp_path_factory.mktemp("prom"), CAPACITY) as w:
        yield w


@pytest.fixture
def namespace() -> Iterator[str]:
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed")
    name = f"aesvc-{secrets.token_hex(3)}"
    netns.add(name)
    try:
        yield name
    finally:
        netns.remove(name)


def _nft_table(ns: str) -> str:
    p = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "list", "table", "ip", "anyedge"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return p.stdout if p.returncode == 0 else ""


def test_the_nft_actuator_forwards_in_the_sites_namespace(
    world: tuple[Sites, Prometheus], namespace: str, tmp_path: Path
) -> None:
    sites, prom = world
    sites.calm(prom.url)
    port = free_port()
    actuator = (
        "actuator:\n  kind: nft\n  ports: {free: 8001, pro: 8002, business: 8003}\n  nft:\n"
        f"    CHC: {{namespace: {namespace}, anycast: [192.0.2.1], ingress: [eth0], links: ["
        "{to: AKL, ifname: bb0, via: 100.64.0.2, index: 0}, "
        "{to: SYD, ifname: bb1, via: 100.64.0.6, index: 1}]}"
    )
    cfg = controller_yaml(tmp_path, prom.url, CAPACITY, http_port=port, actuator=actuator)
    run = Run(cfg, port)
    try:
        wait_for("two steps", lambda: run.state()["steps"] >= 2)
        assert _nft_table(namespace) == ""  # nothing decided, nothing written
        sites.load("CHC", 1.2)
        table = wait_for("CHC forwards", lambda: "jhash" in (t := _nft_table(namespace)) and t)
        assert "th dport 8001" in table  # free moves first
        assert "0x00000100" in table or "0x100" in table  # marked for the link to AKL
        assert "ip daddr 192.0.2.1" in table
        assert 'iifname "eth0"' in table
        forwards = run.state()["moves"]["forward"]
        assert {f["site"] for f in forwards} == {"CHC"}
        # the load ends: CHC takes its traffic back, step by step, until nothing is forwarded
        sites.load("CHC", 0.2)
        wait_for("CHC forwards nothing", lambda: not run.state()["moves"]["forward"], 90)
        wait_for("the rules are gone", lambda: "jhash" not in _nft_table(namespace))
    finally:
        assert run.stop() == 0, run.log()


def _atlas(path: Path) -> None:
    scenario = {
        "name": "CHC", "kind": "single", "failed": ["CHC"], "section": None,
        "failed_rps": 100.0, "unreached_rps": 0.0, "collateral_rps": 0.0,
        "to": [{"site": "SYD", "rps": 100.0, "share": 1.0}],
        "receivers": [], "excess_cpu": 0.0, "worst_utilisation": None,
    }  # fmt: skip
    path.write_text(json.dumps({
        "anyedge_atlas": 1, "prefix": PREFIX, "mode": "as", "k": 1, "sites": list(CAPACITY),
        "scenarios": [scenario], "riskiest": ["CHC"],
    }))  # fmt: skip


ROUTER_AS, SITE_AS = 65001, 64500
ROUTER_IP, SITE_IP = "100.64.0.1", "100.64.0.2"
SPEAKERS: dict[str, type[Bird | ExaBgp | Frr | GoBgp]] = {
    "frr": Frr, "bird": Bird, "gobgp": GoBgp, "exabgp": ExaBgp,
}  # fmt: skip


@pytest.fixture
def router(namespace: str) -> Iterator[tuple[Frr, str, Path]]:
    """An FRR router in a namespace of its own, peering over a veth with the site's
    namespace ``namespace`` (the site speaker's address is SITE_IP)."""
    tag = namespace.rsplit("-", 1)[1]
    ns = f"aesvr-{tag}"
    work = lab_directory()  # FRR's daemons run as frr: not pytest's 0700 directory
    netns.add(ns)
    pids: list[int] = []
    try:
        netns.veth(ns, "eth1", namespace, "eth1")
        netns.batch(ns, [f"addr add {ROUTER_IP}/30 dev eth1"])
        netns.batch(namespace, [f"addr add {SITE_IP}/30 dev eth1"])
        frr = Frr(
            SpeakerConfig("r", ns, work / "r", ROUTER_AS, "10.0.1.0", ()),
            (RouterNeighbor(Neighbor(SITE_IP, SITE_AS, ROUTER_IP, "eth1"), "customer"),),
        )
        pids += frr.start()
        yield frr, ns, work
    finally:
        netns.stop(pids)
        netns.remove(ns)
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize(
    ("kind", "actuator_kind"),
    [*((k, "speakers") for k in SPEAKERS), ("gobgp", "network")],
    ids=[*SPEAKERS, "network-gobgp"],
)
def test_the_speakers_actuator_withdraws_and_announces(
    world: tuple[Sites, Prometheus],
    namespace: str,
    router: tuple[Frr, str, Path],
    tmp_path: Path,
    kind: str,
    actuator_kind: str,
) -> None:
    """Each kind of speaker anyedge drives, started as a site runs it: the controller,
    a driver made afresh from controller.yaml, withdraws the prefix at the router and
    announces it again.  The ``network`` actuator is the same speakers with the nft
    forwarder beside them (a real site's whole network): its table is in the site's
    namespace too."""
    exe = {"frr": "vtysh", "bird": "bird", "gobgp": "gobgpd", "exabgp": "exabgp"}[kind]
    if shutil.which(exe) is None:
        pytest.skip(f"{exe} is not installed")
    sites, prom = world
    sites.calm(prom.url)
    frr, _, work = router
    site_dir = work / "chc"
    neighbor = Neighbor(ROUTER_IP, ROUTER_AS, SITE_IP, "eth1")
    speaker = SPEAKERS[kind](
        SpeakerConfig("CHC", namespace, site_dir, SITE_AS, "10.0.0.7", (neighbor,))
    )
    pids = speaker.start([Route(PREFIX)])

    def at_router() -> bool:
        out = json.loads(frr.vtysh(f"show ip bgp neighbors {SITE_IP} routes json") or "{}")
        return PREFIX in out.get("routes", {})

    try:
        wait_for(f"the router learns the prefix from {kind}", at_router)
        _atlas(tmp_path / "atlas.json")
        port = free_port()
        actuator = (
            f"actuator:\n  kind: {actuator_kind}\n  speakers:\n"
            f"    CHC: {{driver: {kind}, namespace: {namespace}, workdir: {site_dir}, "
            f"asn: {SITE_AS}, router_id: 10.0.0.7, neighbors: [{{address: {ROUTER_IP}, "
            f"asn: {ROUTER_AS}, local_address: {SITE_IP}, interface: eth1}}]}}"
        )
        if actuator_kind == "network":
            actuator += (
                "\n  ports: {free: 8001, pro: 8002, business: 8003}\n  nft:\n"
                f"    CHC: {{namespace: {namespace}, anycast: [192.0.2.1], ingress: [eth1]}}"
            )
        cfg = controller_yaml(
            tmp_path, prom.url, CAPACITY, http_port=port, actuator=actuator,
            prefix=PREFIX, atlas="atlas.json", cannot_forward=("CHC",),
        )  # fmt: skip
        run = Run(cfg, port)
        try:
            sites.load("CHC", 1.2)
            wait_for("withdrawn in the state", lambda: run.state()["moves"]["withdrawn"])
            (w,) = run.state()["moves"]["withdrawn"]
            assert (w["site"], w["prefix"], w["cpu"]) == ("CHC", PREFIX, 1_200.0)
            wait_for(f"{kind} withdrew it at the router", lambda: not at_router())
            wait_for("logged", lambda: "withdraw CHC" in run.log())
            # CHC gets servers enough for the 1,200 ms/s its prefix carried, and more
            sites.cap.labels("CHC").set(4 * CAPACITY["CHC"])
            sites.load("CHC", 0.1)
            wait_for("announced again", lambda: not run.state()["moves"]["withdrawn"], 90)
            wait_for(f"{kind} announces it again at the router", at_router)
            assert speaker.established() == 1  # the session never went down
            assert run.state()["enforce_error"] is None
            if actuator_kind == "network":
                assert "table ip anyedge" in _nft_table(namespace)
        finally:
            assert run.stop() == 0, run.log()
    finally:
        netns.stop(pids)
        sites.cap.labels("CHC").set(CAPACITY["CHC"])
