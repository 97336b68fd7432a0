"""``anyedge transit``: Magic Transit customers in the store, and the daemon that applies them.

``put FILE`` reads customers from YAML or JSON (one customer, a list, or ``customers:``
with a list), checks every one of them, against each other and against the customers
the store already holds (a GRE key or prefix another customer has), and writes them all
in one store transaction (bad input: ``FILE: customers[1].rules[0].ports: ...``, exit
status 2, nothing written).  ``remove ID`` deletes one; ``list`` prints what a fresh replica holds.
``serve`` is the daemon of one server: a replica, the applier (a namespace and an
nftables table per customer) and the anycast GRE forwarder, until SIGTERM or SIGINT.
The store options are ``anyedge store``'s.  See docs/transit.md.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import click
import yaml

from ..errors import InputError, Problem
from .main import cli
from .store import _handled, _options, _replica, _synced, _writer


def _place(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def read_customers(path: Path) -> list[Any]:
    """Every customer in ``path``, checked; an :class:`InputError` names each problem."""
    from pydantic import ValidationError

    from ..transit.config import Customer, conflict

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError.one(path, "", e.strerror or str(e)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise InputError.one(path, "", f"not YAML: {getattr(e, 'problem', e)}", line) from None
    if isinstance(doc, dict) and "customers" in doc:
        items, where = doc["customers"], "customers"
    elif isinstance(doc, dict):
        items, where = [doc], ""
    else:
        items, where = doc, ""
    if not isinstance(items, list) or not items:
        raise InputError.one(path, where, "expected a customer, a list of them or customers: [...]")
    problems: list[Problem] = []
    out: list[Customer] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        base = f"{where}[{i}]" if (where or len(items) > 1 or isinstance(doc, list)) else ""
        try:
            c = Customer.model_validate(item)
        except ValidationError as e:
            for err in e.errors():
                place = ".".join(p for p in (base, _place(tuple(err["loc"]))) if p)
                problems.append(Problem(place, err["msg"]))
            continue
        if c.id in seen:
            problems.append(Problem(f"{base}.id" if base else "id", f"customer {c.id!r} twice"))
            continue
        why = conflict(c, out)
        if why is not None:
            problems.append(Problem(base or c.id, why))
        seen.add(c.id)
        out.append(c)
    if problems:
        raise InputError(path, problems)
    return out


@cli.group()
def transit() -> None:
    """Magic Transit: customers' prefixes, firewalls and GRE tunnels on anycast."""


@transit.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print {id: sequence number} as JSON.")
@_options
@_handled
def put(file: Path, as_json: bool, connect: tuple[str, int], etcd: str | None, prefix: str) -> None:
    """Write the customers in FILE (YAML or JSON) to the store, all in one transaction."""
    from ..store import dumps
    from ..transit.config import key_of

    customers = read_customers(file)
    _check_against_store(file, customers, connect, etcd, prefix)
    w = _writer(connect, etcd, prefix)
    try:
        seq = w.txn({key_of(c.id): dumps(c.model_dump(mode="json")) for c in customers})
    finally:
        w.close()
    if as_json:
        click.echo(json.dumps({c.id: seq for c in customers}))
    else:
        for c in customers:
            click.echo(f"{c.id}: {', '.join(c.prefixes)} (seq {seq})")


def _check_against_store(
    path: Path, customers: list[Any], connect: tuple[str, int], etcd: str | None, prefix: str
) -> None:
    """Refuse (exit 2, nothing written) customers that clash with ones the store holds
    and the file does not replace: a shared GRE key or overlapping prefixes would be
    refused by every server's applier anyway, long after this command said it was done."""
    from pydantic import ValidationError

    from ..store import loads
    from ..transit.config import PREFIX, Customer, conflict

    r = _replica(connect, etcd, prefix)
    try:
        _synced(r, 10.0)
        held = r.items(PREFIX)
    finally:
        r.close()
    replaced = {c.id for c in customers}
    others: list[Customer] = []
    for key, value in held.items():
        if key[len(PREFIX) :] in replaced:
            continue
        try:
            others.append(Customer.model_validate(loads(value)))
        except (ValidationError, ValueError):
            continue  # a bad entry clashes with nothing; the appliers count it
    problems = []
    for c in customers:
        why = conflict(c, others)
        if why is not None:
            problems.append(Problem(c.id, f"{why} in the store"))
    if problems:
        raise InputError(path, problems)


