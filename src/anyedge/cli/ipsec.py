"""``anyedge ipsec``: the anycast IPsec endpoint (IKEv2 responder, ESP in user space).

``serve`` answers IKEv2 on ``--listen`` (UDP 500 and 4500) with a pre-shared key, and
carries the tunnels' traffic through a TUN device it makes in the current network
namespace, routing the ``--remote-ts`` networks into it.  It prints one JSON line
(``{"ready": ...}``) when it listens, and runs until SIGTERM or SIGINT.  See
docs/ipsec.md.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import InputError
from .main import cli
from .store import Address

if TYPE_CHECKING:
    from ..proto.ike import ChildSA
    from ..proto.ike.certs import CertAuth
    from ..transit.ipsec import IpsecEndpoint
    from ..transit.ipsec_xfrm import KernelInbound


def _selectors(option: str, values: tuple[str, ...]) -> tuple:  # type: ignore[type-arg]
    from ..proto.ike import Selector

    out = []
    for v in values:
        try:
            net = ipaddress.ip_network(v, strict=False)
        except ValueError as e:
            raise InputError.one("command line", option, f"{v!r}: {e}") from None
        out.append(Selector(net.network_address.packed, net.broadcast_address.packed))
    return tuple(out)


def _psk(path: Path) -> bytes:
    try:
        key = path.read_bytes().strip()
    except OSError as e:
        raise InputError.one(path, "", f"cannot read the pre-shared key: {e.strerror}") from None
    if len(key) < 8:
        raise InputError.one(path, "", "the pre-shared key must be at least 8 bytes")
    return key


@cli.group()
def ipsec() -> None:
    """Anycast IPsec: IKEv2 responder and user-space ESP."""


@ipsec.command()
@click.option("--listen", required=True, help="The (anycast) IPv4 address for IKE and ESP.")
@click.option(
    "--psk-file",
    type=click.Path(path_type=Path),
    help="File holding the pre-shared key (this, or --cert, --key and --ca, or both).",
)
@click.option(
    "--cert",
    "cert_file",
    type=click.Path(path_type=Path),
    help="Our certificate (PEM, ECDSA P-256).",
)
@click.option("--key", "key_file", type=click.Path(path_type=Path), help="Its private key (PEM).")
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(path_type=Path),
    help="CA certificates peers' must chain to (PEM).",
)
@click.option(
    "--id", "local_id", default="edge.example", show_default=True, help="Our IKE identity (FQDN)."
)
@click.option(
    "--local-ts", multiple=True, required=True, help="Networks on our side (CIDR, repeatable)."
)
@click.option(
    "--remote-ts",
    multiple=True,
    required=True,
    help="Networks on the peer's side (CIDR, repeatable).",
)
@click.option(
    "--tun", default="ipsec0", show_default=True, help="TUN device to make and route into."
)
@click.option(
    "--status", type=click.Path(path_type=Path), help="JSON status file, rewritten on changes."
)
@click.option("--server-index", default=0, show_default=True, type=click.IntRange(0))
@click.option(
    "--servers",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Servers sharing the SAs (outbound sequence numbers are partitioned).",
)
@click.option("--cookie-threshold", default=64, show_default=True, type=click.IntRange(0))
@click.option(
    "--store",
    "store_addr",
    type=Address(),
    help="The embedded store's writer (HOST:PORT): publish our SAs, install everyone's.",
)
@click.option(
    "--fleet-key-file",
    type=click.Path(path_type=Path),
    help="File with the 32-byte fleet key (raw or 64 hex digits); needed with --store.",
)
@click.option(
    "--kernel-esp",
    type=click.Choice(["auto", "off"]),
    default="auto",
    show_default=True,
    help="auto: probe the kernel for ESP and let it decrypt where it can; off: all in user space.",
)
def serve(
    listen: str,
    psk_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    ca_file: Path | None,
    local_id: str,
    local_ts: tuple[str, ...],
    remote_ts: tuple[str, ...],
    tun: str,
    status: Path | None,
    server_index: int,
    servers: int,
    cookie_threshold: int,
    store_addr: tuple[str, int] | None,
    fleet_key_file: Path | None,
    kernel_esp: str,
) -> None:
    """Answer IKEv2 and carry ESP until SIGTERM or SIGINT.

    With --store, every Child SA and IKE SA negotiated (or changed) here is written to
    the store, sealed with the fleet key, and every one in the store is installed here,
    so any server sharing the anycast address carries any tunnel, and answers its IKE
    requests, without a new IKE exchange."""
    import time

    from ..adapters.tuntap import open_tun
    from ..proto.esp import EspEndpoint
    from ..proto.ike import Responder, ResponderConfig
    from ..proto.ike.codec import ID_FQDN
    from ..transit.ipsec import IpsecEndpoint

    try:
        ipaddress.IPv4Address(listen)
    except ValueError:
        raise InputError.one(
            "command line", "--listen", f"{listen!r} is not an IPv4 address"
        ) from None
    if server_index >= servers:
        raise InputError.one(
            "command line", "--server-index", f"{server_index} is not below --servers {servers}"
        )
    psks = {b"": _psk(psk_file)} if psk_file is not None else {}
    certs = _certs(cert_file, key_file, ca_file)
    if not psks and certs is None:
        raise InputError.one(
            "command line", "--psk-file", "give a pre-shared key or --cert, --key and --ca"
        )
    fleet_key = None
    if store_addr is not None:
        if fleet_key_file is None:
            raise InputError.one("command line", "--fleet-key-file", "is needed with --store")
        fleet_key = _fleet_key(fleet_key_file)
    lts, rts = _selectors("--local-ts", local_ts), _selectors("--remote-ts", remote_ts)
    cfg = ResponderConfig(
        psks, (ID_FQDN, local_id.encode()), lts, rts, cookie_threshold=cookie_threshold, certs=certs
    )
    fd = open_tun(tun)
    subprocess.run(["ip", "link", "set", tun, "up"], check=True)
    for net in remote_ts:
        subprocess.run(
            ["ip", "route", "replace", str(ipaddress.ip_network(net, strict=False)), "dev", tun],
            check=True,
        )
    kernel, dataplane = _dataplane(kernel_esp, listen)
    try:
        ep = IpsecEndpoint(
            Responder(cfg, time.time()),
            EspEndpoint(server_index, servers),
            listen,
            fd,
            status,
            kernel=kernel,
            dataplane=dataplane,
        )
    except OSError as e:
        raise click.ClickException(f"cannot serve on {listen}: {e}") from None
    closers = (
        _attach_store(ep, store_addr, fleet_key) if store_addr is not None and fleet_key else []
    )
    signal.signal(signal.SIGTERM, lambda *_: ep.stopping())
    signal.signal(signal.SIGINT, lambda *_: ep.stopping())
    ready = {"ready": True, "listen": listen, "tun": tun, "dataplane": dataplane}
    click.echo(json.dumps(ready), nl=True)
    sys.stdout.flush()
    try:
        ep.run()
    finally:
        for close in closers:
            close()


def _dataplane(mode: str, listen: str) -> tuple[KernelInbound | None, dict[str, Any]]:
    """Probe the kernel for ESP (``auto``); say on stderr which path decrypts."""
    from ..transit.ipsec_xfrm import KernelInbound, probe

    if mode == "off":
        return None, {"inbound": "user", "outbound": "user", "kernel_esp": None}
    found = probe()
    plane: dict[str, Any] = {
        "inbound": "xfrm" if found.esp else "user",
        "outbound": "user",
        **found.to_dict(),
    }
    if not found.esp:
        click.echo(
            f"ipsec: the kernel has no ESP ({found.reason}, errno {found.errno}): "
            "ESP in user space through the TUN device",
            err=True,
        )
        return None, plane
    click.echo("ipsec: the kernel has ESP: it decrypts (ip xfrm), sending stays here", err=True)
    return KernelInbound(listen), plane


def _attach_store(ep: IpsecEndpoint, addr: tuple[str, int], key: bytes) -> list[Callable[[], None]]:
    from ..store import EmbeddedReplica
    from ..store.embedded import RemoteWriter
    from ..transit.ipsec_store import FleetKey, Publisher, SaInstaller

    fleet = FleetKey(key)
    publisher = Publisher(lambda: RemoteWriter(addr), fleet)
    ep.on_child = publisher
    ep.on_ike = publisher.ike
    replica = EmbeddedReplica(addr)

    def install(child: ChildSA) -> None:
        ep.submit(lambda: ep.install(child, "udp"))

    def remove(spi: int) -> None:
        ep.submit(lambda: ep.remove(spi))

    def adopt(record: dict[str, Any]) -> None:
        ep.submit(lambda: ep.responder.adopt(record))

    def forget(spi_r: bytes) -> None:
        ep.submit(lambda: ep.responder.forget(spi_r))

    installer = SaInstaller(replica, fleet, install, remove, adopt, forget)
    return [installer.close, replica.close, publisher.close]


def _certs(cert: Path | None, key: Path | None, ca: Path | None) -> CertAuth | None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from ..proto.ike.certs import CertAuth

    given = {"--cert": cert, "--key": key, "--ca": ca}
    if all(v is None for v in given.values()):
        return None
    if cert is None or key is None or ca is None:
        missing = [k for k, v in given.items() if v is None]
        raise InputError.one("command line", missing[0], "--cert, --key and --ca go together")
    try:
        ours = x509.load_pem_x509_certificate(cert.read_bytes())
        private = load_pem_private_key(key.read_bytes(), None)
        cas = tuple(x509.load_pem_x509_certificates(ca.read_bytes()))
    except OSError as e:
        raise InputError.one(e.filename, "", f"cannot read it: {e.strerror}") from None
    except (ValueError, TypeError) as e:
        raise InputError.one(
            "command line", "--cert/--key/--ca", f"not PEM of the right kind: {e}"
        ) from None
    if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != "secp256r1":
        raise InputError.one(key, "", "the key must be ECDSA on P-256")
    return CertAuth(ours, private, cas)


def _fleet_key(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError.one(path, "", f"cannot read the fleet key: {e.strerror}") from None
    text = raw.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode())
        except (ValueError, UnicodeDecodeError):
            pass
    if len(raw) == 32:
        return raw
    raise InputError.one(path, "", "the fleet key must be 32 bytes, raw or as 64 hex digits")
