"""Anycast DNS in the lab, health-checked: real Knot servers, real BGP speakers.

One lab (``tests/data/lab3.yaml``: CHC on FRR, AKL on BIRD, SYD on GoBGP) with
``knotd`` at every site on the anycast address, and at every site a health checker (a
DNS query to the local server every 0.2 s) and its agent (rise 2, fall 3, dead-man
timer 2 s) announcing and withdrawing the service prefix through the site's speaker.
Every test puts back what it broke, and waits until the site announces again.

Clients query with dnspython from their namespaces; the site that answers (its NSID) is
checked against the routing engine's catchment for what the sites announce now.  The
zone, published through the configuration store, reaches every site's server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from anyedge.adapters import netns, nft
from anyedge.health import Settings
from anyedge.lab import dns as ldns
from anyedge.lab import healthd, zonesync
from anyedge.lab.build import LabState, wait_converged
from anyedge.lab.compare import current_routes, predicted
from anyedge.store import EmbeddedReplica, EmbeddedWriter
from lab_support import DATA, RunningLab, running_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

SETTINGS = healthd.CheckSettings(Settings(rise=2, fall=3, deadman_s=2.0), interval=0.2, timeout=0.2)


class DnsLab:
    def __init__(self, lab: RunningLab) -> None:
        self.lab, self.plan, self.dir = lab, lab.plan, lab.directory
        self.knot = ldns.start(self.plan, self.dir)
        self.health = healthd.start(self.plan, self.dir, SETTINGS)

    def node(self, site: str) -> Any:
        return self.plan.site_node(site)

    def events(self, site: str) -> list[dict[str, Any]]:
        return healthd.events(self.dir, self.node(site))

    def wait_event(
        self, site: str, pred: Callable[[dict[str, Any]], bool], after: int
    ) -> dict[str, Any]:
        """The first event after the ``after``-th that satisfies ``pred`` (waits up to 20 s)."""
        end = time.monotonic() + 20
        while time.monotonic() < end:
            for e in self.events(site)[after:]:
                if pred(e):
                    return e
            time.sleep(0.05)
        raise AssertionError(f"{site}: no such event; events: {self.events(site)[after:]}")

    def announcing(self) -> dict[str, bool]:
        state = LabState.load(self.dir)
        return {
            str(n.site): any(p == self.plan.prefixes[0] for p, _ in state.routes.get(n.name, []))
            for n in self.plan.sites
        }

    def model(self) -> dict[str, str | None]:
        """client -> the site the routing engine names for what is announced now."""
        routes = current_routes(self.plan, LabState.load(self.dir))
        return predicted(self.lab.world, (), self.plan.prefixes[0], routes)

    def settle(self) -> None:
        wait_converged(self.plan, self.dir, timeout=30, quiet=1.0)

    def restart_server(self, site: str) -> None:
        after = len(self.events(site))
        self.knot[site] = ldns.start_site(self.plan, self.node(site), self.dir)
        self.wait_event(site, lambda e: e["announce"] and e["reason"] == "healthy", after)
        self.settle()


@pytest.fixture(scope="module")
def dnslab() -> Iterator[DnsLab]:
    with running_lab(DATA / "lab3.yaml") as lab:
        yield DnsLab(lab)


def test_each_client_is_answered_by_the_site_of_its_catchment(dnslab: DnsLab) -> None:
    want = dnslab.model()
    assert want == {"c1": "CHC", "c2": "AKL"}
    assert ldns.answering_sites(dnslab.plan) == want
    for client, site in want.items():
        ns = dnslab.plan.node(client).namespace
        answer = ldns.query(ns, dnslab.plan.service_address, "www." + ldns.ZONE)
        assert answer.rcode == "NOERROR"
        assert answer.addresses == (dnslab.plan.service_address,)
        assert answer.site == site  # NSID
        for name in ("id.server.", "hostname.bind."):
            assert ldns.chaos_identity(ns, dnslab.plan.service_address, name) == site


def test_a_dead_server_is_withdrawn_and_its_clients_answered_elsewhere(dnslab: DnsLab) -> None:
    after = len(dnslab.events("CHC"))
    netns.stop([dnslab.knot["CHC"]])
    e = dnslab.wait_event("CHC", lambda e: not e["announce"], after)
    assert (e["reason"], e["held"], e["text"]) == ("unhealthy", False, "3 checks in a row failed")
    dnslab.settle()
    assert dnslab.announcing() == {"CHC": False, "AKL": True, "SYD": True}
    want = dnslab.model()
    assert want["c1"] not in (None, "CHC")
    assert ldns.answering_sites(dnslab.plan) == want
    # back: knotd again, rise passes, CHC announces and c1 comes home
    dnslab.restart_server("CHC")
    assert dnslab.announcing()["CHC"]
    assert ldns.answering_sites(dnslab.plan) == {"c1": "CHC", "c2": "AKL"}


def test_a_flapping_service_does_not_flap_the_announcement(dnslab: DnsLab) -> None:
    """nftables drops every other query to AKL's server: checks alternate pass and fail,
    never ``fall`` (3) failures in a row, so AKL stays announced."""
    ns = dnslab.node("AKL").namespace
    address = dnslab.plan.service_address
    nft.apply(
        ns,
        "table ip dnsflap {\n  chain input {\n    type filter hook input priority 0;\n"
        f"    ip daddr {address} udp dport 53 numgen inc mod 2 == 0 counter drop\n  }}\n}}\n",
    )
    after = len(dnslab.events("AKL"))
    try:
        dropped = 0
        while dropped < 15:  # 15 failed checks, each between two that passed
            time.sleep(0.5)
            out = netns.run(ns, ["nft", "list", "table", "ip", "dnsflap"])
            dropped = int(out.split("packets ")[1].split()[0])
        assert [e for e in dnslab.events("AKL")[after:] if not e["announce"]] == []
        assert dnslab.announcing()["AKL"]
    finally:
        netns.run(ns, ["nft", "delete", "table", "ip", "dnsflap"])


def test_a_silent_checker_is_withdrawn_by_the_dead_man_timer(dnslab: DnsLab) -> None:
    after = len(dnslab.events("AKL"))
    netns.stop([dnslab.health["AKL"].checker])
    e = dnslab.wait_event("AKL", lambda e: not e["announce"], after)
    assert e["reason"] == "checker_silent"
    dnslab.settle()
    assert not dnslab.announcing()["AKL"]
    want = dnslab.model()
    assert want["c2"] not in (None, "AKL")
    assert ldns.answering_sites(dnslab.plan) == want  # AKL's server still runs: unused
    after = len(dnslab.events("AKL"))
    pid = healthd.start_checker(dnslab.plan, dnslab.dir, "AKL", SETTINGS)
    dnslab.health["AKL"] = healthd.Pids(dnslab.health["AKL"].agent, pid)
    dnslab.wait_event("AKL", lambda e: e["announce"] and e["reason"] == "healthy", after)
    dnslab.settle()
    assert ldns.answering_sites(dnslab.plan) == {"c1": "CHC", "c2": "AKL"}


def test_a_drain_withdraws_at_once_and_undrain_brings_the_site_back(dnslab: DnsLab) -> None:
    after = len(dnslab.events("SYD"))
    healthd.send(dnslab.dir, dnslab.node("SYD"), "drain")
    e = dnslab.wait_event("SYD", lambda e: not e["announce"], after)
    assert e["reason"] == "drained"
    healthd.send(dnslab.dir, dnslab.node("SYD"), "undrain")
    dnslab.wait_event("SYD", lambda e: e["announce"] and e["reason"] == "healthy", after)
    dnslab.settle()
    assert all(dnslab.announcing().values())


def test_the_last_site_is_never_withdrawn(dnslab: DnsLab) -> None:
    """Every server dies: two sites withdraw, the last one stays announced (held)."""
    marks = {s: len(dnslab.events(s)) for s in ("CHC", "AKL", "SYD")}
    netns.stop([dnslab.knot[s] for s in ("CHC", "AKL", "SYD")])
    held = []
    for s in ("CHC", "AKL", "SYD"):
        e = dnslab.wait_event(s, lambda e: not e["announce"] or e["held"], marks[s])
        if e["held"]:
            held.append((s, e["reason"], e["announce"]))
    time.sleep(1.0)  # more failed checks: the held site stays held
    assert len(held) == 1
    assert held[0][1:] == ("last_site", True)
    assert sum(dnslab.announcing().values()) == 1
    assert dnslab.announcing()[held[0][0]]
    for s in ("CHC", "AKL", "SYD"):
        dnslab.restart_server(s)
    assert all(dnslab.announcing().values())
    assert ldns.answering_sites(dnslab.plan) == {"c1": "CHC", "c2": "AKL"}


def test_the_zone_comes_from_the_configuration_store(dnslab: DnsLab, tmp_path: Path) -> None:
    """One writer, a replica per site: each published version of the zone is loaded by
    every site's knotd, and served on the anycast address at every site."""
    writer = EmbeddedWriter(tmp_path / "config.db")
    replicas = {str(n.site): EmbeddedReplica(writer.address) for n in dnslab.plan.sites}
    syncs: dict[str, zonesync.ZoneSync] = {}
    try:
        syncs = zonesync.follow(replicas, list(dnslab.plan.sites), dnslab.dir)
        for serial in (2, 3):
            text = ldns.zone_text(dnslab.plan, serial=serial, extra=[f'v TXT "version {serial}"'])
            seq = zonesync.publish(writer, text)
            zonesync.wait_applied(syncs, seq)
            for n in dnslab.plan.sites:  # every site, asked from inside it
                address = dnslab.plan.service_address
                soa = ldns.records(n.namespace, address, ldns.ZONE, "SOA")
                assert soa[0].split()[2] == str(serial)
                txt = ldns.records(n.namespace, address, "v." + ldns.ZONE, "TXT")
                assert txt == [f'"version {serial}"']
            for c in ("c1", "c2"):  # and the clients, at the sites of their catchments
                ns = dnslab.plan.node(c).namespace
                txt = ldns.records(ns, dnslab.plan.service_address, "v." + ldns.ZONE, "TXT")
                assert txt == [f'"version {serial}"']
    finally:
        for s in syncs.values():
            s.close()
        for r in replicas.values():
            r.close()
        writer.close()


def test_rtt_refuses_a_lab_without_delays(
    dnslab: DnsLab, capsys: pytest.CaptureFixture[str]
) -> None:
    """lab3.yaml's links carry no delay: nothing for the twin to price (exit 2, the
    topology named)."""
    from anyedge.cli.main import main

    assert main(["lab", "rtt", "--dir", str(dnslab.dir)]) == 2
    err = capsys.readouterr().err
    assert "lab.links: no link carries a delay (delay_ms)" in err, err
    assert "/topology: lab.links" in err, err
    assert "anyedge lab generate --delays" in err, err
