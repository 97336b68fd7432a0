"""Sites with servers: a site router, servers on one L2 segment, the XDP load balancer.

A site node with ``servers: N`` in the topology becomes, in the lab:

* the **site router**: the site's own namespace, keeping its BGP speaker and
  announcing the site's prefixes, with a bridge ``br0`` (:data:`~.plan.SEGMENT`,
  ``192.0.2.1``) instead of the anycast addresses on ``lo``.  It routes the anycast
  prefixes to the servers by one ECMP multipath route, hashed on the L4 tuple
  (``net.ipv4.fib_multipath_hash_policy = 1``);
* **N servers** ``s0``... ``s<N-1>``, namespaces ``ae-<lab>-<node>-s<i>``, each with
  ``eth0`` on the bridge (MAC :func:`server_mac`, address ``192.0.2.(11 + i)``), the
  anycast addresses on ``lo``, the site's service answering with ``<code>/<server>``
  (``CHC/s2``; on :data:`HOLD_PORT` its TCP connections stay open, a reply per line),
  and the balancer of :mod:`anyedge.edge.balancer` in generic XDP on ``eth0``, with a
  table from :class:`anyedge.balance.Table` over the site's servers;
* an **edge agent** (``python -m anyedge.lab.edge``), one process per site, running in
  the router's namespace.

**L4Drop rules** (:func:`rules`) are applied on every server, as the post runs its
packet path: once a site has rules, each server's ``eth0`` carries an L4Drop in generic
XDP (swapped in for the balancer in one attach), which drops what the rules drop and
hands the rest to that server's balancer by a tail call
(:meth:`~anyedge.edge.l4drop.L4Drop.chain`).  A server added later gets one too.  A
packet the balancer sends on to another server meets that server's L4Drop again: it
passed the same rules once, so it passes again (a ``pass`` rule counts it twice).

**Why an agent, not pinned maps.**  The balancer's maps and program belong to the
process that loaded them; they must outlive ``anyedge lab up``.  Pinning them in bpffs
would need ``bpf_obj_pin``/``bpf_obj_get`` in the libbpf binding, a loader that can
reopen every map of a pinned program, and pins to clean on ``down`` even after a crash.
The agent keeps the existing :class:`~anyedge.edge.balancer.Balancer` as it is: it
loads one copy per server, attaches them, holds the :class:`~anyedge.balance.Table`
and takes commands over a Unix socket (``<lab dir>/nodes/<node>/edge.sock``, one JSON
request and one JSON answer per connection).  It is started like the lab's other
daemons, recorded by pid, and ended by ``anyedge lab down`` like them (it runs inside
the router's namespace); on SIGTERM it detaches its programs.  Nothing is left in
bpffs, and a lab down removes everything even if the agent was killed.

The commands (``anyedge lab edge servers|stats``) and the tests call the same
functions here: :func:`servers`, :func:`change`, :func:`second_hop`, :func:`stats`,
:func:`table`.  ``anyedge control run``'s balancer actuator (:mod:`anyedge.api.unimog`)
talks to the same socket (:func:`ask`): ``table`` to read the weights in force,
``weights`` to set new ones by server name (the table that moves the fewest buckets),
and ``kernel`` reads each server's bucket map back from the kernel.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..adapters import netns
from ..balance.table import ServerState, Table
from .build import (
    LabError,
    LabState,
    locked,
    metrics_args,
    node_dir,
    targets_file,
    wait_ready,
)
from .plan import PORT_BASE, LabPlan, NodePlan

HOLD_PORT = PORT_BASE  # the servers' port for held TCP connections (plans start above)
SOCKET = "edge.sock"
ROUTER_IP = "192.0.2.1"
MAX_SERVERS = 64
STATES = {int(s): s.name.lower() for s in ServerState}


class BadRequest(ValueError):
    """A request the agent refuses (an unknown or duplicate server name...): exit 2."""


def server_ip(index: int) -> str:
    return f"192.0.2.{11 + index}"


def server_mac(index: int) -> str:
    """Server ``index``'s MAC: locally administered, differing from every other server's
    also in the locally administered bit (the balancer's mark flips it)."""
    return f"02:ae:00:00:{index >> 8:02x}:{index & 0xFF:02x}"


def server_namespace(node: NodePlan, name: str) -> str:
    return f"{node.namespace}-{name}"


def router_commands(node: NodePlan) -> list[str]:
    """The site router's bridge and its ECMP route to the planned servers."""
    cmds = ["link add br0 type bridge", "link set br0 up", f"addr add {ROUTER_IP}/24 dev br0"]
    return cmds + ecmp_commands(node, range(node.servers))


def ecmp_commands(node: NodePlan, indices: Sequence[int] | range) -> list[str]:
    """One multipath route per anycast prefix over the servers ``indices``."""
    hops = " ".join(f"nexthop via {server_ip(i)}" for i in indices)
    return [f"route replace {p} {hops}" for p in node.prefixes]


def add_server_network(node: NodePlan, index: int, name: str) -> str:
    """Namespace, link to the router's bridge, addresses and routes of one server."""
    ns = server_namespace(node, name)
    netns.add(ns)
    netns.veth(ns, "eth0", node.namespace, f"sv{index}")
    netns.batch(node.namespace, [f"link set sv{index} master br0"])
    cmds = [
        f"link set eth0 address {server_mac(index)}",
        f"addr add {server_ip(index)}/24 dev eth0",
        *(f"addr add {a}/32 dev lo" for a in node.anycast),
        f"route add default via {ROUTER_IP}",
    ]
    netns.batch(ns, cmds)
    return ns


def start_server_service(
    plan: LabPlan, node: NodePlan, directory: Path, name: str, timeout: float = 10.0
) -> int:
    """The site's service in server ``name``'s namespace, answering ``<code>/<name>``."""
    d = node_dir(directory, node.name)
    d.mkdir(parents=True, exist_ok=True)
    log = d / f"service-{name}.log"
    log.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "anyedge.lab.service", "--site", f"{node.site}/{name}"]
    for a in node.anycast:
        argv += ["--address", a]
    argv += ["--ports", ",".join(map(str, plan.ports))]
    argv += ["--hold", str(HOLD_PORT)]
    # each server stands for its share of the site's capacity as planned
    share = node.capacity_ms / max(node.servers, 1)
    argv += metrics_args(plan, targets_file(directory, node.name, name), share)
    pid = netns.spawn(server_namespace(node, name), argv, log)
    return wait_ready(pid, log, f"{node.name}/{name}: the service", timeout)


