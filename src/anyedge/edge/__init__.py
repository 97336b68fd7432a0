"""The edge's packet path: BPF programs (C sources in ``bpf/``, beside their Python
loaders), the build that compiles them against the running kernel's BTF, and the files
that hold their policy.

- :mod:`.l4drop` — L4Drop, volumetric DoS mitigation in XDP: drop rules in maps.
- :mod:`.rules` — the L4Drop rules file (YAML), checked and compiled into map records.
- :mod:`.build` — ``python -m anyedge.edge.build``: clang + bpftool, cached by source.
- :mod:`.balancer` — the XDP load balancer's data plane (Unimog).
- :mod:`.dropwatch` — the kernel's packet drops per reason (``kfree_skb`` raw tracepoint).
- :mod:`.exporter` — Prometheus metrics of all of these, read from their maps at scrape
  time (``python -m anyedge.edge.exporter``).
- :mod:`.turnfast` — TURN's kernel fast path: ChannelData relayed in XDP for the
  channels the relay's core installs (``anyedge.services.turn.fastpath``).
- :mod:`.libbpf` — the calls of libbpf the loaders make, through ctypes.

Later programs (sk_lookup dispatch, UDP rate limits) go beside
L4Drop in the same shape: ``bpf/NAME.bpf.c`` sharing ``bpf/parse.h``, a loader module
using :mod:`.libbpf`, their policy in maps written from Python.
"""
