"""Bad input reaches the user as one line per problem on stderr and exit status 2.

Every case starts from a small valid topology (:data:`BASE`, the same world as
``tests/data/tiny.yaml``, kept here so that the line numbers asserted below are those of
text in this file), changes it in one place, runs ``anyedge world -t FILE`` in-process
and checks that stderr names the file, the line, the place and the problem, that stdout
stays empty and that no traceback escapes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import anyedge.model.files.atomic as atomic_module
from anyedge.cli.main import main
from anyedge.model.files import AS_REL_FILE, TOPOLOGY_FILE, load_world, parse_world, save_world

PREFIX = "anyedge: error: "

# Line for line the text of tests/data/tiny.yaml: sites CHC, AKL and IAD start on lines 4,
# 12 and 19, prefixes on 30, internet on 33 (relations 34-38, ases 39, metros 44,
# eyeballs 47-50).  The cases below expect these line numbers.
BASE = """\
# The world of tests/data/tiny.yaml: the base every bad file is made from.
asn: 64500
sites:
  - code: CHC
    city: Christchurch
    country: NZ
    lat: -43.53
    lon: 172.63
    sections: [{name: CHC01, servers: 8, cpu_per_server: 64000}]
    transit: [2001]
    peers: [10001]
  - code: AKL
    city: Auckland
    country: NZ
    lat: -36.85
    lon: 174.76
    sections: [{name: AKL01, servers: 16, cpu_per_server: 64000}]
    transit: [2001, 1001]
  - code: IAD
    city: Washington
    country: US
    lat: 38.90
    lon: -77.04
    kind: mcp
    thresholds: {maximum: 0.9, target: 0.85, acceptable: 0.7}
    sections:
      - {name: IAD01, servers: 40, cpu_per_server: 96000}
      - {name: IAD02, servers: 40, cpu_per_server: 96000}
    transit: [1001]
prefixes:
  - {cidr: 198.51.100.0/24, sites: all}
  - {cidr: "2001:db8::/48", sites: [AKL, IAD]}
internet:
  relations:
    - "1001|2001|-1"
    - "2001|10001|-1"
    - "2001|10002|-1"
    - "10001|10002|0"
  ases:
    - {asn: 1001, name: Tier1, kind: tier1, metros: [2193733]}
    - {asn: 2001, name: Oceania-Transit, kind: transit, country: NZ}
    - {asn: 10001, kind: access, country: NZ}
    - {asn: 10002, kind: access, country: NZ}
  metros:
    - {id: 2192362, name: Christchurch, country: NZ, lat: -43.53, lon: 172.63, population: 419200}
    - {id: 2193733, name: Auckland, country: NZ, lat: -36.85, lon: 174.76, population: 1547200}
  eyeballs:
    - {asn: 10001, metro: 2192362, rps: 20000}
    - {asn: 10002, metro: 2192362, rps: 5000, mix: [0.6, 0.2, 0.1, 0.1]}
    - {asn: 10001, metro: 2193733, rps: 60000}
"""

RELATIONS_BLOCK = """\
  relations:
    - "1001|2001|-1"
    - "2001|10001|-1"
    - "2001|10002|-1"
    - "10001|10002|0"
"""

METROS_BLOCK = """\
  metros:
    - {id: 2192362, name: Christchurch, country: NZ, lat: -43.53, lon: 172.63, population: 419200}
    - {id: 2193733, name: Auckland, country: NZ, lat: -36.85, lon: 174.76, population: 1547200}
"""

EYEBALLS_BLOCK = """\
  eyeballs:
    - {asn: 10001, metro: 2192362, rps: 20000}
    - {asn: 10002, metro: 2192362, rps: 5000, mix: [0.6, 0.2, 0.1, 0.1]}
    - {asn: 10001, metro: 2193733, rps: 60000}
"""

# The relations of BASE as an as-rel file: line 1 a comment, relations on lines 2..5.
GOOD_AS_REL = (
    "# provider|customer|-1, peer|peer|0\n"
    "1001|2001|-1\n"
    "2001|10001|-1\n"
    "2001|10002|-1\n"
    "10001|10002|0\n"
)

METROS_CSV = (
    "id,name,country,lat,lon,population\n"
    "2192362,Christchurch,NZ,-43.53,172.63,419200\n"
    "2193733,Auckland,NZ,-36.85,174.76,1547200\n"
)

LAB = """\
lab:
  nodes:
    r1: {kind: router, asn: 2001}
    chc: {kind: site, site: CHC}
  links:
    - {endpoints: ["r1:eth0", "chc:eth0"], relation: provider-customer}
    - {endpoints: ["r1:eth1", "ghost:eth0"]}
