"""SIGHUP reloads a running ``anyedge turn serve``: users, REST secrets and the TLS
certificate are read again without a restart, and a file that does not load leaves the
old ones in place with the reason in the log.

One relay process for the whole module (tests/test_turn_service.py's ``start_relay``:
users alice and bob in ``users.txt``, REST secrets, a TLS listener); the files are
rewritten, the process gets SIGHUP, and clients log in or are refused.  aioice checks
the TLS listener's new certificate: it trusts only that one.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import ssl
import time
from pathlib import Path

import pytest

from anyedge.proto.turn import rest_password, rest_username
from test_turn_service import exchange, self_signed, start_relay, stop
from turn_peers import TurnError, TurnUdpClient

pytestmark = pytest.mark.slow


def logged(d: Path, event: str, count: int, timeout: float = 30.0) -> str:
    """Wait until the relay's log has ``count`` lines of ``event``; the log."""
    deadline = time.monotonic() + timeout
    while True:
        text = (d / "serve.log").read_text()
        if text.count(f'"event": "{event}"') >= count:
            return text
        assert time.monotonic() < deadline, f"no {event} #{count} in the log:\n{text[-2000:]}"
        time.sleep(0.05)


def logs_in(port: int, user: str, password: str) -> bool:
    with TurnUdpClient(("127.0.0.1", port), user, password, timeout=3.0) as c:
        try:
            c.allocate()
        except TurnError as e:
            if e.code != 401:
                raise
            return False
        c.release()
        return True


def rest(secret: str, user: str) -> tuple[str, str]:
    name = rest_username(int(time.time()) + 3600, user)
    return name, rest_password(secret.encode(), name)


def served_certificate(port: int) -> bytes:
    return ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port)))


def der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def test_sighup_rereads_users_secrets_and_certificate(tmp_path: Path) -> None:
    d = tmp_path / "relay"
    d.mkdir()
    relay = start_relay(d)
    try:
        assert relay.tls_port is not None
        assert relay.cert is not None
        assert logs_in(relay.port, "alice", "wonderland")
        assert logs_in(relay.port, *rest("rotated-new", "carol"))
        first_cert = der(relay.cert)
        assert served_certificate(relay.tls_port) == first_cert

        # new files: alice's password changed, bob gone, dave added; one new REST secret;
        # a new certificate and key
        (d / "users.txt").write_text("alice:looking-glass\ndave:queen\n")
        conf = (d / "turn.yaml").read_text()
        (d / "turn.yaml").write_text(
            conf.replace("rest_secrets: [rotated-new, rotated-old]", "rest_secrets: [rotated-next]")
        )
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        cert, key = self_signed(fresh)
        shutil.copy(cert, d / "cert.pem")
        shutil.copy(key, d / "key.pem")
        relay.proc.send_signal(signal.SIGHUP)
        log = logged(d, "reloaded", 1)
        assert '"users": 2, "rest_secrets": 1, "certificates": 1' in log

        assert not logs_in(relay.port, "alice", "wonderland")
        assert logs_in(relay.port, "alice", "looking-glass")
        assert not logs_in(relay.port, "bob", "builder")
        assert logs_in(relay.port, "dave", "queen")
        assert not logs_in(relay.port, *rest("rotated-new", "carol"))
        assert logs_in(relay.port, *rest("rotated-next", "carol"))
        assert served_certificate(relay.tls_port) == der(d / "cert.pem") != first_cert
        trust = ssl.create_default_context(cafile=str(d / "cert.pem"))
        _, got, _ = asyncio.run(exchange(relay.tls_port, "dave", "queen", "tcp", trust, n=3))
        assert len(got) == 3

        # a users file with a broken line: nothing changes, and the log says where
        (d / "users.txt").write_text("alice:looking-glass\nno password here\n")
        relay.proc.send_signal(signal.SIGHUP)
        log = logged(d, "reload_failed", 1)
        assert "users.txt:2" in log
        assert "expected user:password" in log
        assert logs_in(relay.port, "dave", "queen")

        # a key that does not load: the old certificate stays
        (d / "users.txt").write_text("alice:looking-glass\n")
        (d / "key.pem").write_text("not a key\n")
        relay.proc.send_signal(signal.SIGHUP)
        logged(d, "reload_failed", 2)
        assert logs_in(relay.port, "dave", "queen")  # the users of the last good load
        assert served_certificate(relay.tls_port) == der(d / "cert.pem")
        assert relay.proc.poll() is None
    finally:
        stop(relay)
    assert relay.proc.returncode == 0
