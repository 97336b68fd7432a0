"""``anyedge control run``: the Traffic Manager as a service; ``anyedge control override``.

``run -c controller.yaml`` checks the configuration (every problem with its file and
line, exit status 2, nothing started), opens the journal (resuming from it), starts the
HTTP API and dashboard (:mod:`anyedge.api.http`) in a thread and runs the loop
(:mod:`anyedge.api.service`) until SIGTERM or SIGINT, then exits 0 leaving the network
as the last decision left it.  ``--check`` only checks the configuration.

``override -c controller.yaml KIND [SITE] [--off]`` records an operator's override in
the journal's file, as the API does, for a controller running or not.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import InputError
from .control import control
from .control_plan import _failover, _load_atlas

if TYPE_CHECKING:
    import uvicorn

    from ..api.service import Service

CONFIG = click.option(
    "-c",
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    required=True,
    help="The controller's YAML configuration.",
)


@control.command("run")
@CONFIG
@click.option("--check", is_flag=True, help="Check the configuration and exit.")
@click.option("--json", "as_json", is_flag=True, help="With --check: print the result as JSON.")
def run(config_file: Path, check: bool, as_json: bool) -> None:
    """Run the Traffic Manager on Prometheus telemetry, with its API and dashboard."""
    from ..api.config import beside, check_files, load, names_of

    doc = load(config_file)
    check_files(doc, config_file)
    token = _token(doc, config_file)
    failover = None
    if doc.atlas is not None:
        path = beside(config_file, doc.atlas)
        failover = _failover(_load_atlas(path), names_of(doc), path)
    if check:
        if as_json:
            summary = {"config": str(config_file), "ok": True, "sites": [s.name for s in doc.sites],
                       "actuator": doc.actuator.kind, "atlas": doc.atlas is not None}  # fmt: skip
            click.echo(json.dumps(summary))
            return
        click.echo(f"{config_file}: ok ({len(doc.sites)} sites, actuator {doc.actuator.kind})")
        return
    from ..api.service import Service

    service = Service(doc, config_file, failover)
    server = thread = None
    try:
        service.install_signals()
        if doc.http is not None:
            server, thread = _serve(service, token)
        c = service.controller
        since = f"resumed at decision {c.seq}" if c.resumed else "new"
        service.say(
            f"{len(doc.sites)} sites, every {doc.interval:g} s, telemetry {doc.prometheus.url}, "
            f"actuator {doc.actuator.kind}, journal {service.journal.path} ({since})"
        )
        service.run()
        service.say(
            f"stopped ({service.stop_reason or 'done'}); the network keeps decision "
            f"{service.controller.seq}"
        )
    finally:
        if server is not None and thread is not None:
            # the API thread reads the service: it ends before the service closes (a
            # request still running against a closed journal, or a daemon thread cut
            # off at the interpreter's exit, can crash the process)
            server.should_exit = True
            thread.join(10)
        service.close()


def _token(doc: object, config_file: Path) -> str | None:
    from ..api.config import ControllerIn, beside

    assert isinstance(doc, ControllerIn)
    if doc.http is not None and doc.http.token_file:
        text = beside(config_file, doc.http.token_file).read_text(encoding="utf-8").strip()
        if len(text) < 16:
            raise InputError.one(
                config_file, "http.token_file", "the token must be at least 16 characters"
            )
        return text
    env = os.environ.get("ANYEDGE_TOKEN", "").strip()
    return env or None


def _serve(service: Service, token: str | None) -> tuple[uvicorn.Server, threading.Thread]:
    import uvicorn

    from ..api.http import app

    http = service.doc.http
    assert http is not None
    config = uvicorn.Config(
        app(service, token), host=http.address, port=http.port, log_level="warning",
        access_log=False, lifespan="off",
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="http", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        threading.Event().wait(0.05)
    if not thread.is_alive():
        raise InputError.one(
            None, "http", f"cannot listen on {http.address}:{http.port} (see the log above)"
        )
    sock = server.servers[0].sockets[0].getsockname()
    service.say(
        f"listening on http://{sock[0]}:{sock[1]} (overrides "
        f"{'need the bearer token' if token else 'refused: no token configured'})"
    )
    return server, thread


@control.command("override")
@CONFIG
@click.argument("kind", type=click.Choice(["freeze", "pin", "forbid", "drain"]))
@click.argument("site", required=False)
@click.option("--off", is_flag=True, help="Lift the override.")
@click.option("--note", default="", help="Why, for the journal.")
@click.option("--json", "as_json", is_flag=True, help="Print the recorded override as JSON.")
def override(
    config_file: Path, kind: str, site: str | None, off: bool, note: str, as_json: bool
) -> None:
    """Record an operator's override in the controller's journal."""
    import time

    from ..adapters.journal import Journal
    from ..adapters.overrides import Overrides
    from ..api.config import beside, load, names_of

    doc = load(config_file)
    names = names_of(doc)
    if kind != "freeze" and site not in names.sites:
        raise InputError.one(
            "command line", "SITE", f"{kind} needs one of {', '.join(names.sites)}, got {site!r}"
        )
    path = beside(config_file, doc.journal)
    with Journal(path, names):  # creates it if new, and checks it is this network's
        pass
    who = os.environ.get("USER") or f"uid {os.getuid()}"
    o = Overrides(path, names.sites).set(kind, site, not off, who, time.time(), note)
    if as_json:
        click.echo(json.dumps(o.as_dict()))
        return
    click.echo(f"override {o.id}: {kind} {o.site} {'off' if off else 'on'}".replace("  ", " "))