"""

# A lab whose structure is sound: a site buying transit, a client behind the router.
LAB_OK = """\
lab:
  nodes:
    r1: {kind: router, asn: 2001}
    chc: {kind: site, site: CHC}
    c1: {kind: client}
  links:
    - {endpoints: ["r1:eth0", "chc:eth0"], relation: provider-customer}
    - {endpoints: ["r1:eth1", "c1:eth0"]}
"""


def edit(text: str, *changes: tuple[str, str]) -> str:
    """Apply each (old, new) replacement; ``old`` must occur exactly once."""
    for old, new in changes:
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
        text = text.replace(old, new)
    return text


# BASE naming ``rel.as-rel`` (on line 34) instead of listing its relations inline.
AS_REL_TOPOLOGY = edit(BASE, (RELATIONS_BLOCK, "  as_rel: rel.as-rel\n"))


@dataclass(frozen=True)
class Case:
    """One bad input and what stderr must say about it."""

    id: str
    text: str | bytes  # the topology file
    line: int | None  # expected line (in ``file``), None if the message has none
    place: str  # expected place, "" if the message has none
    words: tuple[str, ...]  # distinctive words of the problem
    file: str = TOPOLOGY_FILE  # the file the message must name (relative to tmp_path)
    extra: dict[str, str] = field(default_factory=dict)  # more files beside it
    target: str = TOPOLOGY_FILE  # what ``-t`` is given, relative to tmp_path ("" = tmp_path)


CASES = [
    Case(
        "missing-required-field",
        edit(BASE, ("    lat: -36.85\n", "")),
        12,  # the line of the site the field is missing from
        "sites[1].lat",
        ("required field is missing",),
    ),
    Case(
        "unknown-field-typo",
        edit(BASE, ("{name: CHC01, servers: 8,", "{name: CHC01, sever: 8,")),
        9,
        "sites[0].sections[0].sever",
        ("unknown field",),
    ),
    Case(
        "unknown-site-field",
        edit(BASE, ("    peers: [10001]\n", "    peer: [10001]\n")),
        11,
        "sites[0].peer",
        ("unknown field",),
    ),
    Case(
        "unknown-site-in-prefix",
        edit(BASE, ("sites: [AKL, IAD]", "sites: [AKL, SYD]")),
        32,
        "prefixes[1].sites[1]",
        ("unknown site SYD",),
    ),
    Case(
        "duplicate-iata-code",
        edit(BASE, ("  - code: AKL\n", "  - code: CHC\n")),
        12,
        "sites[1].code",
        ("site CHC is already defined at sites[0]",),
    ),
    Case(
        "negative-servers",
        edit(BASE, ("servers: 16,", "servers: -16,")),
        17,
        "sites[1].sections[0].servers",
        ("greater than or equal to 0", "-16"),
    ),
    Case(
        "negative-cpu-per-server",
        edit(
            BASE,
            (
                "{name: IAD02, servers: 40, cpu_per_server: 96000}",
                "{name: IAD02, servers: 40, cpu_per_server: -96000}",
            ),
        ),
        28,
        "sites[2].sections[1].cpu_per_server",
        ("greater than or equal to 0", "-96000"),
    ),
    Case(
        "section-named-for-another-site",
        edit(BASE, ("{name: AKL01,", "{name: CHC02,")),
        17,
        "sites[1].sections[0].name",
        ("section CHC02 of site AKL must be named AKLNN",),
    ),
    Case(
        "single-site-with-two-sections",
        edit(
            BASE,
            (
                "{name: AKL01, servers: 16, cpu_per_server: 64000}]",
                "{name: AKL01, servers: 16, cpu_per_server: 64000}, "
                "{name: AKL02, servers: 2, cpu_per_server: 1000}]",
            ),
        ),
        17,
        "sites[1].sections",
        ("exactly one section", "AKL has 2"),
    ),
    Case(
        "mcp-site-with-one-section",
        edit(BASE, ("      - {name: IAD02, servers: 40, cpu_per_server: 96000}\n", "")),
        27,  # the first line of the section list
        "sites[2].sections",
        ("two or more sections",),
    ),
    Case(
        "thresholds-out-of-order",
        edit(BASE, ("acceptable: 0.7}", "acceptable: 0.95}")),
        25,
        "sites[2].thresholds",
        ("acceptable <= target <= maximum", "0.95 / 0.85 / 0.9"),
    ),
    Case(
        "threshold-above-one",
        edit(BASE, ("{maximum: 0.9,", "{maximum: 1.5,")),
        25,
        "sites[2].thresholds.maximum",
        ("less than or equal to 1", "1.5"),
    ),
    Case(
        "cidr-host-bits-set",
        edit(BASE, ("cidr: 198.51.100.0/24", "cidr: 198.51.100.1/24")),
        31,
        "prefixes[0].cidr",
        ("not a valid prefix", "has host bits set"),
    ),
    Case(
        "cidr-garbage",
        edit(BASE, ("cidr: 198.51.100.0/24", "cidr: 198.51.300.0/24")),
        31,
        "prefixes[0].cidr",
        ("not a valid prefix", "198.51.300.0/24"),
    ),
    Case(
        "duplicate-prefix",
        edit(
            BASE,
            (
                "sites: [AKL, IAD]}\n",
                "sites: [AKL, IAD]}\n  - {cidr: 198.51.100.0/24, sites: [CHC]}\n",
            ),
        ),
        33,
        "prefixes[2].cidr",
        ("prefix 198.51.100.0/24 is already listed at prefixes[0]",),
    ),
    Case(
        "unknown-iso-country",
        edit(BASE, ("    country: US\n", "    country: XX\n")),
        21,
        "sites[2].country",
        ("unknown ISO country code 'XX'",),
    ),
    Case(
        "country-not-a-code",
        edit(BASE, ("    country: US\n", "    country: USA\n")),
        21,
        "sites[2].country",
        ("should match pattern", "'USA'"),
    ),
    Case(
        "session-asn-not-in-internet",
        edit(BASE, ("    peers: [10001]\n", "    peers: [10009]\n")),
        11,
        "sites[0].peers[0]",
        ("AS10009 is not in the Internet",),
    ),
    Case(
        "transit-asn-not-in-internet",
        edit(BASE, ("    transit: [2001, 1001]\n", "    transit: [2001, 3356]\n")),
        18,
        "sites[1].transit[1]",
        ("AS3356 is not in the Internet",),
    ),
    Case(
        "asn-both-transit-and-peer",
        edit(BASE, ("    peers: [10001]\n", "    peers: [2001]\n")),
        4,
        "sites[0]",
        ("AS2001 is both a transit provider and a peer of CHC",),
    ),
    Case(
        "plan-shares-do-not-sum-to-one",
        edit(
            BASE,
            (
                "asn: 64500\n",
                "asn: 64500\n"
                "plans:\n"
                "  - {name: free, share: 0.45, cpu_ms_per_request: 0.8}\n"
                "  - {name: pro, share: 0.2, cpu_ms_per_request: 1.0}\n"
                "  - {name: business, share: 0.15, cpu_ms_per_request: 1.3}\n"
                "  - {name: enterprise, share: 0.1, cpu_ms_per_request: 1.6}\n",
            ),
        ),
        4,  # the first line of the list
        "plans",
        ("plan shares must sum to 1", "they sum to 0.9"),
    ),
    Case(
        "eyeball-unknown-metro",
        edit(
            BASE, ("{asn: 10001, metro: 2193733, rps: 60000}", "{asn: 10001, metro: 999, rps: 1}")
        ),
        50,
        "internet.eyeballs[2].metro",
        ("unknown metro 999",),
    ),
    Case(
        "eyeball-mix-not-summing-to-one",
        edit(BASE, ("mix: [0.6, 0.2, 0.1, 0.1]", "mix: [0.6, 0.2, 0.1, 0.2]")),
        49,
        "internet.eyeballs[1].mix",
        ("mix must sum to 1", "1.1"),
    ),
    Case(
        "as-metro-unknown",
        edit(BASE, ("metros: [2193733]", "metros: [2193734]")),
        40,
        "internet.ases[0].metros[0]",
        ("unknown metro 2193734",),
    ),
    Case(
        "lab-link-to-unknown-node",
        BASE + LAB,
        57,
        "lab.links[1].endpoints[1]",
        ("unknown node 'ghost'",),
    ),
    Case(
        "lab-site-node-unknown-site",
        BASE + edit(LAB, ("site: CHC}", "site: SYD}"), ("ghost:eth0", "chc:eth1")),
        54,
        "lab.nodes.chc.site",
        ("unknown site SYD",),
    ),
    Case(
        "lab-site-sells-transit",
        BASE + edit(LAB_OK, ('["r1:eth0", "chc:eth0"]', '["chc:eth0", "r1:eth0"]')),
        57,
        "lab.links[0]",
        ("a site buys transit", "the router is the provider"),
    ),
    Case(
        "lab-client-behind-a-site",
        BASE + edit(LAB_OK, ('["r1:eth1", "c1:eth0"]', '["chc:eth1", "c1:eth0"]')),
        58,
        "lab.links[1]",
        ("a client connects to a router",),
    ),
    Case(
        "lab-site-twice",
        BASE
        + edit(LAB_OK, ("    c1: {kind: client}\n", "    chc2: {kind: site, site: CHC}\n")).replace(
            '["r1:eth1", "c1:eth0"]}', '["r1:eth1", "chc2:eth0"], relation: peer}'
        ),
        55,
        "lab.nodes.chc2.site",
        ("site CHC is already chc",),
    ),
    Case(
        "lab-router-with-anyedge-asn",
        BASE + edit(LAB_OK, ("asn: 2001}", "asn: 64500}")),
        53,
        "lab.nodes.r1.asn",
        ("64500 is anyedge's own ASN",),
    ),
    Case(
        "lab-router-not-frr",
        BASE + edit(LAB_OK, ("asn: 2001}", "asn: 2001, speaker: bird}")),
        53,
        "lab.nodes.r1.speaker",
        ("routers run FRR",),
    ),
    Case(
        "lab-two-links-between-one-pair",
        BASE + LAB_OK + '    - {endpoints: ["r1:eth2", "chc:eth1"], relation: peer}\n',
        59,
        "lab.links[2]",
        ("r1 and chc are already linked by links[0]",),
    ),
    Case(
        "session-prepend-without-session",
        edit(
            BASE,
            ("    transit: [2001, 1001]\n", "    transit: [2001, 1001]\n    prepend: {3356: 1}\n"),
        ),
        19,
        "sites[1].prepend[3356]",
        ("AKL has no session with AS3356",),
    ),
    Case(
        "lab-prepend-on-a-client-link",
        BASE + edit(LAB_OK, ('["r1:eth1", "c1:eth0"]}', '["r1:eth1", "c1:eth0"], prepend: 2}')),
        58,
        "lab.links[1].prepend",
        ("prepend is what a site sends on its session with a router", "a router and a client"),
    ),
    Case(
        "session-communities-without-session",
        edit(
            BASE,
            (
                "    transit: [2001, 1001]\n",
                "    transit: [2001, 1001]\n    communities: {3356: [no-export]}\n",
            ),
        ),
        19,
        "sites[1].communities[3356]",
        ("AKL has no session with AS3356",),
    ),
    Case(
        "lab-med-on-a-client-link",
        BASE + edit(LAB_OK, ('["r1:eth1", "c1:eth0"]}', '["r1:eth1", "c1:eth0"], med: 5}')),
        58,
        "lab.links[1].med",
        ("med is what a site sends on its session with a router",),
    ),
    Case(
        "lab-action-community-of-a-32-bit-asn",
        BASE
        + edit(
            LAB_OK,
            (
                '["r1:eth0", "chc:eth0"], relation: provider-customer}',
                '["r1:eth0", "chc:eth0"], relation: provider-customer, communities: [no-peers]}',
            ),
            ("asn: 2001}", "asn: 4200000001}"),
        ),
        57,
        "lab.links[0].communities",
        ("no-peers: an action community is ASN:990 or ASN:991", "AS4200000001"),
    ),
    Case(
        "lab-interface-name-clash",
        BASE + edit(LAB_OK, ('"r1:eth0", "chc:eth0"', '"r1", "chc"'), ("r1:eth1", "r1:eth1")),
        58,
        "lab.links[1].endpoints[0]",
        ("r1:eth1 is the name links[0] gets for r1",),
    ),
    Case(
        "lab-provider-loop",
        BASE
        + edit(
            LAB_OK,
            (
                "    c1: {kind: client}\n",
                "    c1: {kind: client}\n"
                "    r2: {kind: router, asn: 2002}\n    r3: {kind: router, asn: 2003}\n",
            ),
        )
        + '    - {endpoints: ["r1:eth2", "r2:eth0"], relation: provider-customer}\n'
        + '    - {endpoints: ["r2:eth1", "r3:eth0"], relation: provider-customer}\n'
        + '    - {endpoints: ["r3:eth1", "r1:eth3"], relation: provider-customer}\n',
        59,
        "lab.links",
        ("provider loop", "r1 -> r3 -> r2 -> r1"),
    ),
    Case(
        "lab-routers-apart",
        BASE
        + edit(
            LAB_OK,
            (
                "    c1: {kind: client}\n",
                "    c1: {kind: client}\n    r2: {kind: router, asn: 2002}\n",
            ),
        ),
        56,
        "lab.nodes.r2",
        ("routers must be joined by router links", "r2 cannot reach r1"),
    ),
    Case(
        "inline-relation-not-integer",
        edit(BASE, ('"2001|10001|-1"', '"2001|10001|x"')),
        36,
        "internet.relations[1]",
        ("ASNs and relation must be integers", "2001|10001|x"),
    ),
    Case(
        "inline-duplicate-relation",
        edit(BASE, ('    - "10001|10002|0"\n', '    - "10001|10002|0"\n    - "10002|10001|0"\n')),
        39,
        "internet.relations[4]",
        ("AS10002 and AS10001 are already related on relations[3]",),
    ),
    Case(
        "inline-provider-loop",
        edit(BASE, ('    - "10001|10002|0"\n', '    - "10002|1001|-1"\n')),
        38,
        "internet.relations[3]",
        ("provider loop", "1001", "2001", "10002"),
    ),
    Case(
        "invalid-yaml-syntax",
        edit(BASE, ("    city: Auckland\n", "    city: Auckland: North Island\n")),
        13,
        "",
        ("not valid YAML", "mapping values are not allowed"),
    ),
    Case(
        "invalid-yaml-unclosed-bracket",
        edit(BASE, ("    transit: [1001]\n", "    transit: [1001\n")),
        30,  # where the parser finds out
        "",
        ("not valid YAML",),
    ),
    Case(
        "topology-is-a-list",
        "- code: CHC\n- code: AKL\n",
        None,
        "",
        ("a topology must be a YAML mapping",),
    ),
    Case(
        "topology-is-empty",
        "# nothing here\n",
        None,
        "",
        ("a topology must be a YAML mapping",),
    ),
    Case(
        "topology-not-utf8",
        BASE.encode() + b"# caf\xe9\n",
        None,
        "",
        ("not a text file",),
    ),
    Case(
        "topology-missing",
        BASE,
        None,
        "",
        ("cannot read", "No such file or directory"),
        file="nope.yaml",
        target="nope.yaml",
    ),
    Case(
        "directory-without-topology",
        BASE,
        None,
        "",
        ("cannot read", "No such file or directory"),
        file=f"empty/{TOPOLOGY_FILE}",
        target="empty",
    ),
    Case(
        "as-rel-file-missing",
        edit(BASE, (RELATIONS_BLOCK, "  as_rel: missing.as-rel\n")),
        34,
        "internet.as_rel",
        ("as-rel file", "missing.as-rel does not exist"),
    ),
    Case(
        "as-rel-provider-loop",
        AS_REL_TOPOLOGY,
        4,  # 3001|1001|-1 closes the loop 1001 -> 3001 -> 2001 -> 1001
        "",
        ("provider loop: 1001 -> 3001 -> 2001 -> 1001",),
        file="rel.as-rel",
        extra={"rel.as-rel": "# a loop\n1001|2001|-1\n2001|3001|-1\n3001|1001|-1\n"},
    ),
    Case(
        "as-rel-wrong-number-of-fields",
        AS_REL_TOPOLOGY,
        3,
        "",
        ("expected 'a|b|rel' or 'a|b|rel|source'", "2001|10001"),
        file="rel.as-rel",
        extra={"rel.as-rel": edit(GOOD_AS_REL, ("2001|10001|-1\n", "2001|10001\n"))},
    ),
    Case(
        "as-rel-not-an-integer",
        AS_REL_TOPOLOGY,
        4,
        "",
        ("ASNs and relation must be integers", "AS2001|10002|-1"),
        file="rel.as-rel",
        extra={"rel.as-rel": edit(GOOD_AS_REL, ("2001|10002|-1\n", "AS2001|10002|-1\n"))},
    ),
    Case(
        "as-rel-relation-code-2",
        AS_REL_TOPOLOGY,
        5,
        "",
        ("relation must be -1 (provider|customer) or 0 (peers), got 2",),
        file="rel.as-rel",
        extra={"rel.as-rel": edit(GOOD_AS_REL, ("10001|10002|0\n", "10001|10002|2\n"))},
    ),
    Case(
        "as-rel-asn-out-of-range",
        AS_REL_TOPOLOGY,
        2,
        "",
        ("ASN out of range", "4294967296"),
        file="rel.as-rel",
        extra={"rel.as-rel": edit(GOOD_AS_REL, ("1001|2001|-1\n", "1001|4294967296|-1\n"))},
    ),
    Case(
        "as-rel-duplicate-relation",
        AS_REL_TOPOLOGY,
        6,
        "",
        ("AS2001 and AS1001 are already related on line 2",),
        file="rel.as-rel",
        extra={"rel.as-rel": GOOD_AS_REL + "2001|1001|0|bgp\n"},
    ),
    Case(
        "as-rel-self-relation",
        AS_REL_TOPOLOGY,
        6,
        "",
        ("AS2001 is related to itself",),
        file="rel.as-rel",
        extra={"rel.as-rel": GOOD_AS_REL + "2001|2001|0\n"},
    ),
    Case(
        "metros-csv-bad-row",
        edit(BASE, (METROS_BLOCK, "  metros: metros.csv\n")),
        3,
        "lat",
        ("less than or equal to 90", "200"),
        file="metros.csv",
        extra={"metros.csv": edit(METROS_CSV, (",-36.85,", ",200,"))},
    ),
    Case(
        "metros-csv-bad-header",
        edit(BASE, (METROS_BLOCK, "  metros: metros.csv\n")),
        1,
        "header",
        ("the first line must be id,name,country,lat,lon,population",),
        file="metros.csv",
        extra={"metros.csv": edit(METROS_CSV, ("id,name,", "id,city,"))},
    ),
    Case(
        "metros-csv-missing",
        edit(BASE, (METROS_BLOCK, "  metros: metros.csv\n")),
        44,
        "internet.metros",
        ("metros file", "metros.csv does not exist"),
    ),
    Case(
        "eyeballs-csv-unknown-as",
        edit(BASE, (EYEBALLS_BLOCK, "  eyeballs: eyeballs.csv\n")),
        4,
        "asn",
        ("AS10009 is not in the Internet",),
        file="eyeballs.csv",
        extra={
            "eyeballs.csv": "asn,metro,rps,mix\n"
            "10001,2192362,20000.0,\n"
            "10002,2192362,5000.0,0.6 0.2 0.1 0.1\n"
            "10009,2193733,60000.0,\n"
        },
    ),
    Case(
        "eyeballs-csv-bad-mix",
        edit(BASE, (EYEBALLS_BLOCK, "  eyeballs: eyeballs.csv\n")),
        3,
        "mix",
        ("plan shares must be numbers", "0.6 lots"),
        file="eyeballs.csv",
        extra={
            "eyeballs.csv": "asn,metro,rps,mix\n"
            "10001,2192362,20000.0,\n"
            "10002,2192362,5000.0,0.6 lots\n"
        },
    ),
]


def write_case(case: Case, tmp_path: Path) -> Path:
    """Write the case's files into ``tmp_path``; return what ``-t`` is given."""
    topo = tmp_path / TOPOLOGY_FILE
    if isinstance(case.text, bytes):
        topo.write_bytes(case.text)
    else:
        topo.write_text(case.text, encoding="utf-8")
    for name, content in case.extra.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    (tmp_path / "empty").mkdir()
    return tmp_path / case.target


