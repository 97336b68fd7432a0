"""What several commands share: the world they work on, and the prefix they are about."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import InputError

if TYPE_CHECKING:
    from ..model.world import World

topology_option = click.option(
    "-t",
    "--topology",
    type=click.Path(path_type=Path),
    help="Topology YAML (or directory); default: the default world.",
)


def world_from(topology: Path | None) -> World:
    """The topology given with ``-t``, or the default world."""
    from ..model.files import load_world
    from ..model.worldgen import WorldOptions, build_world

    return load_world(topology) if topology is not None else build_world(WorldOptions())


def canonical_prefix(prefix: str) -> str:
    try:
        return str(ipaddress.ip_network(prefix, strict=False))
    except ValueError:
        raise InputError.one("command line", "--prefix", f"not a prefix: {prefix!r}") from None


def prefix_row(world: World, prefix: str | None) -> int:
    """Row of ``--prefix`` among the world's prefixes (default: the first)."""
    cidrs = world.network.prefixes.cidr
    if not cidrs:
        raise InputError.one("topology", "prefixes", "the topology announces no prefix")
    if prefix is None:
        return 0
    canon = canonical_prefix(prefix)
    if canon not in cidrs:
        raise InputError.one(
            "command line",
            "--prefix",
            f"{canon} is not one of the topology's prefixes: {', '.join(cidrs)}",
        )
    return cidrs.index(canon)
