"""``anyedge lab transit SITE``: Magic Transit on a site of the running lab.

It is ``anyedge transit serve`` with the lab filling in what a real site's operator
would: the site's namespace is the server's (``--host-ns``), the customers' namespaces
are named after it (``NAMESPACE-mt-ID``, so ``lab down`` takes them with the lab), the
anycast GRE endpoint is the site's first anycast address unless ``--endpoint`` says
otherwise, and the speaker file — the site's own BGP speaker as the lab runs it
(driver, namespace, working directory, ASN, router id, neighbours) and the routes the
lab's state records the site announcing (``own``) — is written to the site's node
directory (``transit-speaker.yaml``) and handed to ``serve --speaker``.  From there
data flows as in ``transit serve``: store → the site's replica → applier (namespaces,
firewalls) and announcer (the site's speaker announces every customer's prefixes beside
its own) → on SIGTERM the speaker is left announcing the site's own routes only.

The lab's own ``withdraw``/``announce`` drive the same speaker with the lab's routes
alone: the customers' prefixes come back at the next change in the store.  Registered
on ``anyedge lab`` when :mod:`.lab` is imported.
"""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from .lab import _attach, _dir, _site, dir_option, lab_command, name_option
from .store import _options
from .transit import serve

FILE = "transit-speaker.yaml"


@lab_command("transit")
@dir_option
@name_option
@click.argument("site")
@click.option(
    "--endpoint",
    "endpoints",
    multiple=True,
    help="The anycast GRE endpoint (default: the site's first anycast address).",
)
@click.option("--prepend", default=0, show_default=True, type=click.IntRange(0, 32))
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve the GRE counters for Prometheus on 127.0.0.1:PORT.",
)
@_options
@click.pass_context
def transit(
    ctx: click.Context,
    directory: Path | None,
    name: str | None,
    site: str,
    endpoints: tuple[str, ...],
    prepend: int,
    metrics_port: int | None,
    connect: tuple[str, int],
    etcd: str | None,
    prefix: str,
) -> None:
    """Serve Magic Transit at SITE: its customers' namespaces and firewalls, anycast GRE,
    and their prefixes announced through the site's BGP speaker, until SIGTERM."""
    from ..lab.build import node_dir
    from ..lab.rehearsal import speaker_entry

    _world, plan, state = _attach(directory, name)
    code = _site(plan, site)
    node = next(n for n in plan.sites if n.site == code)
    d = _dir(directory, name)
    own = [r[0] for r in state.routes.get(node.name, [])]
    doc = {**speaker_entry(plan, node, d), "own": own, "prepend": prepend}
    path = node_dir(d, node.name) / FILE
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    ctx.invoke(
        serve,
        endpoints=endpoints or node.anycast[:1],
        host_ns=node.namespace,
        ns_prefix=f"{node.namespace}-mt-",
        metrics_port=metrics_port,
        speaker_file=path,
        connect=connect,
        etcd=etcd,
        prefix=prefix,
    )
