"""``anyedge control plan``: what would the Traffic Manager do now?

Reads one observation (``--input OBS.json``), the moves in force (``--state STATE.json``,
default none) and, optionally, a predictor atlas (``--atlas``) for withdrawals; prints the
plan — every action with its reason — as a table or, with ``--json``, as JSON together
with the state after it (which can be fed back as ``--state`` next time), or with
``--csv`` the actions as CSV.  The formats
are in ``docs/control.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from ..control.codec import (
    ObservationIn,
    StateIn,
    observation_from,
    plan_to,
    state_from,
    state_to,
)
from ..control.core import Failover, State, apply, decide
from ..control.reasons import Names
from ..errors import InputError
from ..model.files.text import read_json
from .control import control
from .output import console, csv_option, one_format, write_csv

if TYPE_CHECKING:  # loaded only with --atlas: the predictor is not needed to plan
    from ..predict import Atlas


def _failover(atlas: Atlas, names: Names, path: Path) -> Failover:
    """Where each observed site's users go if it withdraws, by the atlas's single-site
    scenarios.  A site the atlas does not know is marked unknown (no withdrawal there);
    users sent to a site the observation does not cover count as lost."""
    if atlas.data.prefix not in names.prefixes:
        raise InputError.one(
            path,
            "prefix",
            f"this atlas is for {atlas.data.prefix}, which no site of the observation announces",
        )
    n = len(names.sites)
    share = np.zeros((n, n))
    known = np.zeros(n, dtype=np.bool_)
    for sc in atlas.scenarios:
        if sc.kind == "single" and sc.failed and sc.failed[0] in names.sites:
            s = names.sites.index(sc.failed[0])
            known[s] = True
            for f in sc.to:
                if f.site in names.sites:
                    share[s, names.sites.index(f.site)] = f.share
    return Failover(share=share, known=known)


def _load_atlas(path: Path) -> Atlas:
    from ..predict import Atlas

    return Atlas.load(path)


@control.command("plan")
@click.option(
    "--input",
    "obs_file",
    type=click.Path(path_type=Path),
    required=True,
    help="Observation JSON: sites' utilisation, CPU per plan, thresholds, latencies.",
)
@click.option(
    "--state",
    "state_file",
    type=click.Path(path_type=Path),
    help="Moves in force (JSON), e.g. the 'state' of a previous --json plan.",
)
@click.option(
    "--atlas",
    "atlas_file",
    type=click.Path(path_type=Path),
    help="Predictor atlas, so that withdrawals can be checked.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan and the next state as JSON.")
@csv_option
def plan_cmd(
    obs_file: Path, state_file: Path | None, atlas_file: Path | None, as_json: bool, as_csv: bool
) -> None:
    """Print the plan the Traffic Manager would make for one observation."""
    one_format(as_json, as_csv)
    doc = read_json(obs_file, ObservationIn)
    try:
        obs, cfg, names = observation_from(doc)
    except KeyError as e:
        place, _, msg = str(e.args[0]).partition(": ")
        raise InputError.one(obs_file, place, msg) from None
    if state_file is not None:
        try:
            state = state_from(read_json(state_file, StateIn), names)
        except KeyError as e:
            place, _, msg = str(e.args[0]).partition(": ")
            raise InputError.one(state_file, place, msg) from None
    else:
        state = State.empty(
            len(names.sites), len(names.plans), len(names.sections), len(names.prefixes)
        )
    failover = (
        _failover(_load_atlas(atlas_file), names, atlas_file) if atlas_file is not None else None
    )
    plan = decide(obs, state, cfg, doc.now, failover)
    after = apply(state, plan, doc.now)
    if as_json:
        click.echo(
            json.dumps({"actions": plan_to(plan, names), "state": state_to(after, names)}, indent=2)
        )
        return
    if as_csv:
        cols = ["kind", "site", "plan", "section", "to", "prefix", "share", "cpu", "reason"]
        write_csv(plan_to(plan, names), cols)
        return
    con = console()
    if plan.empty:
        con.print("nothing to do" + ("" if not plan.actions else ":"))
    from rich.table import Table

    t = Table(title=f"plan at t={doc.now:g}", show_lines=False)
    for col in ("action", "site", "plan", "to", "share", "ms/s", "reason"):
        t.add_column(col, justify="right" if col in ("share", "ms/s") else "left")
    for a in plan_to(plan, names):
        t.add_row(
            a["kind"],
            a["site"] or "all",
            a.get("plan", a.get("section", "")),
            a.get("to", a.get("prefix", "")),
            f"{100 * a['share']:.1f} %" if "share" in a else "",
            f"{a['cpu']:,.0f}" if "cpu" in a else "",
            a["reason"],
        )
    if plan.actions:
        con.print(t)