def start_agent(node: NodePlan, directory: Path, timeout: float = 60.0) -> int:
    """The site's edge agent in the router's namespace; returns once its programs are
    attached to every server."""
    d = node_dir(directory, node.name)
    d.mkdir(parents=True, exist_ok=True)
    log = d / "edge.log"
    log.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "anyedge.lab.edge", "--socket", str(d / SOCKET)]
    argv += ["--seed", str(node.site_row or 0)]
    for a in node.anycast:
        argv += ["--service", a]
    for i in range(node.servers):
        argv += ["--server", f"s{i}={server_namespace(node, f's{i}')}"]
    pid = netns.spawn(node.namespace, argv, log)
    return wait_ready(pid, log, f"{node.name}: the edge agent", timeout)


def build_site(plan: LabPlan, node: NodePlan, directory: Path, state: LabState) -> None:
    """Servers, their services and the edge agent of a site with servers (the router's
    bridge and route are made with the rest of the network)."""
    netns.sysctl(node.namespace, {"net.ipv4.fib_multipath_hash_policy": "1"})
    for i in range(node.servers):
        add_server_network(node, i, f"s{i}")
        state.add_pids(directory, node.name, [start_server_service(plan, node, directory, f"s{i}")])
    netns.batch(node.namespace, ecmp_commands(node, range(node.servers)))  # bridge has ports now
    state.add_pids(directory, node.name, [start_agent(node, directory)])


# ------------------------------------------------------------------ talking to the agent


def site_node(plan: LabPlan, site: str) -> NodePlan:
    node = plan.site_node(site)
    if not node.servers:
        raise BadRequest(f"site {site} has no servers in the lab (servers: N in the topology)")
    return node


def request(directory: Path, node: NodePlan, req: dict[str, Any], timeout: float = 30.0) -> Any:
    """Send one request to the site's agent and return its answer."""
    return ask(node_dir(directory, node.name) / SOCKET, node.name, req, timeout)


