"""The vty socket client (:mod:`anyedge.adapters.bgp.vty`) against real FRR daemons.

Two FRR routers in namespaces of their own (``aev-<hex>-a``, ``aev-<hex>-b``, one veth
link on 100.64.0.0/30) run zebra, bfdd, ospfd and bgpd: an eBGP session watched by BFD
and an OSPF adjacency over the link.  Once all three are up, the answers that
:meth:`Frr.show` reads from the daemons' sockets must be vtysh's answers (parsed JSON
equal, once the counters and clocks that tick between two questions are set aside); an
unknown command must fail with FRR's own message; a killed daemon and a stopped one
must fail at once or at the timeout, never hang.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from anyedge.adapters import netns
from anyedge.adapters.bgp.base import Neighbor, SpeakerConfig, SpeakerError
from anyedge.adapters.bgp.frr import Frr, Igp, RouterNeighbor
from lab_support import lab_directory

pytestmark = pytest.mark.lab

A_IP, B_IP = "100.64.0.1", "100.64.0.2"
A_AS, B_AS = 65001, 65002
A_LO, B_LO = "192.0.2.1", "192.0.2.2"
QUESTIONS = ("show bgp summary json", "show ip ospf neighbor json", "show bfd peers json")


def router(
    name: str, ns: str, workdir: Path, asn: int, lo: str, ip: str, peer: tuple[str, int]
) -> Frr:
    return Frr(
        SpeakerConfig(name, ns, workdir / name, asn, lo, ()),
        (RouterNeighbor(Neighbor(peer[0], peer[1], ip, "eth1", bfd=True), "peer"),),
        igp=Igp(lo, (("eth1", f"{ip}/30", 10),)),
    )


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except SpeakerError:
            pass  # a daemon that has only just started
        if time.monotonic() > end:
            pytest.fail(f"not within {timeout:g} s: {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Frr, list[int]]]:
    """Router ``a`` (and its pids) with its session, BFD peer and OSPF neighbour up."""
    d = lab_directory()
    tag = secrets.token_hex(3)
    a_ns, b_ns = f"aev-{tag}-a", f"aev-{tag}-b"
    made: list[str] = []
    pids: list[int] = []
    try:
        for ns in (a_ns, b_ns):
            netns.add(ns)
            made.append(ns)
        netns.veth(a_ns, "eth1", b_ns, "eth1")
        netns.batch(a_ns, [f"addr add {A_IP}/30 dev eth1", f"addr add {A_LO}/32 dev lo"])
        netns.batch(b_ns, [f"addr add {B_IP}/30 dev eth1", f"addr add {B_LO}/32 dev lo"])
        a = router("a", a_ns, d, A_AS, A_LO, A_IP, (B_IP, B_AS))
        b = router("b", b_ns, d, B_AS, B_LO, B_IP, (A_IP, A_AS))
        a_pids = a.start()
        pids += a_pids
        pids += b.start()
        wait_for(lambda: a.established() == 1, 30, "the BGP session a-b")
        wait_for(lambda: a.ospf_full() == {B_IP}, 30, "the OSPF adjacency a-b")
        wait_for(lambda: a.bfd_peers().get(B_IP) == "up", 30, "the BFD session a-b")
        yield a, a_pids
    finally:
        netns.stop(pids)
        for ns in made:
            netns.remove(ns)
        shutil.rmtree(d, ignore_errors=True)


CLOCKS = {  # what ticks between two questions a moment apart: counters, uptimes, timers
    "msgRcvd",
    "msgSent",
    "peerUptime",
    "peerUptimeMsec",
    "peerUptimeEstablishedEpoch",
    "totalPrefixCounter",
    "uptime",
    "lastUpdate",
    "routerDeadIntervalTimerDueMsec",
    "upTime",
    "upTimeInMsec",
    "deadTimeMsecs",
    "deadTime",
    "receive-packets",
    "transmit-packets",
    "echo-packets",
    "session-up",
    "control-packet-input",
    "control-packet-output",
}


def steady(value: Any) -> Any:
    """``value`` with the fields in :data:`CLOCKS` (at any depth) left out."""
    if isinstance(value, dict):
        return {k: steady(v) for k, v in value.items() if k not in CLOCKS}
    if isinstance(value, list):
        return [steady(v) for v in value]
    return value


@pytest.mark.parametrize("question", QUESTIONS)
def test_socket_answers_what_vtysh_answers(pair: tuple[Frr, list[int]], question: str) -> None:
    a, _ = pair
    by_socket = json.loads(a.show(question))
    by_vtysh = json.loads(a.vtysh(question))
    assert by_socket, f"{question}: an empty answer"
    assert steady(by_socket) == steady(by_vtysh)


def test_what_the_lab_reads_comes_from_the_socket(pair: tuple[Frr, list[int]]) -> None:
    """The readers the lab's polling uses, answered over the socket: the session with
    b, its prefixes, the OSPF route to b's loopback and b's BFD peer."""
    a, _ = pair
    assert a.summary()[B_IP]["state"] == "Established"
    assert a.ospf_full() == {B_IP}
    assert a.ospf_costs()[f"{B_LO}/32"] == 10
    assert a.bfd_peers() == {B_IP: "up"}
    routes = json.loads(a.show("show ip route json"))  # zebra's socket
    assert f"{B_LO}/32" in routes


def test_unknown_command_is_frr_s_error(pair: tuple[Frr, list[int]]) -> None:
    a, _ = pair
    with pytest.raises(SpeakerError) as e:
        a.show("show bgp no-such-thing")
    assert str(e.value).startswith("a: bgpd 'show bgp no-such-thing': ")
    assert "Unknown command: show bgp no-such-thing" in str(e.value)  # FRR's own words


def test_a_question_no_daemon_takes_goes_to_vtysh(pair: tuple[Frr, list[int]]) -> None:
    a, _ = pair
    assert "router bgp 65001" in a.show("show running-config")  # merged by vtysh


def test_stopped_then_killed_daemon_fails_without_hanging(pair: tuple[Frr, list[int]]) -> None:
    """Last in the module: it ends a's bfdd.  Stopped (SIGSTOP), it accepts but never
    answers: the question fails at its timeout.  Killed, its socket file stays behind
    and refuses: the question fails at once, saying the daemon is not running."""
    a, pids = pair
    bfdd = pids[a.daemons.index("bfdd")]
    os.kill(bfdd, signal.SIGSTOP)
    try:
        with pytest.raises(SpeakerError, match=r"^a: bfdd 'show bfd peers json': no answer in 1 s"):
            a.show("show bfd peers json", timeout=1.0)
    finally:
        os.kill(bfdd, signal.SIGCONT)
    netns.kill(bfdd)
    assert (a.vty_dir / "bfdd.vty").exists()
    gone = r"^a: bfdd 'show bfd peers json': the daemon is not running"
    with pytest.raises(SpeakerError, match=gone):
        a.bfd_peers()
