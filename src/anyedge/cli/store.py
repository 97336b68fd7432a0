"""``anyedge store``: the replicated configuration store from the command line.

``serve --db writer.db`` runs the embedded store's one writer and its fan-out on
127.0.0.1 until SIGTERM or SIGINT; ``replica --db local.db`` keeps a replica's copy on
disk; ``put``, ``delete``, ``get`` and ``watch`` write through the writer and read from
a replica.  Every command talks to the embedded writer (``--connect HOST:PORT``, default
127.0.0.1:7400) or, with ``--etcd URL[,URL...]``, to an etcd cluster under ``--prefix``.
Bad input exits with status 2; a store that cannot be reached, with status 3.  See
docs/store.md.
"""

from __future__ import annotations

import base64
import functools
import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .main import cli

DEFAULT_PORT = 7400


class StoreFailed(click.ClickException):
    """The store could not be reached or refused the write: exit status 3."""

    exit_code = 3


if TYPE_CHECKING:  # click 8.2 made ParamType generic; 8.1 cannot subscript it
    _AddressBase = click.ParamType[tuple[str, int]]
else:
    _AddressBase = click.ParamType


class Address(_AddressBase):
    """``HOST:PORT``, as a (host, port) pair."""

    name = "HOST:PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        host, _, port = str(value).rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            self.fail(f"{value!r} is not HOST:PORT (a port 0-65535)", param, ctx)
        return host.strip("[]"), int(port)


def _options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--connect",
        type=Address(),
        default=f"127.0.0.1:{DEFAULT_PORT}",
        show_default=True,
        help="The embedded writer's address.",
    )(f)
    f = click.option("--etcd", help="Use an etcd cluster instead: URL[,URL...].")(f)
    return click.option(
        "--prefix", default="/anyedge/", show_default=True, help="etcd: the keys' prefix."
    )(f)