def expected_head(file: Path, line: int | None, place: str) -> str:
    """``anyedge: error: FILE[:LINE][: PLACE]: `` as the command line must print it."""
    head = str(file) if line is None else f"{file}:{line}"
    if place:
        head += f": {place}"
    return f"{PREFIX}{head}: "


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_base_topology_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The base is good, so each case below fails because of its one change."""
    path = tmp_path / TOPOLOGY_FILE
    path.write_text(BASE, encoding="utf-8")
    rc, out, err = run_cli(["world", "-t", str(path)], capsys)
    assert rc == 0, err
    assert err == ""
    assert "anyedge world" in out
    tiny = (Path(__file__).parent / "data" / "tiny.yaml").read_text(encoding="utf-8")
    assert load_world(path) == parse_world(tiny)
    # the blocks the cases swap out are in BASE, and what they swap in is good too
    assert all(BASE.count(b) == 1 for b in (RELATIONS_BLOCK, METROS_BLOCK, EYEBALLS_BLOCK))
    (tmp_path / "rel.as-rel").write_text(GOOD_AS_REL, encoding="utf-8")
    (tmp_path / "metros.csv").write_text(METROS_CSV, encoding="utf-8")
    path.write_text(
        edit(AS_REL_TOPOLOGY, (METROS_BLOCK, "  metros: metros.csv\n")), encoding="utf-8"
    )
    assert load_world(path) == parse_world(BASE)


def test_enough_distinct_cases() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 14


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_place_and_reason(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = write_case(case, tmp_path)
    rc, out, err = run_cli(["world", "-t", str(target)], capsys)
    assert rc == 2, err
    assert out == ""
    assert "Traceback" not in err
    assert err.startswith(PREFIX)
    lines = err.splitlines()
    assert all(line.startswith(PREFIX) for line in lines), err
    head = expected_head(tmp_path / case.file, case.line, case.place)
    hits = [line for line in lines if line.startswith(head)]
    assert hits, f"no line starts with {head!r}:\n{err}"
    assert any(all(w in line for w in case.words) for line in hits), err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_topology_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / TOPOLOGY_FILE
    path.write_text(BASE, encoding="utf-8")
    path.chmod(0)
    rc, out, err = run_cli(["world", "-t", str(path)], capsys)
    assert rc == 2
    assert out == ""
    assert err == f"{PREFIX}{path}: cannot read: Permission denied\n"


def test_every_problem_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Three bad lines of an as-rel file: three lines on stderr, in file order."""
    (tmp_path / "rel.as-rel").write_text(
        "1001|2001|-1\n1001|x|-1\n\n# fine\n2001|10001\n2001|10002|7\n10001|10002|0\n",
        encoding="utf-8",
    )
    path = tmp_path / TOPOLOGY_FILE
    path.write_text(AS_REL_TOPOLOGY, encoding="utf-8")
    rc, out, err = run_cli(["world", "-t", str(path)], capsys)
    assert rc == 2
    assert out == ""
    rel = tmp_path / "rel.as-rel"
    assert [line.removeprefix(PREFIX).split(": ")[0] for line in err.splitlines()] == [
        f"{rel}:2",
        f"{rel}:5",
        f"{rel}:6",
    ]


