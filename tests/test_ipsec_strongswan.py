"""Interop: strongSwan (charon with kernel-libipsec, the customer's IPsec router) as the
initiator against ``anyedge ipsec serve`` (our IKEv2 responder, ESP in user space over
a TUN device), each in its own namespace with a host behind it.

IKE completes, pings and a TCP stream cross the tunnel both ways, a Child SA rekey and
an IKE SA rekey succeed with traffic after each, and strongSwan's deletes (Child SA,
then IKE SA) are honoured: our side removes the SAs and answers.  A wrong pre-shared key
is refused with AUTHENTICATION_FAILED; strongSwan returns our cookie and gets its SA;
both sides authenticate with ECDSA certificates from one CA.
kernel-libipsec always encapsulates ESP in UDP (port 4500), so the raw protocol-50 path
is tested in test_ipsec_endpoint.py.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipsec_support import IpsecLab, ping, tcp_stream

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(
        shutil.which("swanctl") is None, reason="strongSwan (swanctl, charon) not installed"
    ),
]


@pytest.fixture
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[IpsecLab]:
    kwargs = dict(getattr(request, "param", {}))
    edge_args = kwargs.pop("edge_args", ())
    lab = IpsecLab(tmp_path / "ipsec", **kwargs)
    (tmp_path / "ipsec").mkdir()
    try:
        lab.up()
        lab.start_edge(*edge_args, *(lab.cert_args() if lab.certs else ()))
        lab.start_charon()
        yield lab
    finally:
        lab.down()


def _listed(lab: IpsecLab, text: str) -> None:
    """Wait until ``swanctl --list-sas`` shows ``text`` (right after a rekey the listing
    may still show the SA being replaced)."""
    deadline = time.monotonic() + 5
    while text not in (sas := lab.swanctl("--list-sas")):
        assert time.monotonic() < deadline, sas
        time.sleep(0.1)


def _both_ways(lab: IpsecLab, seq: int) -> None:
    assert ping(lab.ns["hc"], "198.51.100.10", seq), (
        "host behind strongSwan -> host behind the edge"
    )
    assert ping(lab.ns["he"], "203.0.113.10", seq), "host behind the edge -> host behind strongSwan"


def test_strongswan_ike_traffic_rekey_delete(lab: IpsecLab) -> None:
    out = lab.swanctl("--initiate", "--child", "net")
    assert "CHILD_SA net{1} established" in out
    assert "AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_256" in out
    _both_ways(lab, 1)
    data = tcp_stream(lab.ns["he"], lab.ns["hc"], "198.51.100.10", 1 << 20)
    assert len(data) == 1 << 20  # tcp_stream returns the data only when the echo matched
    first = lab.edge_status()["children"]

    assert "rekey completed successfully" in lab.swanctl("--rekey", "--child", "net")
    st = lab.wait_status(lambda s: len(s["children"]) == 1 and s["children"] != first)
    _both_ways(lab, 2)

    assert "rekey completed successfully" in lab.swanctl("--rekey", "--ike", "edge")
    _listed(lab, "edge: #2, ESTABLISHED")
    _both_ways(lab, 3)
    st = lab.wait_status(lambda s: s["esp"]["decrypted"] >= 3 and s["esp"]["encrypted"] >= 3)
    assert st["esp"]["bad_icv"] == 0
    assert st["esp"]["replayed"] == 0

    assert "terminate completed successfully" in lab.swanctl("--terminate", "--child", "net")
    lab.wait_status(lambda s: s["children"] == [] and s["established"] == 1)
    assert not ping(lab.ns["hc"], "198.51.100.10", 4, timeout=0.5)

    assert "terminate completed successfully" in lab.swanctl("--terminate", "--ike", "edge")
    lab.wait_status(lambda s: s["established"] == 0)


@pytest.mark.parametrize(
    "lab",
    [{"proposals": "aes128gcm16-prfsha256-x25519", "esp": "aes128gcm16-x25519"}],
    indirect=True,
)
def test_strongswan_curve25519_pfs_rekey(lab: IpsecLab) -> None:
    out = lab.swanctl("--initiate", "--child", "net")
    assert "AES_GCM_16_128/PRF_HMAC_SHA2_256/CURVE_25519" in out
    _both_ways(lab, 1)
    assert "rekey completed successfully" in lab.swanctl("--rekey", "--child", "net")
    _listed(lab, "ESP:AES_GCM_16-128/CURVE_25519")
    _both_ways(lab, 2)


@pytest.mark.parametrize("lab", [{"customer_psk": "not the edge's key"}], indirect=True)
def test_strongswan_wrong_psk_authentication_failed(lab: IpsecLab) -> None:
    with pytest.raises(RuntimeError, match="received AUTHENTICATION_FAILED notify error"):
        lab.swanctl("--initiate", "--child", "net")
    st = lab.wait_status(lambda s: s["ike"]["auth_failed"] == 1)
    assert st["established"] == 0
    assert st["children"] == []


@pytest.mark.parametrize("lab", [{"edge_args": ("--cookie-threshold", "0")}], indirect=True)
def test_strongswan_returns_our_cookie(lab: IpsecLab) -> None:
    """With every IKE_SA_INIT asked for a cookie (threshold 0), strongSwan sends its
    request again with our COOKIE and the SA comes up (RFC 7296 §2.6)."""
    out = lab.swanctl("--initiate", "--child", "net")
    assert "parsed IKE_SA_INIT response 0 [ N(COOKIE) ]" in out
    assert "generating IKE_SA_INIT request 0 [ N(COOKIE) SA KE" in out
    assert "CHILD_SA net{1} established" in out
    st = lab.wait_status(lambda s: s["established"] == 1)
    assert st["ike"]["cookies_sent"] == 1
    assert ping(lab.ns["hc"], "198.51.100.10")


@pytest.mark.parametrize("lab", [{"certs": True}], indirect=True)
def test_strongswan_certificates(lab: IpsecLab) -> None:
    """Both sides authenticate with ECDSA P-256 certificates from one CA (RFC 4754)."""
    out = lab.swanctl("--initiate", "--child", "net")
    assert 'received cert request for "CN=anyedge test CA"' in out  # our CERTREQ
    assert "parsed IKE_AUTH response 1 [ IDr CERT AUTH SA TSi TSr ]" in out
    assert "authentication of 'edge.example' with ECDSA-256 signature successful" in out
    assert "CHILD_SA net{1} established" in out
    _both_ways(lab, 1)