def ask(path: Path, name: str, req: dict[str, Any], timeout: float = 30.0) -> Any:
    """Send one request to the agent listening at ``path`` (``name`` in errors)."""
    chunks = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(json.dumps(req).encode() + b"\n")
            s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(1 << 16):
                chunks.append(chunk)
    except OSError as e:
        raise LabError(f"{name}: the edge agent does not answer at {path}: {e}") from None
    try:
        answer = json.loads(b"".join(chunks))
    except json.JSONDecodeError:
        raise LabError(f"{name}: the edge agent sent no answer (see edge.log)") from None
    if "error" in answer:
        raise (BadRequest if answer.get("bad") else LabError)(answer["error"])
    return answer["result"]


def servers(directory: Path, plan: LabPlan, site: str) -> dict[str, Any]:
    """The site's table: per server its name, index, weight, state and buckets."""
    return dict(request(directory, site_node(plan, site), {"op": "show"}))


def change(directory: Path, plan: LabPlan, site: str, op: str, name: str) -> dict[str, Any]:
    """``add``, ``drain`` or ``remove`` server ``name`` at ``site``; every server gets the
    new table.  ``add`` makes the server (namespace, service) first and puts it into
    the router's ECMP route; ``remove`` takes it out of the route first and deletes it
    once no table names it.  Returns the new table's summary, with ``moved``: the
    buckets whose first hop changed."""
    node = site_node(plan, site)
    if op not in ("add", "drain", "remove"):
        raise BadRequest(f"no such change {op!r}: add, drain or remove")
    with locked(directory) as state:
        now = request(directory, node, {"op": "show"})
        names = [s["name"] for s in now["servers"]]
        if op == "add":
            if name in names:
                raise BadRequest(f"{site} already has a server {name}")
            if not name.isascii() or not name.isalnum() or not 1 <= len(name) <= 6:
                raise BadRequest(f"a server's name is 1 to 6 letters or digits, not {name!r}")
            index = len(names)
            if index >= MAX_SERVERS:
                raise BadRequest(f"at most {MAX_SERVERS} servers in a site")
            ns = add_server_network(node, index, name)
            pid = start_server_service(plan, node, directory, name)
            state.add_pids(directory, node.name, [pid])
            out = request(directory, node, {"op": "add", "name": name, "namespace": ns})
        else:
            if name not in names:
                raise BadRequest(f"{site} has no server {name}; servers: {', '.join(names)}")
            row = now["servers"][names.index(name)]
            if row["state"] == "removed":
                raise BadRequest(f"{site}/{name} is removed already")
            if op == "remove":
                _route(node, [s for s in now["servers"] if s["name"] != name])
            out = request(directory, node, {"op": op, "name": name})
            if op == "remove":
                netns.remove(server_namespace(node, name))
        if op == "add":
            _route(node, out["servers"])
        return dict(out)


def _route(node: NodePlan, rows: list[dict[str, Any]]) -> None:
    live = [r["index"] for r in rows if r["state"] != "removed"]
    if not live:
        raise BadRequest(f"{node.site}: the last server cannot be removed")
    netns.batch(node.namespace, ecmp_commands(node, live))


def second_hop(directory: Path, plan: LabPlan, site: str, on: bool) -> None:
    """Switch daisy chaining on or off in every server's balancer (experiments)."""
    request(directory, site_node(plan, site), {"op": "second_hop", "on": on})


def rules(directory: Path, plan: LabPlan, site: str, path: Path) -> dict[str, Any]:
    """Put the L4Drop rules of the file ``path`` in force at ``site`` (checked here
    first: a bad file raises :class:`~anyedge.errors.InputError`)."""
    from ..edge.rules import load_rules

    node = site_node(plan, site)
    load_rules(path)
    return dict(request(directory, node, {"op": "rules", "path": str(path.resolve())}))


def stats(directory: Path, plan: LabPlan, site: str) -> dict[str, Any]:
    """Every server's balancer counters, ``servers: {server: [{kind, to, packets,
    bytes}]}``, and the L4Drop rules' ``rules: [{name, action, packets, bytes}]``."""
    return dict(request(directory, site_node(plan, site), {"op": "stats"}))