def test_many_problems_are_capped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rel.as-rel").write_text("x|y|z\n" * 25, encoding="utf-8")
    path = tmp_path / TOPOLOGY_FILE
    path.write_text(AS_REL_TOPOLOGY, encoding="utf-8")
    rc, _, err = run_cli(["world", "-t", str(path)], capsys)
    assert rc == 2
    lines = err.splitlines()
    assert len(lines) == 11
    assert lines[-1] == f"{PREFIX}... and 15 more problems"


def test_console_script_exits_2_without_traceback(tmp_path: Path) -> None:
    exe = shutil.which("anyedge")
    assert exe is not None, "the anyedge console script is installed with the package"
    bad = tmp_path / TOPOLOGY_FILE
    bad.write_text(edit(BASE, ("servers: 16,", "servers: -16,")), encoding="utf-8")
    r = subprocess.run(
        [exe, "world", "-t", str(bad)], capture_output=True, text=True, timeout=120, check=False
    )
    assert r.returncode == 2
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith(f"{PREFIX}{bad}:17: sites[1].sections[0].servers: ")


def test_out_into_a_regular_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topo = tmp_path / TOPOLOGY_FILE
    topo.write_text(BASE, encoding="utf-8")
    dest = tmp_path / "taken"
    dest.write_text("keep me\n", encoding="utf-8")
    rc, out, err = run_cli(["world", "-t", str(topo), "--out", str(dest)], capsys)
    assert rc == 2
    assert out == ""
    assert err == f"{PREFIX}{dest}: --out: exists and is not a directory\n"
    assert dest.read_text(encoding="utf-8") == "keep me\n"


