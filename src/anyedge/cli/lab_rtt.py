"""``anyedge lab rtt``: the lab's round trips to the anycast DNS address beside the twin's.

Attaches to the running lab, checks that its links carry delays (else there is nothing
for the twin to predict: exit 2) and that DNS answers at the sites (else: run ``anyedge
lab dns``, exit 2), then :func:`anyedge.lab.rtt_report.report` measures every client
and prices the routing engine's path for it; printed per client and summed up (median,
90th percentile, catchments agreeing).  Registered on ``anyedge lab`` when :mod:`.lab`
is imported.  See docs/dns.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import InputError
from .lab import _attach, _table, dir_option, json_option, lab_command, name_option


@lab_command()
@dir_option
@name_option
@click.option(
    "--count",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="DNS queries per client; its round trip is the fastest.",
)
@click.option(
    "--no-overhead",
    is_flag=True,
    help="Do not measure the delay lines' and the query's cost (compare the raw delays).",
)
@json_option
def rtt(
    directory: Path | None, name: str | None, count: int, no_overhead: bool, as_json: bool
) -> None:
    """Time DNS queries from every client to the anycast address, beside the twin's prediction."""
    from ..lab import rtt_report

    _world, plan, state = _attach(directory, name)
    if not rtt_report.shaped(plan):
        raise InputError.one(
            state.topology,
            "lab.links",
            "no link carries a delay (delay_ms), so the twin predicts no round trip; "
            "bring up a topology from `anyedge lab generate --delays`",
        )
    if not rtt_report.answering(plan):
        raise InputError.one(
            "command line", "lab rtt", "no DNS server answers at any site: run `anyedge lab dns`"
        )
    r = rtt_report.report(_world, plan, state, count, correct=not no_overhead)
    d = r.to_dict()
    if as_json:
        click.echo(json.dumps(d, indent=1))
        return
    _table(
        [
            {
                "client": row["client"],
                "twin site": row["predicted"],
                "DNS site": row["site"],
                "Verfploeter": row["verfploeter"],
                "links": row["crossings"],
                "twin ms": row["twin_ms"],
                "twin + overhead": row["expected_ms"],
                "lab ms": row["lab_ms"],
            }
            for row in d["rows"]
        ],
        "round trips to the anycast address (lab: fastest of "
        f"{count} DNS quer{'y' if count == 1 else 'ies'})",
    )
    o = d["overhead"]
    withdrawn = ", ".join(d["withdrawn"]) or "none"
    click.echo(
        f"sites withdrawn: {withdrawn}; overhead: {o['crossing_ms']} ms per shaped link "
        f"crossed, {o['local_ms']} ms for asking"
    )
    for k in ("lab", "twin", "twin_plus_overhead"):
        click.echo(f"{k:19} median {d[k]['median_ms']:8.3f} ms   p90 {d[k]['p90_ms']:8.3f} ms")
    click.echo(
        f"lab − (twin + overhead): median {d['median_diff_ms']:+.3f} ms, p90 "
        f"{d['p90_diff_ms']:+.3f} ms; catchments agree for {d['agree']} of {d['clients']} "
        f"clients; Verfploeter = DNS site for {d['verfploeter_is_dns']}"
    )
