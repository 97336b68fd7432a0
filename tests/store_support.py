"""Helpers for tests/test_store.py: free ports, a real 3-member etcd cluster, and a
replica in a process of its own (so that a test can kill it or stop it by pid).

Run as a script it is that replica process::

    python tests/store_support.py embedded 127.0.0.1:PORT DB
    python tests/store_support.py etcd http://127.0.0.1:P1,http://... PREFIX DB

It keeps its copy (with a journal of every sequence number it applied) in DB, prints
``ready`` once it runs, and lives until SIGTERM or SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held together, then released)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class EtcdCluster:
    """Three etcd members on 127.0.0.1, each with its data directory under ``root``."""

    def __init__(self, root: Path, members: int = 3) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []
        ports = free_ports(2 * members)
        self.client_urls = [f"http://127.0.0.1:{p}" for p in ports[:members]]
        peer_urls = [f"http://127.0.0.1:{p}" for p in ports[members:]]
        names = [f"m{i}" for i in range(members)]
        cluster = ",".join(f"{n}={u}" for n, u in zip(names, peer_urls, strict=True))
        token = f"anyedge-test-{os.getpid()}-{ports[0]}"
        self.commands: list[list[str]] = []
        for name, client, peer in zip(names, self.client_urls, peer_urls, strict=True):
            self.commands.append(
                    [
                        "etcd",
                        "--name", name,
                        "--data-dir", str(root / name),
                        "--listen-client-urls", client,
                        "--advertise-client-urls", client,
                        "--listen-peer-urls", peer,
                        "--initial-advertise-peer-urls", peer,
                        "--initial-cluster", cluster,
                        "--initial-cluster-token", token,
                        "--initial-cluster-state", "new",
                        "--logger", "zap",
                        "--log-level", "error",
                    ]
            )  # fmt: skip
            self.procs.append(self._start(len(self.procs)))

    def _start(self, i: int) -> subprocess.Popen[bytes]:
        with open(self.root / f"m{i}.log", "ab") as log:
            return subprocess.Popen(self.commands[i], stdout=log, stderr=subprocess.STDOUT)

    def kill(self, i: int) -> None:
        """Kill member ``i`` (by its pid)."""
        self.procs[i].kill()
        self.procs[i].wait(timeout=30)

    def restart(self, i: int) -> None:
        """Start member ``i`` again on its data directory (it rejoins the cluster)."""
        self.procs[i] = self._start(i)

    def wait_ready(self, timeout: float = 60.0) -> None:
        from anyedge.store.etcd import EtcdClient

        deadline = time.monotonic() + timeout
        for url in self.client_urls:
            c = EtcdClient([url], timeout=2.0)
            while True:
                try:
                    c.call("/v3/kv/put", {"key": "X19yZWFkeV9f", "value": ""})
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            c.close()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait(timeout=30)


def has_etcd() -> bool:
    return shutil.which("etcd") is not None


class ReplicaProcess:
    """A replica in a child process; ``kill``, ``stop`` and ``cont`` act on its pid."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(SRC))
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "store_support.py"), *self.args],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line: list[str] = []
        t = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        t.start()
        t.join(timeout=60)
        assert line == ["ready\n"], f"replica process did not start: {line}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


def _main(argv: list[str]) -> None:
    sys.path.insert(0, str(SRC))
    from anyedge.store.embedded import EmbeddedReplica
    from anyedge.store.etcd import EtcdReplica
    from anyedge.store.replica import ReplicaBase

    replica: ReplicaBase
    if argv[0] == "embedded":
        host, port = argv[1].rsplit(":", 1)
        replica = EmbeddedReplica((host, int(port)), argv[2], journal=True)
    else:
        replica = EtcdReplica(argv[1].split(","), argv[2], argv[3], journal=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print("ready", flush=True)
    done.wait()
    replica.close()  # type: ignore[attr-defined]


if __name__ == "__main__":
    _main(sys.argv[1:])