def _handled(f: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(f)
    def run(*a: Any, **k: Any) -> Any:
        from ..store import StoreError

        try:
            return f(*a, **k)
        except (OSError, StoreError) as e:
            raise StoreFailed(str(e) or type(e).__name__) from None

    return run


def _writer(connect: tuple[str, int], etcd: str | None, prefix: str) -> Any:
    if etcd:
        from ..store import EtcdWriter

        return EtcdWriter(_urls(etcd), prefix)
    from ..store.embedded import RemoteWriter

    return RemoteWriter(connect)


def _urls(etcd: str) -> list[str]:
    urls = [u.strip() for u in etcd.split(",") if u.strip()]
    for u in urls:
        if not u.startswith(("http://", "https://")):
            raise click.BadParameter(f"{u!r} is not an http:// URL", param_hint="--etcd")
    return urls


def _replica(
    connect: tuple[str, int], etcd: str | None, prefix: str, path: Path | None = None
) -> Any:
    if etcd:
        from ..store import EtcdReplica

        return EtcdReplica(_urls(etcd), prefix, path)
    from ..store import EmbeddedReplica

    return EmbeddedReplica(connect, path)


def _synced(replica: Any, timeout: float) -> None:
    """Wait until ``replica`` holds what the store held when it connected."""
    from ..store import EmbeddedReplica, StoreError

    done = threading.Event()

    def ready() -> bool:
        if isinstance(replica, EmbeddedReplica):
            return replica.writer_seq >= 0 and replica.seq >= replica.writer_seq
        return bool(replica.seq > 0)

    for _ in range(int(timeout / 0.02)):
        if ready():
            return
        done.wait(0.02)
    raise StoreError(f"the store did not answer within {timeout:g} s")


def _value(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(value).decode()


@cli.group()
def store() -> None:
    """The replicated configuration store: serve, replica, put, get, watch."""


@store.command()
@click.option("--db", type=click.Path(path_type=Path), required=True, help="The log's file.")
@click.option(
    "--listen",
    type=Address(),
    default=f"127.0.0.1:{DEFAULT_PORT}",
    show_default=True,
    help="Where replicas and writing clients connect (port 0: any free port).",
)
@click.option(
    "--compact-every",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Fold the log into a snapshot after this many writes.",
)
@_handled
def serve(db: Path, listen: tuple[str, int], compact_every: int) -> None:
    """Run the embedded store's writer and fan-out until SIGTERM or SIGINT."""
    from ..store import EmbeddedWriter

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with EmbeddedWriter(db, host=listen[0], port=listen[1], compact_every=compact_every) as w:
        host, port = w.address
        click.echo(json.dumps({"listen": f"{host}:{port}", "store_id": w.store_id, "seq": w.seq}))
        stop.wait()


@store.command()
@click.option("--db", type=click.Path(path_type=Path), required=True, help="The copy's file.")
@_options
@_handled
def replica(db: Path, connect: tuple[str, int], etcd: str | None, prefix: str) -> None:
    """Keep a replica's copy in a local file until SIGTERM or SIGINT.

    Prints one JSON line (its file and sequence number) once it holds what the store
    held when it connected."""
    from ..store import StoreError

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    r = _replica(connect, etcd, prefix, db)
    try:
        while not stop.is_set():  # a store not up yet is waited for, not an error
            try:
                _synced(r, 1.0)
                break
            except StoreError:
                continue
        if not stop.is_set():
            click.echo(json.dumps({"db": str(db), "seq": r.seq}))  # click.echo flushes
        stop.wait()
    finally:
        r.close()


@store.command()
@click.argument("key")
@click.argument("value")
@_options
@_handled
def put(key: str, value: str, connect: tuple[str, int], etcd: str | None, prefix: str) -> None:
    """Set KEY to VALUE; print the sequence number the write got."""
    if not key:
        raise click.BadParameter("a key is not empty", param_hint="KEY")
    w = _writer(connect, etcd, prefix)
    try:
        click.echo(w.put(key, value.encode()))
    finally:
        w.close()


@store.command()
@click.argument("key")
@_options
@_handled
def delete(key: str, connect: tuple[str, int], etcd: str | None, prefix: str) -> None:
    """Delete KEY; print the sequence number the write got."""
    if not key:
        raise click.BadParameter("a key is not empty", param_hint="KEY")
    w = _writer(connect, etcd, prefix)
    try:
        click.echo(w.delete(key))
    finally:
        w.close()


@store.command()
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Every key under KEY, as JSON.")
@_options
@_handled
def get(key: str, as_json: bool, connect: tuple[str, int], etcd: str | None, prefix: str) -> int:
    """Print KEY's value from a fresh replica (exit status 1 if there is none).

    With ``--json``, KEY is a prefix and every key under it is printed."""
    r = _replica(connect, etcd, prefix)
    try:
        _synced(r, 10.0)
        if as_json:
            items = {k: _value(v) for k, v in sorted(r.items(key).items())}
            click.echo(json.dumps({"seq": r.seq, "items": items}, indent=1))
            return 0
        value = r.get(key)
    finally:
        r.close()
    if value is None:
        return 1
    click.echo(_value(value))
    return 0


@store.command()
@click.argument("prefix_", metavar="[KEY_PREFIX]", default="")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many writes.")
@_options
@_handled
def watch(
    prefix_: str, count: int | None, connect: tuple[str, int], etcd: str | None, prefix: str
) -> None:
    """Print each write under KEY_PREFIX as a JSON line, from now on, until interrupted."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    r = _replica(connect, etcd, prefix)
    try:
        _synced(r, 10.0)
        with r.watch(prefix_) as w:
            seen = 0
            while not stop.is_set() and (count is None or seen < count):
                b = w.get(timeout=0.2)
                if b is None:
                    continue
                seen += 1
                changes = {c.key: None if c.value is None else _value(c.value) for c in b.changes}
                click.echo(json.dumps({"seq": b.seq, "changes": changes}))
    finally:
        r.close()