def table(directory: Path, plan: LabPlan, site: str) -> tuple[Table, list[str]]:
    """The site's table in force (its bucket arrays and states) and the servers' names."""
    out = request(directory, site_node(plan, site), {"op": "table"})
    first = np.frombuffer(base64.b64decode(out["first"]), dtype=np.int32)
    second = np.frombuffer(base64.b64decode(out["second"]), dtype=np.int32)
    t = Table.build(out["weight"], buckets=first.size, seed=out["seed"])
    t = Table(first, second, t.weight, np.array(out["state"], dtype=np.uint8), t.seed, t.order)
    return t, list(out["names"])


# ------------------------------------------------------------------------- the agent


class Agent:
    """The balancers of one site's servers, the table they share, and the L4Drop in
    front of each balancer once rules are given."""

    def __init__(self, services: list[str], seed: int) -> None:
        self.services = services
        self.names: list[str] = []
        self.namespaces: list[str] = []
        self.balancers: list[Any] = []
        self.l4drops: list[Any] = []  # per server, None until rules are given
        self.rules: Any = None  # the CompiledRules in force, None: no L4Drop yet
        self.table: Table | None = None
        self.seed = seed
        self.on = True

    def load(self, name: str, namespace: str) -> None:
        from ..edge.balancer import Balancer

        index = len(self.names)
        b = Balancer(index, second_hop=self.on)
        self.balancers.append(b)
        self.l4drops.append(None)
        self.names.append(name)
        self.namespaces.append(namespace)
        macs = [server_mac(i) for i in range(len(self.names))]
        for x in self.balancers:
            if x is not None:  # a removed server's program is gone
                x.set_servers(macs)
        b.set_services(self.services)
        if self.table is not None:
            b.replace(self.table)
        b.attach("eth0", netns=namespace, mode="generic")
        if self.rules is not None:
            self._front(index)

    def _front(self, i: int) -> None:
        """Put an L4Drop with the rules in force in front of server ``i``'s balancer:
        attached to its ``eth0`` in the balancer's place (one atomic swap), handing
        what it passes to the balancer by a tail call."""
        from ..edge.l4drop import L4Drop

        l4 = L4Drop()
        try:
            l4.replace(self.rules)
            balancer = self.balancers[i].program
            l4.chain(balancer)
            l4.attach("eth0", netns=self.namespaces[i], mode="generic", replace=balancer)
        except BaseException:
            l4.close()
            raise
        self.l4drops[i] = l4

    def set_rules(self, compiled: Any) -> list[str]:
        """``compiled`` in force on every server; the interfaces they guard."""
        self.rules = compiled
        where = []
        for i, b in enumerate(self.balancers):
            if b is None:
                continue
            if self.l4drops[i] is None:
                self._front(i)
            else:
                self.l4drops[i].replace(compiled)
            where.append(f"{self.names[i]}:eth0")
        return where

    def drops(self) -> list[dict[str, Any]]:
        """Each rule's packets and bytes, summed over the servers."""
        live = [x for x in self.l4drops if x is not None]
        if not live:
            return []
        rows = [dataclasses.asdict(c) for c in live[0].counters()]
        for l4 in live[1:]:
            for row, c in zip(rows, l4.counters(), strict=True):
                row["packets"] += c.packets
                row["bytes"] += c.bytes
        return rows

    def put(self, table: Table) -> int:
        moved = 0 if self.table is None else int((self.table.first != table.first).sum())
        for b in self.balancers:
            if b is not None:
                b.replace(table)
        self.table = table
        return moved

    def show(self, moved: int | None = None) -> dict[str, Any]:
        assert self.table is not None
        counts = self.table.counts()
        seconds = np.bincount(self.table.second[self.table.second >= 0], minlength=len(self.names))
        rows = [
            {
                "name": n,
                "index": i,
                "mac": server_mac(i),
                "weight": float(self.table.weight[i]),
                "state": STATES[int(self.table.state[i])],
                "buckets": int(counts[i]),
                "second_hop_buckets": int(seconds[i]),
            }
            for i, n in enumerate(self.names)
        ]
        out: dict[str, Any] = {
            "buckets": self.table.buckets,
            "second_hop": self.on,
            "servers": rows,
        }
        if moved is not None:
            out["moved"] = moved
        return out

    def handle(self, req: dict[str, Any]) -> Any:
        op = req.get("op")
        assert self.table is not None
        if op == "show":
            return self.show()
        if op == "add":
            name, ns = str(req["name"]), str(req["namespace"])
            if name in self.names:
                raise BadRequest(f"a server {name} exists already")
            self.load(name, ns)
            return self.show(self.put(self.table.add(1.0)))
        if op in ("drain", "remove"):
            i = self._index(req["name"])
            moved = self.put(getattr(self.table, op)(i))
            if op == "remove" and self.balancers[i] is not None:
                if self.l4drops[i] is not None:
                    self.l4drops[i].close()
                    self.l4drops[i] = None
                self.balancers[i].close()  # no table names it: its program goes
                self.balancers[i] = None
            return self.show(moved)
        if op == "weights":  # new weights by server name (the Traffic Manager's Unimog)
            w = self.table.weight.copy()
            for name, weight in dict(req["weights"]).items():
                if not (isinstance(weight, (int, float)) and 0 <= weight < float("inf")):
                    raise BadRequest(f"server {name}: a weight is a number >= 0, not {weight!r}")
                w[self._index(name)] = float(weight)
            return self.show(self.put(self.table.change(weight=w)))
        if op == "second_hop":
            self.on = bool(req["on"])
            for b in self.balancers:
                if b is not None:
                    b.second_hop = self.on
            return self.show()
        if op == "rules":
            from ..edge.rules import load_rules

            compiled = load_rules(str(req["path"]))
            return {"rules": len(compiled), "interfaces": self.set_rules(compiled)}
        if op == "stats":
            return {
                "rules": self.drops(),
                "servers": {
                    n: [
                        {
                            "kind": c.kind,
                            "to": self.names[c.server],
                            "packets": c.packets,
                            "bytes": c.bytes,
                        }
                        for c in b.counters()
                    ]
                    for n, b in zip(self.names, self.balancers, strict=True)
                    if b is not None
                },
            }
        if op == "kernel":  # what each server's program reads: first hops per server
            return {
                n: np.bincount(
                    b.buckets_in_force()[:, 0].astype(np.int64), minlength=len(self.names)
                ).tolist()
                for n, b in zip(self.names, self.balancers, strict=True)
                if b is not None
            }
        if op == "table":
            t = self.table
            return {
                "first": base64.b64encode(t.first.astype(np.int32).tobytes()).decode(),
                "second": base64.b64encode(t.second.astype(np.int32).tobytes()).decode(),
                "weight": [float(w) for w in t.weight],
                "state": [int(s) for s in t.state],
                "seed": t.seed,
                "names": self.names,
            }
        raise BadRequest(f"no such request {op!r}")

    def _index(self, name: Any) -> int:
        if name not in self.names:
            raise BadRequest(f"no server {name!r}; servers: {', '.join(self.names)}")
        return self.names.index(name)

    def close(self) -> None:
        for x in self.l4drops:
            if x is not None:
                x.close()
        for b in self.balancers:
            if b is not None:
                b.close()


