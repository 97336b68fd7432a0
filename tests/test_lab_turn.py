"""TURN on anycast, in the lab: a client and a peer whose packets land on different
sites exchange data through the relay.

In ``tests/data/lab3.yaml`` client c1 reaches CHC and c2 reaches AKL.  Every site runs
``anyedge turn serve`` on the anycast address with its own slice of the relay ports.  c1
allocates (at CHC: its relayed port is in CHC's slice) and binds a channel to a peer on
c2; the peer answers the relayed address, its datagrams land at AKL — the site c2's
packets reach — and AKL hands them over the backbone to CHC, which relays them to c1.

Two clients with allocations at two sites (c1 at CHC, c2 at AKL) reach each other's
relayed addresses: with TURN's own client (Send and Data indications) and as two aiortc
peers with relay candidates only, whose data channel runs between the sites' relays.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from anyedge.lab import turn
from lab_support import DATA, RunningLab, running_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
USERS = {"alice": "through-the-looking-glass", "bob": "can-we-fix-it"}

PEER = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(0.5)
sources, end = [], time.monotonic() + float(sys.argv[3])
print("ready", flush=True)
while time.monotonic() < end and len(sources) < int(sys.argv[4]):
    try:
        data, src = s.recvfrom(2048)
    except TimeoutError:
        continue
    sources.append(list(src))
    s.sendto(b"echo " + data, src)
s.close()
print(json.dumps(sources), flush=True)
"""

CLIENT = """
import json, sys
from turn_peers import TurnUdpClient
server, user, password, peer_host, peer_port, n = sys.argv[1:7]
peer = (peer_host, int(peer_port))
got = []
with TurnUdpClient((server, 3478), user, password, local=("0.0.0.0", 0)) as c:
    relayed = c.allocate()
    c.channel_bind(0x4001, peer)
    for i in range(int(n)):
        c.send_channel(0x4001, b"hello %d" % i)
        src, data, kind = c.receive(timeout=3.0)
        got.append([list(src), data.decode(), kind])
    c.release()
print(json.dumps({"relayed": list(relayed), "got": got}))
"""

PAIR = """
import json, sys
from turn_peers import TurnUdpClient
server, user, password, n = sys.argv[1:5]
with TurnUdpClient((server, 3478), user, password, local=("0.0.0.0", 0)) as c:
    print(json.dumps(list(c.allocate())), flush=True)
    host, port = json.loads(sys.stdin.readline())
    other = (host, int(port))
    c.create_permission(other)
    print("permitted", flush=True)
    sys.stdin.readline()  # the other one has its permission too
    for i in range(int(n)):
        c.send_indication(other, b"%s %d" % (user.encode(), i))
    got = []
    try:
        while len(got) < int(n):
            src, data, kind = c.receive(timeout=5.0)
            got.append([list(src), data.decode(), kind])
    except TimeoutError:
        pass
    c.release()
print(json.dumps(got), flush=True)
"""