@transit.command()
@click.argument("customer_id", metavar="ID")
@_options
@_handled
def remove(customer_id: str, connect: tuple[str, int], etcd: str | None, prefix: str) -> None:
    """Delete customer ID from the store; print the sequence number."""
    from ..transit.config import remove_customer

    w = _writer(connect, etcd, prefix)
    try:
        click.echo(remove_customer(w, customer_id))
    finally:
        w.close()


@transit.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Every customer's whole configuration.")
@_options
@_handled
def list_(as_json: bool, connect: tuple[str, int], etcd: str | None, prefix: str) -> None:
    """The customers the store holds."""
    from ..store import loads
    from ..transit.config import PREFIX

    r = _replica(connect, etcd, prefix)
    try:
        _synced(r, 10.0)
        items = {k[len(PREFIX) :]: loads(v) for k, v in sorted(r.items(PREFIX).items())}
        seq = r.seq
    finally:
        r.close()
    if as_json:
        click.echo(json.dumps({"seq": seq, "customers": items}, indent=1))
        return
    for cid, c in items.items():
        t = c.get("tunnel", {})
        click.echo(
            f"{cid}: {', '.join(c.get('prefixes', []))}; GRE to {t.get('router')} "
            f"key {t.get('key')}; {len(c.get('rules', []))} rules, default {c.get('default')}"
        )


@transit.command()
@click.option(
    "--endpoint",
    "endpoints",
    required=True,
    multiple=True,
    help="The anycast GRE endpoint (an address here); an IPv4 one and an IPv6 one at most.",
)
@click.option("--host-ns", help="The server's namespace (default: this process's).")
@click.option("--ns-prefix", default="mt-", show_default=True, help="Customers' namespaces.")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve the GRE counters for Prometheus on 127.0.0.1:PORT.",
)
@click.option(
    "--speaker",
    "speaker_file",
    type=click.Path(path_type=Path),
    help="The site's running BGP speaker (YAML, docs/transit.md): it announces every "
    "customer's prefixes beside the site's own, and only the site's own after SIGTERM.",
)
@_options
@_handled
def serve(
    endpoints: tuple[str, ...],
    host_ns: str | None,
    ns_prefix: str,
    metrics_port: int | None,
    speaker_file: Path | None,
    connect: tuple[str, int],
    etcd: str | None,
    prefix: str,
) -> None:
    """Apply every customer on this server and forward its GRE, until SIGTERM or SIGINT."""
    from ..transit.applier import Applier
    from ..transit.tunnel import GreForwarder, by_family

    try:
        by_family(endpoints)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--endpoint") from None
    site = None
    if speaker_file is not None:
        from ..api.config import load_announcer

        site = load_announcer(speaker_file)  # a bad file: exit 2, before anything starts
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    r = _replica(connect, etcd, prefix)
    fwd = GreForwarder(endpoints, host_ns).start()
    app = Applier(r, host=host_ns, ns_prefix=ns_prefix)
    app.listeners.append(fwd.on_customer)
    announcer = None
    try:
        _synced(r, 10.0)
        app.start()
        if site is not None and speaker_file is not None:
            announcer = _announce(site, speaker_file, r)
        if metrics_port is not None:
            from prometheus_client import start_http_server

            start_http_server(metrics_port, "127.0.0.1", registry=fwd.registry)
        click.echo(json.dumps({"endpoint": list(endpoints), "seq": r.seq}))
        stop.wait()
    finally:
        if announcer is not None:
            announcer.close()
            announcer.only_own()  # this server no longer filters or tunnels for them
        app.close()
        fwd.close()
        r.close()


def _announce(site: Any, path: Path, replica: Any) -> Any:
    """An announcer driving the site's running speaker (which announces the site's own
    routes now): every customer's prefixes from ``replica`` beside them."""
    from ..adapters.bgp.base import Route
    from ..api.config import speaker
    from ..transit.announce import Announcer

    own = [Route(p) for p in site.own]
    driver = speaker("site", site, path)
    driver.assume(own)
    return Announcer(replica, driver, own, site.prepend).start()
