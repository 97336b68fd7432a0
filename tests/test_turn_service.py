"""``anyedge turn serve`` for real: a relay process on loopback and a client nobody here
wrote (aioice) allocating, binding a channel and exchanging data with a UDP peer — over
UDP, TCP and TLS; two workers on one port; metrics; and bad configurations refused with
their place and exit status 2."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aioice.turn import create_turn_endpoint

from anyedge.cli.main import main
from anyedge.proto.turn import rest_password, rest_username
from turn_peers import TurnError, TurnUdpClient

pytestmark = pytest.mark.slow


RELAY_PORTS = range(40000, 41000)  # the test relay's ports, which no listener may use


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free now, outside the relay's ports (the relay refuses a listener there)."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in RELAY_PORTS:
            return port


@dataclass
class Relay:
    port: int
    tls_port: int | None
    metrics: int
    proc: subprocess.Popen[str]
    cert: Path | None


def self_signed(d: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    c, k = d / "cert.pem", d / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return c, k


def start_relay(
    d: Path, workers: int = 1, tls: bool = True, limits: str = "{allow_peers: [127.0.0.0/8]}"
) -> Relay:
    """``anyedge turn serve`` on free ports, ready.  A port found free can be taken by
    another test's process before the relay binds it (the suite runs in parallel): then
    the relay says so and exits, and it is started again on other ports (three tries)."""
    for _ in range(2):
        relay = _start_relay(d, workers, tls, limits)
        if relay is not None:
            return relay
    relay = _start_relay(d, workers, tls, limits, retry=False)
    assert relay is not None
    return relay


def _start_relay(d: Path, workers: int, tls: bool, limits: str, retry: bool = True) -> Relay | None:
    port = free_port()
    while True:  # the same number must be free for UDP and TCP
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port))
            break
        except OSError:
            port = free_port()
    tls_port = free_port(socket.SOCK_STREAM) if tls else None
    metrics = free_port(socket.SOCK_STREAM)
    cert = None
    listen = [
        f"  - {{transport: udp, address: 127.0.0.1, port: {port}}}",
        f"  - {{transport: tcp, address: 127.0.0.1, port: {port}}}",
    ]
    if tls:
        cert, key = self_signed(d)
        listen.append(
            f"  - {{transport: tls, address: 127.0.0.1, port: {tls_port}, "
            f"cert: {cert.name}, key: {key.name}}}"
        )
    (d / "users.txt").write_text("# test users\nalice:wonderland\nbob:builder\n")
    (d / "turn.yaml").write_text(
        "realm: anyedge.test\n"
        "listen:\n" + "\n".join(listen) + "\n"
        "relay: {ipv4: 127.0.0.1, ports: [40000, 40999]}\n"
        "auth: {users_file: users.txt, rest_secrets: [rotated-new, rotated-old], "
        "fleet_keys: [fleet-key-for-tests]}\n"
        f"limits: {limits}\n"
        f"workers: {workers}\n"
        f"metrics: {{port: {metrics}}}\n"
    )
    with (d / "serve.log").open("w") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "anyedge", "turn", "serve", "-c", str(d / "turn.yaml")],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if (
        line.strip() != "ready"
        and retry
        and "Address already in use" in (d / "serve.log").read_text()
    ):
        proc.wait(timeout=10)
        proc.stdout.close()
        return None
    assert line.strip() == "ready", (d / "serve.log").read_text()
    return Relay(port, tls_port, metrics, proc, cert)


def stop(relay: Relay) -> None:
    if relay.proc.poll() is None:
        relay.proc.send_signal(signal.SIGTERM)
        try:
            relay.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            relay.proc.kill()
            relay.proc.wait()
    assert relay.proc.stdout is not None
    relay.proc.stdout.close()
    if relay.proc.stderr is not None:
        relay.proc.stderr.close()


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    r = start_relay(tmp_path_factory.mktemp("turn"))
    try:
        yield r
    finally:
        stop(r)
        assert r.proc.returncode == 0


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.t.sendto(data, addr)  # type: ignore[attr-defined]


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait((data, addr))


async def exchange(
    port: int,
    user: str,
    password: str,
    transport: str = "udp",
    tls: ssl.SSLContext | None = None,
    n: int = 20,
) -> tuple[tuple[str, int], list[bytes], tuple[str, int]]:
    loop = asyncio.get_running_loop()
    echo_t, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    echo = echo_t.get_extra_info("sockname")
    try:
        turn, inbox = await create_turn_endpoint(
            _Inbox, ("127.0.0.1", port), user, password, transport=transport, ssl=tls
        )
    except BaseException:
        echo_t.close()
        await asyncio.sleep(0.1)
        raise
    try:
        relayed = turn.get_extra_info("sockname")
        got = []
        for i in range(n):
            turn.sendto(b"ping %03d" % i, echo)
            data, addr = await asyncio.wait_for(inbox.got.get(), 5)
            assert addr == echo
            got.append(data)
        return relayed, got, echo
    finally:
        turn.close()
        echo_t.close()
        await asyncio.sleep(0.1)


def metrics(relay: Relay) -> dict[str, float]:
    url = f"http://127.0.0.1:{relay.metrics}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("anyedge_turn"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_aioice_relays_through_us(relay: Relay, transport: str) -> None:
    tls = None
    port = relay.port
    if transport == "tls":
        assert relay.tls_port is not None
        assert relay.cert is not None
        tls = ssl.create_default_context(cafile=str(relay.cert))
        port = relay.tls_port
    relayed, got, _ = asyncio.run(
        exchange(port, "alice", "wonderland", "tcp" if transport == "tls" else transport, tls)
    )
    assert relayed[0] == "127.0.0.1"
    assert 40000 <= relayed[1] <= 40999
    assert got == [b"ping %03d" % i for i in range(20)]


def test_metrics_count_what_was_relayed(relay: Relay) -> None:
    before = metrics(relay)
    asyncio.run(exchange(relay.port, "bob", "builder", n=7))
    after = metrics(relay)
    key = 'anyedge_turn_packets_total{direction="to_peer",worker="0"}'
    assert after[key] - before[key] == 7
    created = 'anyedge_turn_allocations_created_total{worker="0"}'
    assert after[created] - before[created] == 1
    challenge = 'anyedge_turn_auth_failures_total{kind="challenge",worker="0"}'
    assert after[challenge] > before[challenge]  # the 401 every client starts with
    # what the IO layer counts is exported too, beside the core's counters
    for series in (
        'anyedge_turn_input_errors_total{worker="0"}',
        'anyedge_turn_dropped_total{reason="backlog",worker="0"}',
        'anyedge_turn_dropped_total{reason="relay_opening",worker="0"}',
        'anyedge_turn_rate_limiter_evictions_total{worker="0"}',
    ):
        assert after[series] == 0, series


def test_rest_credentials_with_a_rotated_secret(relay: Relay) -> None:
    name = rest_username(int(time.time()) + 600, "carol")
    _, got, _ = asyncio.run(exchange(relay.port, name, rest_password(b"rotated-old", name), n=3))
    assert len(got) == 3
    stale = rest_username(int(time.time()) - 5, "carol")
    with pytest.raises(Exception, match=r"401|Unauthorized|TransactionFailed"):
        asyncio.run(exchange(relay.port, stale, rest_password(b"rotated-new", stale), n=1))


def test_wrong_password_is_refused(relay: Relay) -> None:
    before = metrics(relay)
    with pytest.raises(Exception, match=r"401|Unauthorized|TransactionFailed"):
        asyncio.run(exchange(relay.port, "alice", "not-her-password", n=1))
    key = 'anyedge_turn_auth_failures_total{kind="wrong",worker="0"}'
    assert metrics(relay)[key] > before[key]


def test_two_workers_share_the_port(tmp_path: Path) -> None:
    r = start_relay(tmp_path, workers=2, tls=False)
    try:
        for _ in range(6):
            _, got, _ = asyncio.run(exchange(r.port, "alice", "wonderland", n=2))
            assert len(got) == 2
        pids = subprocess.run(
            ["pgrep", "-P", str(r.proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(pids) == 2
    finally:
        stop(r)
    assert r.proc.returncode == 0
    assert not [p for p in pids if os.path.exists(f"/proc/{p}")]


def test_tcp_listener_has_a_deep_accept_backlog(relay: Relay) -> None:
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{relay.port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert out[0] == "LISTEN"
    assert int(out[2]) == min(4096, somaxconn) > 100


def test_the_user_quota_holds_across_workers(tmp_path: Path) -> None:
    # two workers, each with its own core: the quota of 3 is still 3 for the relay
    r = start_relay(tmp_path, workers=2, tls=False, limits="{user_quota: 3}")
    clients = [TurnUdpClient(("127.0.0.1", r.port), "alice", "wonderland") for _ in range(10)]
    try:
        codes = []
        for c in clients:  # ten 5-tuples, spread over both workers by the kernel
            try:
                c.allocate()
                codes.append(0)
            except TurnError as e:
                codes.append(e.code or -1)
        assert sorted(codes) == [0] * 3 + [486] * 7
        # an allocation that ends makes room at whichever worker
        next(c for c, code in zip(clients, codes, strict=True) if code == 0).release()
        last = next(c for c, code in zip(clients, codes, strict=True) if code == 486)
        last.allocate()
    finally:
        for c in clients:
            c.close()
        stop(r)
    assert r.proc.returncode == 0


def test_a_second_instance_on_the_same_address_refuses_to_start(tmp_path: Path) -> None:
    first = start_relay(tmp_path, workers=2, tls=False)
    try:
        second = subprocess.Popen(
            [sys.executable, "-m", "anyedge", "turn", "serve", "-c", str(tmp_path / "turn.yaml")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = second.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            second.send_signal(signal.SIGTERM)
            second.communicate()
            pytest.fail("a second instance started on the same address")
        assert second.returncode == 1
        assert "ready" not in out
        assert f"another anyedge turn instance serves udp 127.0.0.1 port {first.port}" in err
        # the first one still serves
        _, got, _ = asyncio.run(exchange(first.port, "alice", "wonderland", n=2))
        assert len(got) == 2
    finally:
        stop(first)
    assert first.proc.returncode == 0


def test_config_problems_name_their_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "turn.yaml"
    udp = "listen: [{transport: udp, address: 127.0.0.1}]\n"
    bad.write_text(
        "realm: x\n"
        "listen:\n"
        "  - {transport: udp, address: 127.0.0.1, port: 3478}\n"
        "  - {transport: tls, port: 70000}\n"
        "auth: {fleet_keys: [a-fleet-key], users: {a: b}}\n"
    )
    assert main(["turn", "check", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "turn.yaml:4: listen[1].port: Input should be less than or equal to 65535" in err
    bad.write_text("realm: x\n" + udp + "auth: {fleet_keys: [a-fleet-key]}\n")
    assert main(["turn", "check", "-c", str(bad)]) == 2
    assert "auth: no users and no rest_secrets" in capsys.readouterr().err
    (tmp_path / "users.txt").write_text("alice:ok\nnocolon\n")
    bad.write_text(
        "realm: x\n" + udp + "auth: {fleet_keys: [a-fleet-key], users_file: users.txt}\n"
    )
    assert main(["turn", "check", "-c", str(bad)]) == 2
    assert "users.txt:2: expected user:password" in capsys.readouterr().err
    # an empty or short secret would let anyone compute passwords
    bad.write_text("realm: x\n" + udp + "auth: {fleet_keys: [k], rest_secrets: ['']}\n")
    assert main(["turn", "check", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "auth.rest_secrets[0]: String should have at least 8 characters" in err
    assert "auth.fleet_keys[0]: String should have at least 8 characters" in err
    # a wildcard UDP listener would answer from whatever address routing picks
    bad.write_text(
        "realm: x\nlisten: [{transport: udp}]\nauth: {fleet_keys: [a-fleet-key], users: {a: b}}\n"
    )
    assert main(["turn", "check", "-c", str(bad)]) == 2
    assert "listen[0]: a UDP listener needs its own address" in capsys.readouterr().err


def test_the_relays_own_addresses_are_not_peers(tmp_path: Path) -> None:
    from anyedge.services.turn.config import load_config

    conf = tmp_path / "turn.yaml"
    base = (
        "realm: x\nlisten: [{transport: udp, address: 203.0.113.7}]\n"
        "relay: {ipv4: 203.0.113.8}\nauth: {fleet_keys: [a-fleet-key], users: {a: b}}\n"
    )
    conf.write_text(base)
    deny = load_config(conf).turn.deny_peers
    assert "203.0.113.7/32" in deny
    assert "203.0.113.8/32" in deny
    # an operator who allows them (a test on loopback) gets them as peers
    conf.write_text(base + "limits: {allow_peers: [203.0.113.0/24]}\n")
    assert load_config(conf).turn.deny_peers == ()


def test_two_relay_only_clients_of_one_relay_reach_each_other(tmp_path: Path) -> None:
    # no allow list: the relay's own address (loopback here) is no peer, but its
    # relayed addresses are; two clients allocate and talk through their relays
    r = start_relay(tmp_path, workers=2, tls=False, limits="{}")
    try:
        server = ("127.0.0.1", r.port)
        with (
            TurnUdpClient(server, "alice", "wonderland") as a,
            TurnUdpClient(server, "bob", "builder") as b,
        ):
            relay_a, relay_b = a.allocate(), b.allocate()
            a.create_permission(relay_b)
            b.create_permission(relay_a)
            a.send_indication(relay_b, b"hello from a")
            assert b.receive() == (relay_a, b"hello from a", "Data indication")
            b.channel_bind(0x4001, relay_a)
            b.send_channel(0x4001, b"hello from b")
            assert a.receive() == (relay_b, b"hello from b", "Data indication")
            # the listener is not a peer: no TURN inside TURN
            with pytest.raises(TurnError, match="403"):
                a.channel_bind(0x4002, server)
            a.send_indication(server, b"\x00\x01\x00\x00" + bytes(16))
            a.release()
            b.release()
    finally:
        stop(r)
    assert r.proc.returncode == 0


def test_check_prints_ipv6_listeners_in_brackets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "turn.yaml"
    conf.write_text(
        "realm: x\nlisten:\n"
        "  - {transport: udp, address: '2001:db8::7', port: 3478}\n"
        "  - {transport: tcp, address: 203.0.113.7, port: 3478}\n"
        "relay: {ipv6: '2001:db8::7'}\n"
        "auth: {fleet_keys: [a-fleet-key], users: {a: b}}\n"
    )
    assert main(["turn", "check", "-c", str(conf)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["listen"] == ["udp://[2001:db8::7]:3478", "tcp://203.0.113.7:3478"]


def test_a_listener_inside_the_relay_ports_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "turn.yaml"
    bad.write_text(
        "realm: x\nlisten: [{transport: udp, address: 127.0.0.1, port: 50000}]\n"
        "auth: {fleet_keys: [a-fleet-key], users: {a: b}}\n"
    )
    assert main(["turn", "check", "-c", str(bad)]) == 2
    assert "port 50000 is inside the relay ports 49152-65535" in capsys.readouterr().err


def test_credential_command_makes_a_working_rest_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (
        main(["turn", "credential", "--secret", "s3cret-2026", "--user", "dave", "--ttl", "60"])
        == 0
    )
    got = json.loads(capsys.readouterr().out)
    expiry, user = got["username"].split(":")
    assert user == "dave"
    assert 0 < int(expiry) - time.time() <= 61
    assert got["password"] == rest_password(b"s3cret-2026", got["username"])