RTC = """
import asyncio, json, sys
from aiortc import (RTCConfiguration, RTCIceServer, RTCIceTransportPolicy,
                    RTCPeerConnection, RTCSessionDescription)
role, server, user, password = sys.argv[1:5]
n = int(sys.argv[5])

async def main():
    loop = asyncio.get_running_loop()
    url = f"turn:{server}:3478?transport=udp"
    ice = RTCIceServer(urls=[url], username=user, credential=password)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[ice],
                                            iceTransportPolicy=RTCIceTransportPolicy.RELAY))
    got, done = [], loop.create_future()

    def on_message(m):
        got.append(m)
        if len(got) >= n and not done.done():
            done.set_result(None)

    def talk(ch):
        ch.on("message", on_message)
        for i in range(n):
            ch.send(f"{user} {i}")

    async def exchange():
        print(json.dumps({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}),
              flush=True)

    async def remote():
        line = await loop.run_in_executor(None, sys.stdin.readline)
        await pc.setRemoteDescription(RTCSessionDescription(**json.loads(line)))

    if role == "offer":
        ch = pc.createDataChannel("lab")
        ch.on("open", lambda: talk(ch))
        await pc.setLocalDescription(await pc.createOffer())
        await exchange()
        await remote()
    else:
        pc.on("datachannel", talk)
        await remote()
        await pc.setLocalDescription(await pc.createAnswer())
        await exchange()
    try:
        await asyncio.wait_for(done, 40)
    except asyncio.TimeoutError:
        pass
    await asyncio.sleep(1)  # let the other side's last messages arrive before closing
    await pc.close()
    print(json.dumps(got), flush=True)

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def lab3_turn() -> Iterator[RunningLab]:
    with running_lab(DATA / "lab3.yaml") as lab:
        turn.start(lab.plan, lab.directory, USERS)
        yield lab


def in_namespace(lab: RunningLab, node: str, code: str, *args: str) -> list[str]:
    ns = lab.plan.node(node).namespace
    return ["ip", "netns", "exec", ns, sys.executable, "-c", code, *args]


def test_client_and_peer_on_different_sites_talk_through_the_relay(
    lab3_turn: RunningLab,
) -> None:
    lab = lab3_turn
    plan = lab.plan
    slices = turn.relay_slices(plan)
    peer_host = plan.node("c2").ports[0].ip
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    before = turn.steered(plan, "AKL")
    n = 20
    peer = subprocess.Popen(
        in_namespace(lab, "c2", PEER, peer_host, "40000", "20", str(n)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert peer.stdout is not None
        assert peer.stdout.readline().strip() == "ready"
        client = subprocess.run(
            in_namespace(
                lab,
                "c1",
                CLIENT,
                plan.service_address,
                "alice",
                USERS["alice"],
                peer_host,
                "40000",
                str(n),
            ),
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert client.returncode == 0, client.stderr
        out = json.loads(client.stdout)
        sources = json.loads(peer.communicate(timeout=30)[0])
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.communicate()
    relayed = tuple(out["relayed"])
    # c1 reached CHC: its relayed address is the anycast address, a port of CHC's slice
    assert relayed[0] == plan.service_address
    lo, hi = slices["CHC"]
    assert lo <= relayed[1] <= hi
    # the peer on c2 was sent everything from the relayed address...
    assert [tuple(s) for s in sources] == [relayed] * n
    # ...its answers landed at AKL, went over the backbone to CHC, and reached c1
    assert [g[1] for g in out["got"]] == [f"echo hello {i}" for i in range(n)]
    assert all(g[0] == [peer_host, 40000] and g[2] == "ChannelData" for g in out["got"])
    assert turn.steered(plan, "AKL") - before >= n


def test_each_site_relays_from_its_own_slice(lab3_turn: RunningLab) -> None:
    slices = turn.relay_slices(lab3_turn.plan)
    spans = sorted(slices.values())
    assert spans[0][0] == turn.RELAY_PORTS[0]
    assert spans[-1][1] == turn.RELAY_PORTS[1]
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(spans))
    for node in lab3_turn.plan.sites:
        conf = (lab3_turn.directory / "nodes" / node.name / "turn.yaml").read_text()
        assert f"address: {node.anycast[0]}, port: 3478" in conf


def test_two_relay_only_clients_with_allocations_at_two_sites_reach_each_other(
    lab3_turn: RunningLab,
) -> None:
    """c1's allocation is at CHC, c2's at AKL; each sends to the other's relayed address
    (the anycast address, a port of the other site's slice): CHC's relay hands its
    datagrams over the backbone to AKL and back."""
    lab = lab3_turn
    plan = lab.plan
    slices = turn.relay_slices(plan)
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    n = 10
    users = {"c1": "alice", "c2": "bob"}
    procs = {
        node: subprocess.Popen(
            in_namespace(lab, node, PAIR, plan.service_address, user, USERS[user], str(n)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for node, user in users.items()
    }
    try:
        relayed = {}
        for node, p in procs.items():
            assert p.stdout is not None
            relayed[node] = tuple(json.loads(p.stdout.readline()))
        for node, other in (("c1", "c2"), ("c2", "c1")):
            stdin = procs[node].stdin
            assert stdin is not None
            stdin.write(json.dumps(relayed[other]) + "\n")
            stdin.flush()
        for p in procs.values():
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "permitted"
        for p in procs.values():  # both at once: each sends, then waits for the other's
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        got = {}
        for node, p in procs.items():
            out, _ = p.communicate(timeout=60)
            assert p.returncode == 0
            got[node] = json.loads(out.splitlines()[-1])
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.communicate()
    lo, hi = slices["CHC"]
    assert relayed["c1"][0] == plan.service_address
    assert lo <= relayed["c1"][1] <= hi
    lo, hi = slices["AKL"]
    assert lo <= relayed["c2"][1] <= hi
    assert got["c1"] == [[list(relayed["c2"]), f"bob {i}", "Data indication"] for i in range(n)]
    assert got["c2"] == [[list(relayed["c1"]), f"alice {i}", "Data indication"] for i in range(n)]


def test_relay_only_webrtc_between_two_sites(lab3_turn: RunningLab) -> None:
    """Two aiortc peers with relay candidates only: the offerer on c1 allocates at CHC,
    the answerer on c2 at AKL; ICE, DTLS and SCTP run between the two sites' relayed
    addresses and the data channel carries messages both ways."""
    lab = lab3_turn
    n = 5
    roles = {"c1": ("offer", "alice"), "c2": ("answer", "bob")}
    procs = {
        node: subprocess.Popen(
            in_namespace(lab, node, RTC, role, lab.plan.service_address, user, USERS[user], str(n)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for node, (role, user) in roles.items()
    }
    try:
        offerer, answerer = procs["c1"], procs["c2"]
        assert offerer.stdout is not None
        assert answerer.stdout is not None
        assert answerer.stdin is not None
        assert offerer.stdin is not None
        offer = offerer.stdout.readline()
        answerer.stdin.write(offer)
        answerer.stdin.flush()
        offerer.stdin.write(answerer.stdout.readline())
        offerer.stdin.flush()
        got = {}
        for node, p in procs.items():
            out, _ = p.communicate(timeout=90)
            assert p.returncode == 0
            got[node] = json.loads(out.splitlines()[-1])
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert "typ relay" in offer
    assert "typ host" not in offer
    assert got["c2"] == [f"alice {i}" for i in range(n)]
    assert got["c1"] == [f"bob {i}" for i in range(n)]