def test_out_below_a_regular_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topo = tmp_path / TOPOLOGY_FILE
    topo.write_text(BASE, encoding="utf-8")
    (tmp_path / "taken").write_text("keep me\n", encoding="utf-8")
    rc, out, err = run_cli(["world", "-t", str(topo), "--out", str(tmp_path / "taken/sub")], capsys)
    assert rc == 2
    assert out == ""
    assert err.startswith(PREFIX)


def test_bad_option_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(["world", "--sites", "many"], capsys)
    assert rc == 2
    assert out == ""
    assert "Traceback" not in err
    assert "'many' is not a valid integer" in err


# ------------------------------------------------------------------ atomic saving


def snapshot(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(directory.iterdir())}


SAVED = sorted([TOPOLOGY_FILE, AS_REL_FILE, "metros.csv", "eyeballs.csv"])


@pytest.fixture
def two_worlds(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, str]]:
    """A directory holding the saved base world; the old and the new files' contents."""
    old_world = parse_world(BASE)
    new_world = parse_world(edit(BASE, ("servers: 16,", "servers: 17,"), ("rps: 20000", "rps: 1")))
    new_dir = tmp_path / "new"
    save_world(new_world, new_dir)
    new = snapshot(new_dir)
    out = tmp_path / "out"
    save_world(old_world, out)
    old = snapshot(out)
    assert sorted(old) == SAVED
    assert all(old[n] != new[n] for n in (TOPOLOGY_FILE, "eyeballs.csv"))
    return out, old, new