def serve(agent: Agent, path: Path) -> None:
    """Answer requests on ``path`` until SIGTERM or SIGINT."""
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(str(path))
        srv.listen(16)
        srv.settimeout(0.2)
        print("ready", flush=True)
        while not stop:
            try:
                conn, _ = srv.accept()
            except (TimeoutError, InterruptedError):
                continue
            with conn:
                conn.settimeout(10.0)
                try:
                    data = b""
                    while chunk := conn.recv(1 << 16):
                        data += chunk
                    try:
                        answer = {"result": agent.handle(json.loads(data))}
                    except (BadRequest, KeyError, TypeError, json.JSONDecodeError) as e:
                        answer = {"error": str(e), "bad": True}
                    except Exception as e:  # the agent stays up; the caller hears why
                        answer = {"error": f"{type(e).__name__}: {e}"}
                    conn.sendall(json.dumps(answer).encode())
                except OSError:
                    pass
    path.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m anyedge.lab.edge")
    p.add_argument("--socket", required=True, type=Path)
    p.add_argument("--service", action="append", required=True)
    p.add_argument("--server", action="append", required=True, help="NAME=NAMESPACE")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    agent = Agent(args.service, args.seed)
    try:
        for spec in args.server:
            name, ns = spec.split("=", 1)
            agent.load(name, ns)
        agent.put(Table.build([1.0] * len(agent.names), seed=args.seed))
        serve(agent, args.socket)
    finally:
        agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
