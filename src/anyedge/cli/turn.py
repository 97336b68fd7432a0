"""``anyedge turn``: the TURN/STUN relay (RFC 8489, RFC 8656) that runs at every site.

``serve --config turn.yaml`` runs it until SIGTERM or SIGINT (UDP, TCP and TLS
listeners, one worker per ``workers``, Prometheus metrics, JSON log lines on stderr);
``check --config turn.yaml`` only reads and checks the file; ``sessions --config
turn.yaml`` lists the running relay's allocations with their counters (from each
worker's metrics port); ``credential`` prints a TURN REST API username and password
for a shared secret, as an application server would hand them to its clients.  See docs/turn.md.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import click

from .main import cli

config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    required=True,
    help="The relay's YAML configuration.",
)


@cli.group()
def turn() -> None:
    """The TURN/STUN relay on the anycast address."""


@turn.command()
@config_option
def check(config_path: Path) -> None:
    """Read and check a configuration; print what it would run."""
    from ..services.turn.config import load_config

    cfg = load_config(config_path)
    d = cfg.doc
    lo, hi = cfg.relay_ports()
    click.echo(
        json.dumps(
            {
                "realm": d.realm,
                "listen": [
                    f"{x.transport}://[{x.address}]:{x.port}"
                    if ":" in x.address
                    else f"{x.transport}://{x.address}:{x.port}"
                    for x in d.listen
                ],
                "relay": {"ipv4": d.relay.ipv4, "ipv6": d.relay.ipv6, "ports": [lo, hi]},
                "users": len(cfg.credentials.users),
                "rest_secrets": len(cfg.credentials.rest_secrets),
                "workers": cfg.workers,
                "fast_path": d.fast_path.model_dump() if d.fast_path is not None else None,
            },
            indent=1,
        )
    )


@turn.command()
@config_option
@click.option("-v", "--verbose", is_flag=True, help="Log every allocation (debug level).")
@click.option(
    "--drain",
    is_flag=True,
    help="Start draining: new allocations go to drain.alternates (SIGUSR2 stops it).",
)
def serve(config_path: Path, verbose: bool, drain: bool) -> None:
    """Run the relay until SIGTERM or SIGINT.

    SIGUSR1 drains it before maintenance (new Allocates get 300 Try Alternate to
    drain.alternates; existing allocations go on until they expire), SIGUSR2 stops
    draining.  Exits with status 0 when stopped so; 1 when it cannot serve (a port taken, a
    certificate that does not load) or a worker fails; 2 for a bad configuration."""
    from ..services.turn.config import load_config
    from ..services.turn.workers import serve as run

    cfg = load_config(config_path)
    cfg.start_draining = cfg.start_draining or drain
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s" if cfg.doc.log == "json" else "%(asctime)s %(message)s",
    )
    try:
        code = run(cfg, on_ready=lambda: print("ready", flush=True))
    except OSError as e:
        raise click.ClickException(f"cannot serve: {e}") from None
    raise click.exceptions.Exit(code)


@turn.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def sessions(config_path: Path, as_json: bool) -> None:
    """List the running relay's allocations with their counters.

    Reads each worker's /sessions on the metrics port of the configuration (metrics.port
    + worker); exits with status 2 when the configuration has no metrics port, 1 when a
    worker does not answer."""
    from ..errors import InputError
    from ..services.turn.config import load_config
    from ..services.turn.sessions import Unreachable, gather, session_urls, table

    cfg = load_config(config_path)
    if not session_urls(cfg):
        raise InputError.one(
            config_path,
            "metrics.port",
            "not set: the sessions view is served on the relay's metrics port",
        )
    try:
        found = gather(cfg)
    except Unreachable as e:
        raise click.ClickException(
            f"cannot reach the relay: {e} (is turn serve running?)"
        ) from None
    if as_json:
        click.echo(json.dumps({"sessions": found}, indent=1))
    else:
        click.echo(table(found))


@turn.command()
@click.option(
    "--secret",
    required=True,
    envvar="ANYEDGE_TURN_SECRET",
    help="The shared secret (one of rest_secrets); or ANYEDGE_TURN_SECRET, kept out of ps.",
)
@click.option("--user", default="", help="Who the credential is for (optional).")
@click.option("--ttl", default=86400, show_default=True, type=click.IntRange(1, 30 * 86400))
def credential(secret: str, user: str, ttl: int) -> None:
    """A TURN REST API credential: username 'expiry:user', password HMAC-SHA1, base64."""
    from pydantic import TypeAdapter, ValidationError

    from ..errors import InputError
    from ..proto.turn import rest_password, rest_username
    from ..services.turn.config import Secret

    try:  # the check ``turn serve`` makes of its rest_secrets: a credential it would honour
        TypeAdapter(Secret).validate_python(secret)
    except ValidationError as e:
        raise InputError.one(
            "command line",
            "--secret",
            f"{e.errors()[0]['msg']}, as turn serve requires of rest_secrets",
        ) from None

    name = rest_username(int(time.time()) + ttl, user)
    click.echo(json.dumps({"username": name, "password": rest_password(secret.encode(), name)}))