def test_save_failing_while_writing_leaves_old_files(
    two_worlds: tuple[Path, dict[str, str], dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails before anything is replaced: old files intact, no temporaries."""
    out, old, _ = two_worlds
    real_mkstemp = atomic_module.tempfile.mkstemp
    calls: list[str] = []

    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        calls.append(str(kwargs.get("prefix")))
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(atomic_module.tempfile, "mkstemp", mkstemp)
    with pytest.raises(OSError, match="No space left"):
        save_world(parse_world(edit(BASE, ("servers: 16,", "servers: 17,"))), out)
    monkeypatch.undo()
    assert len(calls) == 3
    assert all(c.startswith(".") for c in calls)  # temporaries are hidden files
    assert snapshot(out) == old


def test_save_failing_while_replacing_leaves_whole_files(
    two_worlds: tuple[Path, dict[str, str], dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename that fails: every file is the whole old or the whole new one, and the
    temporaries are gone.  (The files already renamed stay renamed: the set of files is
    not replaced as one.)"""
    out, old, new = two_worlds
    real_replace = os.replace
    calls: list[str] = []

    def replace(src: str | Path, dst: str | Path) -> None:
        calls.append(Path(dst).name)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(atomic_module.os, "replace", replace)
    new_world = parse_world(edit(BASE, ("servers: 16,", "servers: 17,"), ("rps: 20000", "rps: 1")))
    with pytest.raises(OSError, match="Input/output error"):
        save_world(new_world, out)
    monkeypatch.undo()
    after = snapshot(out)
    assert sorted(after) == SAVED  # no temporaries left behind
    assert all(after[n] in (old[n], new[n]) for n in SAVED)
    assert after[calls[0]] == new[calls[0]]
    assert all(after[n] == old[n] for n in SAVED if n not in calls[:1])


def test_save_over_old_files_replaces_them_all(
    two_worlds: tuple[Path, dict[str, str], dict[str, str]],
) -> None:
    out, _, new = two_worlds
    new_world = parse_world(edit(BASE, ("servers: 16,", "servers: 17,"), ("rps: 20000", "rps: 1")))
    assert save_world(new_world, out) == out / TOPOLOGY_FILE
    assert snapshot(out) == new
    assert load_world(out) == new_world


def test_a_key_given_twice_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """YAML keeps the last of two equal keys; a topology that did so would silently lose
    a whole section, so it is refused with the line of the second."""
    bad = tmp_path / "dup.yaml"
    bad.write_text("asn: 64500\nsites: []\nasn: 64501\n", encoding="utf-8")
    rc = main(["world", "-t", str(bad)])
    _, err = capsys.readouterr()
    assert rc == 2
    assert err.startswith(f"anyedge: error: {bad}:3: not valid YAML: the key 'asn' is given twice")
