"""Plurimog in the lab: a share of a site's flows, per plan, handed to another site.

The lab gives every site's backbone links a firewall mark and a routing table when it
is built (:func:`anyedge.adapters.nft.routing_commands`); :class:`Forwarder` then sets,
per site, which share of each plan's flows goes to which neighbouring site, by
replacing the site's nftables table (:mod:`anyedge.adapters.nft`), and records it in
the lab's state.  Only sites joined by a backbone link can hand flows to each other.

The kernel deletes a backbone link's route (in the link's routing table) when the link
goes down, and does not put it back when it comes up: marked packets would then find
no route there and be served at home, forwarding nothing while the state says
otherwise.  So every :meth:`Forwarder.set` first puts the routes back (``ip route
replace``: nothing changes where they are), and refuses, saying so, to forward over a
link that is down.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..adapters import netns, nft
from .build import LabError, locked
from .plan import LabPlan, NodePlan


def backbone_links(plan: LabPlan, node: NodePlan) -> list[nft.Backbone]:
    out = []
    for i, p in enumerate(node.backbone):
        other = plan.node(p.peer)
        shared = tuple(a for a in node.anycast if a in other.anycast)
        out.append(nft.Backbone(i, str(other.site), p.ifname, p.peer_address, shared))
    return out


def ingress(node: NodePlan) -> list[str]:
    """The interfaces a site's Internet traffic arrives on (not the backbone)."""
    return [p.ifname for p in node.bgp_ports]


class Forwarder:
    def __init__(self, plan: LabPlan, directory: Path) -> None:
        self.plan = plan
        self.directory = directory

    def neighbours(self, site: str) -> list[str]:
        return [b.to_site for b in backbone_links(self.plan, self.plan.site_node(site))]

    def set(self, site: str, shares: Iterable[nft.Share]) -> None:
        """Make ``site`` forward exactly ``shares`` (nothing else)."""
        node = self.plan.site_node(site)
        shares = list(shares)
        links = backbone_links(self.plan, node)
        try:
            script = nft.render(node.anycast, ingress(node), links, shares)
        except ValueError as e:
            raise LabError(f"{site}: {e}") from None
        wanted = {s.to_site for s in shares if s.share > 0}
        for b in links:
            via = ["via", b.via, "dev", b.ifname, "table", str(b.table)]
            try:
                netns.run(node.namespace, ["ip", "route", "replace", "default", *via])
            except netns.NetnsError as e:
                if b.to_site in wanted:
                    raise LabError(
                        f"{site}: cannot forward to {b.to_site}: its backbone link "
                        f"({b.ifname}) has no route ({e}); nothing was changed"
                    ) from None
        with locked(self.directory) as state:
            try:
                nft.apply(node.namespace, script)
            except RuntimeError as e:
                raise LabError(f"{site}: {e}") from None
            kept = [[s.port, s.to_site, s.share] for s in shares if s.share > 0]
            state.forward[node.name] = kept
            state.save(self.directory)
