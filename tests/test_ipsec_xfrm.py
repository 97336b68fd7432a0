"""The ``ip xfrm`` path: Child SAs as the kernel's XFRM SAs and policies, by netlink.

This kernel has XFRM but no ESP (no esp4, no rfc4106), so: policies go into a real
namespace and are read back; the NEWSA requests are compared byte for byte with what
iproute2's ``ip xfrm state add`` sends for the same SA (its sendmsg, caught by strace);
the kernel's refusal of an ESP SA is what the run-time probe reports, and what
``anyedge ipsec serve`` falls back on (tests/test_ipsec_failover.py reads its status)."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace

import pytest

from anyedge.adapters import netns
from anyedge.adapters.xfrm import (
    DIR_FWD,
    DIR_IN,
    DIR_OUT,
    Sa,
    XfrmError,
    XfrmSocket,
    del_policy,
    del_sa,
    new_policy,
    new_sa,
)
from anyedge.transit.ipsec_xfrm import NO_ESP, KernelInbound, policies, probe, sas
from ike_support import child, sel

pytestmark = pytest.mark.lab
LOCAL = "192.0.2.1"


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"aexf{os.getpid()}"
    netns.add(name)
    try:
        yield name
    finally:
        netns.remove(name)


def _sock(ns: str) -> XfrmSocket:
    with netns.entered(ns):
        return XfrmSocket()


def test_policies_installed_and_read_back(ns: str) -> None:
    ch = replace(child(), ts_remote=(sel("203.0.113.0/25"), sel("203.0.113.128/25")))
    asked = policies(ch, LOCAL)
    assert {(p.src, p.dir) for p in asked} == {
        ("203.0.113.0/25", DIR_IN), ("203.0.113.0/25", DIR_FWD),
        ("203.0.113.128/25", DIR_IN), ("203.0.113.128/25", DIR_FWD),
        ("198.51.100.0/24", DIR_OUT),
    }  # fmt: skip
    with _sock(ns) as s:
        for p in asked:
            s.add_policy(p)
        got = s.policies()
        assert sorted(got, key=repr) == sorted(asked, key=repr)
        assert {(p.extra["proto"], p.extra["mode"]) for p in got} == {(50, 1)}
        with pytest.raises(XfrmError) as e:
            s.add_policy(asked[0])
        assert e.value.errno == errno.EEXIST
        for p in asked:
            s.delete_policy(p.src, p.dst, p.dir)
        assert s.policies() == []
    shown = netns.run(ns, ["ip", "xfrm", "policy"])
    assert shown.strip() == ""


def _iproute2_sends(ns: str, args: list[str]) -> bytes:
    """The netlink message ``ip xfrm ARGS`` sends (from strace's sendmsg)."""
    p = subprocess.run(
        ["strace", "-f", "-e", "trace=sendmsg", "-xx", "-s", "4096",
         "ip", "-n", ns, "xfrm", *args],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    m = re.search(
        r"nlmsg_len=(\d+), nlmsg_type=(0x[0-9a-f]+|\w+)[^,]*, nlmsg_flags=([^,]+), "
        r'nlmsg_seq=\d+, nlmsg_pid=\d+\}, "([^"]*)"',
        p.stderr,
    )
    assert m, p.stderr
    flags = 0
    for f in m.group(3).split("|"):
        flags |= {"NLM_F_REQUEST": 1, "NLM_F_ACK": 4, "NLM_F_EXCL": 0x200, "NLM_F_CREATE": 0x400}[f]
    kind = {"XFRM_MSG_NEWSA": 0x10, "XFRM_MSG_NEWPOLICY": 0x13}.get(m.group(2))  # newer strace
    body = bytes.fromhex(m.group(4).replace("\\x", ""))
    head = int(m.group(1)).to_bytes(4, "little")
    head += (kind or int(m.group(2), 16)).to_bytes(2, "little") + flags.to_bytes(2, "little")
    return head + bytes(8) + body


def _ip_sa_args(sa: Sa) -> list[str]:
    args = [
        "state", "add", "src", sa.src, "dst", sa.dst, "proto", "esp", "spi", hex(sa.spi),
        "reqid", str(sa.reqid), "mode", "tunnel", "replay-window", str(sa.replay_window),
        "aead", "rfc4106(gcm(aes))", "0x" + sa.key.hex(), "128",
    ]  # fmt: skip
    if sa.encap is not None:
        args += ["encap", "espinudp", str(sa.encap[0]), str(sa.encap[1]), "0.0.0.0"]
    if sa.sel is not None:
        args += ["sel", "src", sa.sel[0], "dst", sa.sel[1]]
    if sa.soft_seconds:
        args += ["limit", "time-soft", str(sa.soft_seconds)]
    if sa.hard_seconds:
        args += ["limit", "time-hard", str(sa.hard_seconds)]
    return args


def _same_but_seq(ours: bytes, theirs: bytes) -> None:
    """Equal but for nlmsg_seq and nlmsg_pid (bytes 8-16 of the header)."""
    assert len(ours) == len(theirs)
    assert ours[:8] == theirs[:8]
    assert ours[16:] == theirs[16:]


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
@pytest.mark.parametrize("encap", [True, False], ids=["udp-4500", "esp"])
def test_newsa_bytes_equal_iproute2(ns: str, encap: bool) -> None:
    ch = child(0xC0FFEE01, 0xC0FFEE02)
    sa_in, sa_out = sas(ch, LOCAL, encap)
    if encap:
        assert sa_in.encap == (4500, 4500)
        assert sa_out.encap == (4500, 4500)
        cases = [sa_in, sa_out, replace(sa_in, soft_seconds=3000, hard_seconds=3600)]
    else:
        assert sa_in.encap is None
        cases = [sa_in, replace(sa_out, sel=("198.51.100.0/24", "203.0.113.0/24")),
                 replace(sa_in, replay_window=32),
                 replace(sa_in, src="2001:db8::2", dst="2001:db8::1",
                         sel=("2001:db8:2::/64", "2001:db8:1::/64"))]  # fmt: skip
    for sa in cases:
        _same_but_seq(new_sa(sa, seq=12345), _iproute2_sends(ns, _ip_sa_args(sa)))


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
def test_policy_and_delete_bytes_equal_iproute2(ns: str) -> None:
    for p in policies(child(), LOCAL):
        where = [
            "src",
            p.src,
            "dst",
            p.dst,
            "dir",
            {DIR_IN: "in", DIR_OUT: "out", DIR_FWD: "fwd"}[p.dir],
        ]
        args = ["policy", "add", *where, "tmpl", "src", p.tmpl_src, "dst", p.tmpl_dst,
                "proto", "esp", "reqid", str(p.reqid), "mode", "tunnel"]  # fmt: skip
        _same_but_seq(new_policy(p, seq=7), _iproute2_sends(ns, args))
        _same_but_seq(
            del_policy(p.src, p.dst, p.dir), _iproute2_sends(ns, ["policy", "delete", *where])
        )
    sa_in, sa_out = sas(child(), LOCAL, True)
    for sa in (sa_in, sa_out):
        args = ["state", "delete", "src", sa.src, "dst", sa.dst, "proto", "esp", "spi", hex(sa.spi)]
        _same_but_seq(del_sa(sa.src, sa.dst, sa.spi), _iproute2_sends(ns, args))


def _iproute2_takes_esp(ns: str) -> tuple[bool, str]:
    sa = sas(child(), LOCAL, True)[0]
    p = subprocess.run(["ip", "-n", ns, "xfrm", *_ip_sa_args(sa)],
                       capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    return p.returncode == 0, p.stderr.strip()


def test_probe_says_what_the_kernel_says(ns: str) -> None:
    found = probe()
    takes, said = _iproute2_takes_esp(ns)
    assert found.esp == takes
    if not takes:  # this machine: "Error: Requested AEAD algorithm not found."
        assert found.errno in NO_ESP
        assert found.reason in said
    assert not [n for n in netns.listed("") if "probe" in n]  # its namespace left nothing


def test_kernel_without_esp_refuses_and_leaves_nothing(ns: str) -> None:
    if probe().esp:
        pytest.skip("this kernel has ESP")
    with _sock(ns) as s:
        inbound = KernelInbound(LOCAL, s)
        with pytest.raises(XfrmError) as e:
            inbound.install(child())
        assert e.value.errno in NO_ESP
        assert s.policies() == []  # the SA goes first: no policy without its SA
        assert inbound.installed == {}
