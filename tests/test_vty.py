"""The vty protocol without I/O (:class:`anyedge.adapters.bgp.vty.VtyFramer`), on byte
streams recorded from FRR 8.4's daemons (``tests/data/vty/``), fed whole, one byte at a
time, and cut at every offset; and :func:`ask` against a fake daemon on a unix socket
(a daemon that closes mid-answer, one that never answers, no daemon at all), and what
:meth:`Frr.summary` raises when bgpd is gone.

Recorded: ``bgpd.bin``, bgpd's answers on one connection to ``enable``, ``show bgp
summary json`` (one established session) and ``show bgp no-such-thing``; ``bfdd.bin``,
bfdd's to ``enable`` and ``show bfd peers json`` (one peer up).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from anyedge.adapters.bgp.base import SpeakerConfig, SpeakerError
from anyedge.adapters.bgp.frr import Frr, daemon_for
from anyedge.adapters.bgp.vty import Answer, VtyError, VtyFramer, ask, request

DATA = Path(__file__).parent / "data" / "vty"
BGPD = (DATA / "bgpd.bin").read_bytes()
BFDD = (DATA / "bfdd.bin").read_bytes()


def answers(chunks: list[bytes]) -> list[Answer]:
    framer = VtyFramer()
    out = [a for c in chunks for a in framer.feed(c)]
    assert framer.pending == 0
    return out


def check_bgpd(got: list[Answer]) -> None:
    assert [a.status for a in got] == [0, 0, 2]
    assert got[0].text == ""  # enable: no output
    summary = json.loads(got[1].text)["ipv4Unicast"]["peers"]["100.64.0.2"]
    assert summary["state"] == "Established"
    assert got[1].ok
    assert got[2].text == "% [BGP] Unknown command: show bgp no-such-thing\n"
    assert not got[2].ok
    assert got[2].status_name == "CMD_ERR_NO_MATCH"


def test_whole_stream_several_answers_in_one_read() -> None:
    check_bgpd(answers([BGPD]))
    bfd = answers([BFDD])
    assert [a.status for a in bfd] == [0, 0]
    assert json.loads(bfd[1].text)[0]["status"] == "up"


def test_one_byte_at_a_time() -> None:
    check_bgpd(answers([BGPD[i : i + 1] for i in range(len(BGPD))]))


def test_every_cut() -> None:
    """Two reads, cut anywhere: inside the text, between the NULs of a terminator,
    between the terminator and its status byte."""
    for cut in range(len(BGPD) + 1):
        check_bgpd(answers([BGPD[:cut], BGPD[cut:]]))


def test_terminator_split_across_reads() -> None:
    end = BFDD.rindex(b"\0\0\0\0")
    framer = VtyFramer()
    assert len(framer.feed(BFDD[: end + 1])) == 1  # enable's answer only
    assert framer.feed(BFDD[end + 1 : end + 3]) == []
    assert framer.feed(BFDD[end + 3 :])[0].status == 0
    assert framer.pending == 0


def test_warning_counts_as_success_like_vtysh() -> None:
    """vtysh -c exits 0 after CMD_WARNING (e.g. "% No such neighbor"), so do we."""
    (a,) = answers([b"% No such neighbor in this view/vrf\n\n\0\0\0\x01"])
    assert a.ok
    assert a.status_name == "CMD_WARNING"


def test_a_nul_inside_an_answer_is_a_protocol_error() -> None:
    with pytest.raises(VtyError, match="not a terminator"):
        VtyFramer().feed(b"half\0an answer\0\0\0\0")


def test_request_is_one_nul_terminated_line() -> None:
    assert request("show bgp summary json") == b"show bgp summary json\0"
    with pytest.raises(ValueError, match="one line"):
        request("show bgp\nconfigure terminal")


def test_daemon_for_routes_like_vtysh() -> None:
    assert daemon_for("show bgp ipv4 unicast summary json") == "bgpd"
    assert daemon_for("show ip bgp neighbors 100.64.0.2 routes json") == "bgpd"
    assert daemon_for("show ip ospf neighbor json") == "ospfd"
    assert daemon_for("show bfd peers json") == "bfdd"
    assert daemon_for("show ip route json") == "zebra"
    assert daemon_for("show running-config") is None  # several daemons: vtysh merges
    assert daemon_for("configure terminal") is None


@pytest.fixture
def fake_daemon(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A unix socket at ``tmp_path/x.vty`` served by one thread: it answers ``enable``,
    then writes the bytes queued in the list (nothing: it stays silent) and hangs up."""
    path = tmp_path / "x.vty"
    replies: list[bytes] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    done = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            assert conn.recv(100) == b"enable\0"
            conn.sendall(b"\0\0\0\0")
            conn.recv(100)
            if replies:
                conn.sendall(replies[0])
            else:
                done.wait(10)

    t = threading.Thread(target=serve)
    t.start()
    try:
        yield path, replies
    finally:
        done.set()
        t.join()
        server.close()


def test_ask_a_fake_daemon(fake_daemon: tuple[Path, list[bytes]]) -> None:
    path, replies = fake_daemon
    replies.append(b"hello\n\0\0\0\0")
    assert ask(path, "show hello") == Answer("hello\n", 0)


def test_closed_mid_answer(fake_daemon: tuple[Path, list[bytes]]) -> None:
    path, replies = fake_daemon
    replies.append(b'{\n  "half":')
    with pytest.raises(VtyError, match="closed the connection before the answer ended"):
        ask(path, "show half")


def test_silent_daemon_times_out(fake_daemon: tuple[Path, list[bytes]]) -> None:
    path, _ = fake_daemon
    with pytest.raises(VtyError, match=r"no answer in 0.3 s"):
        ask(path, "show nothing", timeout=0.3)


def test_no_daemon(tmp_path: Path) -> None:
    with pytest.raises(VtyError, match=r"the daemon is not running .*No such file"):
        ask(tmp_path / "bgpd.vty", "show bgp summary json")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "stale.vty"))  # bound, never listening: a dead daemon's file
    stale.close()
    with pytest.raises(VtyError, match=r"the daemon is not running .*refused"):
        ask(tmp_path / "stale.vty", "show bgp summary json")


def test_frr_show_without_its_daemon_is_a_speaker_error(tmp_path: Path) -> None:
    """What settling sees of a router whose bgpd is gone: a SpeakerError naming the
    node, the daemon and the question."""
    frr = Frr(SpeakerConfig("r1", "unused", tmp_path, 65001, "192.0.2.1", ()))
    gone = r"^r1: bgpd 'show bgp ipv4 unicast summary json': the daemon is not running"
    with pytest.raises(SpeakerError, match=gone):
        frr.summary()
