"""The replicated configuration store (``anyedge.store``), both back ends.

The same behaviour is asked of the embedded back end (a SQLite log fanned out over TCP)
and of etcd (a real 3-member cluster on 127.0.0.1): read your write after ``wait``,
transactions seen whole, thousands of writes in order with no gap at every replica, a
killed replica that catches up, a stopped one that never blocks the writer, and catch-up
from a snapshot after the log was compacted.  The pure log and the wire codec are
property-tested without sockets.  No test asserts on time: waits have generous bounds
and only a hang fails them.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anyedge.store import (
    Batch,
    Change,
    EmbeddedReplica,
    EmbeddedWriter,
    EtcdReplica,
    EtcdWriter,
    ProtocolError,
    Snapshot,
    dumps,
    loads,
    wire,
)
from anyedge.store.embedded import SqliteLog, read_since
from anyedge.store.log import Copy, Log, apply
from anyedge.store.replica import ReplicaBase
from store_support import EtcdCluster, ReplicaProcess, has_etcd

WAIT = 60.0  # generous bound on every wait: only a hang fails it


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if not has_etcd():
        pytest.skip("the etcd binary is missing (Debian: apt-get install etcd-server)")
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"))
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


@dataclass
class Backend:
    """One back end under test: its writer and how to make replicas of it."""

    name: str
    writer: Any
    tmp: Path
    replica_args: Callable[[Path], list[str]]
    make: Callable[..., ReplicaBase]
    contiguous: bool
    replicas: list[ReplicaBase] = field(default_factory=list)
    procs: list[ReplicaProcess] = field(default_factory=list)

    def replica(self, path: Path | None = None, journal: bool = False) -> ReplicaBase:
        r = self.make(path, journal)
        self.replicas.append(r)
        return r

    def process(self, db: Path) -> ReplicaProcess:
        p = ReplicaProcess(self.replica_args(db))
        self.procs.append(p)
        p.start()
        return p


@pytest.fixture(params=["embedded", "etcd"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b: Backend
    if request.param == "embedded":
        w = EmbeddedWriter(tmp_path / "writer.db", queue_limit=64)
        addr = f"{w.address[0]}:{w.address[1]}"
        b = Backend(
            "embedded",
            w,
            tmp_path,
            lambda db: ["embedded", addr, str(db)],
            lambda path, journal: EmbeddedReplica(w.address, path, journal=journal),
            contiguous=True,
        )
    else:
        cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
        prefix = f"/t-{uuid.uuid4().hex[:8]}/"
        urls = cluster.client_urls
        w = EtcdWriter(urls, prefix)
        b = Backend(
            "etcd",
            w,
            tmp_path,
            lambda db: ["etcd", ",".join(urls), prefix, str(db)],
            lambda path, journal: EtcdReplica(urls, prefix, path, journal=journal),
            contiguous=False,
        )
    try:
        yield b
    finally:
        for p in b.procs:
            p.kill()
        for r in b.replicas:
            r.close()  # type: ignore[attr-defined]
        w.close()


def writer_state(b: Backend, replica: ReplicaBase) -> dict[str, bytes]:
    """What the writer holds, read independently of ``replica``."""
    if b.name == "embedded":
        state: dict[str, bytes] = b.writer.state()
        return state
    fresh = b.replica()
    assert fresh.wait(replica.seq, WAIT)
    return fresh.items()


def synced(r: ReplicaBase, w: Any) -> None:
    """Wait until ``r`` has its first copy: writes after this reach its watchers one by
    one (writes before it may come folded into the snapshot a new replica starts from)."""
    assert r.wait(w.put("synced", b"1"), WAIT)


def db_seq(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return 0
    try:
        row = con.execute("SELECT v FROM meta WHERE k = 'seq'").fetchone()
        return int(row[0]) if row else 0
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def wait_db(db: Path, seq: int) -> None:
    deadline = time.monotonic() + WAIT
    while db_seq(db) < seq:
        assert time.monotonic() < deadline, f"replica at {db_seq(db)}, never reached {seq}"
        time.sleep(0.05)


def db_contents(db: Path) -> tuple[dict[str, bytes], list[tuple[int, int]]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        kv = {k: bytes(v) for k, v in con.execute("SELECT key, value FROM kv")}
        journal = con.execute("SELECT seq, snap FROM journal ORDER BY n").fetchall()
    finally:
        con.close()
    return kv, journal


def check_journal(journal: list[tuple[int, int]], written: list[int]) -> None:
    """Every applied sequence number in order, none of the written ones skipped.

    A batch entry must be the written sequence number right after the previous entry; a
    snapshot may jump (it carries everything up to its number).
    """
    assert journal, "the replica applied nothing"
    seqs = [s for s, _ in journal]
    assert seqs == sorted(set(seqs)), "applied out of order or twice"
    pos = {s: i for i, s in enumerate(written)}
    prev = None
    for seq, snap in journal:
        if not snap:
            assert seq in pos, f"applied {seq}, which was never written"
            if prev is not None:
                expected = next((s for s in written if s > prev), None)
                assert seq == expected, f"after {prev} came {seq}, not {expected}"
        prev = seq


# --- behaviour, both back ends ------------------------------------------------------


def test_read_your_write_after_wait(backend: Backend) -> None:
    r = backend.replica()
    w = backend.writer
    s1 = w.put("sites/CHC", dumps({"servers": 12}))
    s2 = w.put("sites/AKL", b"x")
    assert s2 > s1
    assert r.wait(s2, WAIT)
    assert loads(r.get("sites/CHC")) == {"servers": 12}
    assert r.items("sites/") == {"sites/CHC": dumps({"servers": 12}), "sites/AKL": b"x"}
    s3 = w.delete("sites/AKL")
    assert r.wait(s3, WAIT)
    assert r.get("sites/AKL") is None
    assert r.seq >= s3
    assert loads(r.get("nothing")) is None
    with pytest.raises(ValueError, match="both put and deleted"):
        w.txn({"a": b"1"}, ["a"])


def test_transactions_are_atomic_for_watchers_and_readers(backend: Backend) -> None:
    r = backend.replica()
    w = backend.writer
    half: list[dict[str, bytes]] = []
    stop = threading.Event()

    def reader() -> None:  # the pair is always equal: never half a transaction
        while not stop.is_set():
            pair = r.items("pair/")
            if pair.get("pair/a") != pair.get("pair/b"):
                half.append(pair)

    synced(r, w)
    with r.watch("pair/") as watch:
        t = threading.Thread(target=reader)
        t.start()
        seqs = [w.txn({"pair/a": b"%d" % i, "pair/b": b"%d" % i}) for i in range(200)]
        last = w.txn({"pair/c": b"c"}, ["pair/a", "pair/b"])
        assert r.wait(last, WAIT)
        stop.set()
        t.join(WAIT)
        seen = [watch.get(WAIT) for _ in range(201)]
    assert not half
    assert [b.seq for b in seen if b] == [*seqs, last]
    for i, b in enumerate(seen[:-1]):
        assert b is not None
        assert sorted(b.changes, key=lambda c: c.key) == [
            Change("pair/a", b"%d" % i),
            Change("pair/b", b"%d" % i),
        ]
    assert seen[-1] is not None
    assert set(seen[-1].changes) == {
        Change("pair/c", b"c"),
        Change("pair/a", None),
        Change("pair/b", None),
    }


def test_two_thousand_writes_arrive_in_order_at_every_replica(backend: Backend) -> None:
    replicas = [backend.replica() for _ in range(3)]
    w = backend.writer
    got: list[list[int]] = [[] for _ in replicas]
    ready = w.put("synced", b"1")
    for r in replicas:
        assert r.wait(ready, WAIT)  # each has its first copy (see synced)
    for r, out in zip(replicas, got, strict=True):
        r.watch("", callback=lambda b, out=out: out.append(b.seq))
    written = []
    for i in range(2000):
        if i % 10 == 9:
            written.append(w.txn({f"k/{i % 97}": b"%d" % i, "last": b"%d" % i}))
        else:
            written.append(w.put(f"k/{i % 97}", b"%d" % i))
    for r in replicas:
        assert r.wait(written[-1], WAIT)
    assert written == sorted(set(written))
    if backend.contiguous:
        assert written == list(range(written[0], written[0] + 2000))
    for out in got:
        assert out == written
    want = writer_state(backend, replicas[0])
    for r in replicas:
        assert r.items() == want


def test_killed_replica_catches_up_with_nothing_lost_or_reordered(backend: Backend) -> None:
    db = backend.tmp / "replica.db"
    proc = backend.process(db)
    w = backend.writer
    written = [w.put(f"k/{i}", b"%d" % i) for i in range(300)]
    wait_db(db, written[-1])
    for i in range(300, 1500):
        written.append(w.put(f"k/{i % 400}", b"%d" % i))
        if i == 700:
            proc.kill()  # SIGKILL mid-stream, by pid
        if i == 1100:
            proc = backend.process(db)
    wait_db(db, written[-1])
    proc.signal(signal.SIGTERM)
    assert proc.proc is not None
    proc.proc.wait(WAIT)
    kv, journal = db_contents(db)
    check_journal(journal, written)
    assert journal[-1][0] == written[-1]
    # the restart resumed from the persisted sequence number: the only snapshot is the
    # replica's very first copy (a replica that has none yet always starts with one)
    assert [snap for _, snap in journal].count(1) == 1
    assert journal[0][1] == 1
    want = {f"k/{k}": v for k, v in _model(w_ops=[(f"k/{i % 400}", i) for i in range(1500)])}
    assert kv == want


def _model(w_ops: list[tuple[str, int]]) -> list[tuple[str, bytes]]:
    state: dict[str, bytes] = {}
    for k, i in w_ops:
        state[k] = b"%d" % i
    return [(k[2:], v) for k, v in state.items()]


def test_stopped_replica_never_blocks_the_writer(backend: Backend) -> None:
    db = backend.tmp / "replica.db"
    proc = backend.process(db)
    w = backend.writer
    first = w.put("start", b"1")
    wait_db(db, first)
    proc.signal(signal.SIGSTOP)
    # more than the socket buffers hold (a few MB on loopback), so the embedded fan-out's
    # queue must fill; etcd's writer is etcd itself, which never waits for a watcher
    n = 3000 if backend.name == "embedded" else 1000
    value = b"v" * 4096
    done: list[int] = []

    def write() -> None:
        for i in range(n):
            done.append(w.put(f"big/{i % 500}", value + b"%d" % i))

    try:
        t = threading.Thread(target=write)
        t.start()
        t.join(WAIT * 4)
        # every write completed while the replica stayed stopped
        assert len(done) == n
        if backend.name == "embedded":
            assert w.stats()["dropped"] >= 1  # its queue overflowed: it was let go
    finally:
        proc.signal(signal.SIGCONT)
    wait_db(db, done[-1])
    kv, journal = db_contents(db)
    check_journal(journal, [first, *done])
    assert kv["big/499"] == value + b"%d" % (n - 1)
    assert len([k for k in kv if k.startswith("big/")]) == 500


def test_catch_up_from_snapshot_and_tail_after_compaction(backend: Backend) -> None:
    w = backend.writer
    path = backend.tmp / "local.db"
    r = backend.replica(path, journal=True)
    s = [w.put(f"k/{i}", b"%d" % i) for i in range(50)]
    assert r.wait(s[-1], WAIT)
    r.close()  # type: ignore[attr-defined]
    backend.replicas.remove(r)
    for i in range(50, 120):
        w.put(f"k/{i % 60}", b"%d" % i)
    w.txn({"moved": b"1"}, [f"k/{i}" for i in range(10)])
    w.compact()  # the log the replica would need is gone
    tail = [w.put(f"k/{i}", b"tail%d" % i) for i in range(20, 30)]
    r2 = backend.replica(path, journal=True)
    assert r2.wait(tail[-1], WAIT)
    assert r2.items() == writer_state(backend, r2)
    assert r2.get("k/0") is None
    assert r2.get("k/25") == b"tail25"
    assert r2.get("moved") == b"1"
    r2.close()  # type: ignore[attr-defined]
    backend.replicas.remove(r2)
    _, journal = db_contents(path)
    assert any(snap for _, snap in journal[1:]), "the second start began with a snapshot"


def test_watch_sees_a_snapshot_as_changes(tmp_path: Path) -> None:
    with EmbeddedWriter(tmp_path / "w.db") as w:
        w.put("a", b"1")
        w.put("b", b"2")
        w.compact()
        with EmbeddedReplica(w.address) as r:
            got: list[Batch] = []
            r.watch("", callback=got.append)
            assert r.wait(2, WAIT)
            s = w.delete("a")
            assert r.wait(s, WAIT)
    seq, changes = got[-1]
    assert seq == 3
    assert changes == (Change("a", None),)
    assert {c.key for b in got for c in b.changes} == {"a", "b"}


def test_replica_of_another_store_starts_again(tmp_path: Path) -> None:
    local = tmp_path / "r.db"
    with EmbeddedWriter(tmp_path / "one.db") as w:
        s = [w.put(f"one/{i}", b"1") for i in range(5)]
        with EmbeddedReplica(w.address, local) as r:
            assert r.wait(s[-1], WAIT)
    with EmbeddedWriter(tmp_path / "two.db") as w:
        s2 = w.put("two", b"2")
        w.put("two/b", b"2")
        with EmbeddedReplica(w.address, local) as r:
            deadline = time.monotonic() + WAIT
            while r.store_id != w.store_id and time.monotonic() < deadline:
                time.sleep(0.02)
            assert r.wait(s2 + 1, WAIT)
            assert r.items() == {"two": b"2", "two/b": b"2"}


def test_etcd_writer_and_replica_outlive_a_member(etcd_cluster: EtcdCluster) -> None:
    """Member 0 (the first endpoint of both) is killed by pid mid-stream: the writer and
    the replica's watch move to the other members, and nothing is lost."""
    prefix = f"/t-{uuid.uuid4().hex[:8]}/"
    urls = etcd_cluster.client_urls
    w = EtcdWriter(urls, prefix)
    r = EtcdReplica(urls, prefix)
    got: list[int] = []
    try:
        synced(r, w)
        r.watch("", callback=lambda b: got.append(b.seq))
        written = [w.put(f"k/{i}", b"%d" % i) for i in range(100)]
        assert r.wait(written[-1], WAIT)
        etcd_cluster.kill(0)
        written += [w.put(f"k/{i}", b"%d" % i) for i in range(100, 300)]
        assert r.wait(written[-1], WAIT)
        assert r.items("k/") == {f"k/{i}": b"%d" % i for i in range(300)}
        assert got == written
    finally:
        r.close()
        w.close()
        etcd_cluster.restart(0)
        etcd_cluster.wait_ready()


# --- the pure log and the codec -----------------------------------------------------

keys = st.sampled_from([f"k{i}" for i in range(8)])
values = st.binary(max_size=6)
op = st.one_of(
    st.tuples(st.just("put"), keys, values),
    st.tuples(st.just("delete"), keys, st.just(b"")),
    st.tuples(st.just("txn"), st.dictionaries(keys, values, max_size=4), st.just(b"")),
    st.tuples(st.just("compact"), st.integers(0, 60), st.just(b"")),
    st.tuples(st.just("checkpoint"), st.just(""), st.just(b"")),
)


def _changes(kind: str, a: Any, v: bytes) -> tuple[Change, ...]:
    if kind == "put":
        return (Change(a, v),)
    if kind == "delete":
        return (Change(a, None),)
    # a txn: some puts, and deletes of the keys it does not put
    return tuple(Change(k, val) for k, val in a.items()) + tuple(
        Change(k, None) for k in ("k6", "k7") if k not in a
    )


@settings(max_examples=150)
@given(st.lists(op, max_size=60))
def test_any_snapshot_plus_tail_equals_applying_everything(ops: list[Any]) -> None:
    log = Log()
    model: dict[str, bytes] = {}
    full = Copy()
    checkpoints: list[Copy] = [Copy()]
    for kind, a, v in ops:
        if kind == "compact":
            log.compact(a)
        elif kind == "checkpoint":
            checkpoints.append(Copy(seq=full.seq, state=dict(full.state)))
        else:
            changes = _changes(kind, a, v)
            batch = log.append(changes)
            apply(model, changes)
            full.receive(batch)
    assert log.state() == model == full.state
    for copy in checkpoints:
        up = log.since(copy.seq)
        watched = dict(copy.state)
        for msg in ([up.snapshot] if up.snapshot else []) + up.batches:
            out = copy.receive(msg)
            if out is not None:
                apply(watched, out.changes)
        assert copy.state == model
        assert copy.seq == log.head
        assert watched == model  # watchers, fed the snapshot's diff, agree too


@settings(max_examples=40)
@given(st.lists(op, max_size=40))
def test_sqlite_log_agrees_with_the_pure_log(tmp_path_factory: Any, ops: list[Any]) -> None:
    path = tmp_path_factory.mktemp("log") / "w.db"
    slog = SqliteLog(path)
    log = Log()
    seen = [0]
    try:
        for kind, a, v in ops:
            if kind == "compact":
                slog.compact(a)
                log.compact(a)
            elif kind == "checkpoint":
                seen.append(log.head)
            else:
                changes = _changes(kind, a, v)
                slog.append(changes)
                log.append(changes)
        assert slog.state() == log.state()
        for since in seen:
            head, snap, batches = read_since(slog.db, slog.store_id, slog.store_id, since)
            up = log.since(since)
            assert head == log.head
            assert snap == up.snapshot
            assert batches == up.batches
    finally:
        slog.close()


@given(
    st.lists(
        st.one_of(
            st.builds(
                Batch,
                st.integers(0, 2**63),
                st.lists(st.builds(Change, st.text(min_size=1), st.none() | values)).map(tuple),
            ),
            st.builds(Snapshot, st.integers(0, 2**63), st.dictionaries(st.text(), values)),
            st.builds(wire.Hello, st.text(), st.integers(0, 2**63)),
        ),
        max_size=5,
    ),
    st.integers(1, 17),
)
def test_wire_round_trip_in_any_split(msgs: list[Any], step: int) -> None:
    data = b"".join(wire.encode(m) for m in msgs)
    dec = wire.Decoder()
    out = []
    for i in range(0, len(data), step):
        out += dec.feed(data[i : i + step])
    assert out == msgs


def test_wire_refuses_bad_frames() -> None:
    with pytest.raises(ProtocolError):
        wire.Decoder().feed(b"\x00\x00\x00\x00\x03")
    with pytest.raises(ProtocolError):
        wire.Decoder().feed(b"\x00\x00\x00\x02\x09\x00")
    frame = wire.encode(Batch(1, (Change("a", b"b"),)))
    with pytest.raises(ProtocolError):
        wire.Decoder().feed(frame[:4] + frame[4:5] + b"\x00" * (len(frame) - 5))


def test_copy_refuses_a_gap_and_ignores_a_resend() -> None:
    c = Copy()
    assert c.receive(Batch(1, (Change("a", b"1"),))) is not None
    assert c.receive(Batch(1, (Change("a", b"2"),))) is None
    with pytest.raises(ProtocolError, match="lost"):
        c.receive(Batch(3, ()))
    etcd_like = Copy(contiguous=False)
    assert etcd_like.receive(Batch(7, ())) is not None
    assert etcd_like.seq == 7


# --- the command line -----------------------------------------------------------------


def test_cli_put_get_delete_watch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from anyedge.cli.main import main

    with EmbeddedWriter(tmp_path / "w.db") as w:
        addr = f"{w.address[0]}:{w.address[1]}"
        assert main(["store", "put", "--connect", addr, "sites/CHC", '{"servers":12}']) == 0
        assert capsys.readouterr().out == "1\n"
        assert main(["store", "get", "--connect", addr, "sites/CHC"]) == 0
        assert capsys.readouterr().out == '{"servers":12}\n'
        assert main(["store", "get", "--connect", addr, "--json", "sites/"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc == {"seq": 1, "items": {"sites/CHC": '{"servers":12}'}}
        assert main(["store", "delete", "--connect", addr, "sites/CHC"]) == 0
        assert capsys.readouterr().out == "2\n"
        assert main(["store", "get", "--connect", addr, "sites/CHC"]) == 1
        t = threading.Timer(0.5, lambda: w.txn({"sites/AKL": b"\xff"}, ["x"]))
        t.start()
        assert main(["store", "watch", "--connect", addr, "--count", "1", "sites/"]) == 0
        t.join()
        line = json.loads(capsys.readouterr().out)
        assert line == {"seq": 3, "changes": {"sites/AKL": "base64:/w=="}}


@pytest.mark.parametrize(
    "args",
    [
        ["store", "put", "--connect", "nonsense", "k", "v"],
        ["store", "put", "--connect", "127.0.0.1:99999", "k", "v"],
        ["store", "put", "k"],
        ["store", "put", "--etcd", "127.0.0.1:2379", "k", "v"],
        ["store", "serve", "--db", "x.db", "--compact-every", "0"],
    ],
)
def test_cli_bad_input_exits_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from anyedge.cli.main import main

    assert main(args) == 2
    err = capsys.readouterr().err
    assert "anyedge: error: " in err
    assert "Traceback" not in err


def test_cli_unreachable_store_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    from anyedge.cli.main import main
    from store_support import free_ports

    (port,) = free_ports(1)
    assert main(["store", "put", "--connect", f"127.0.0.1:{port}", "k", "v"]) == 3
    assert capsys.readouterr().err.startswith("anyedge: error: ")


def test_cli_serve_runs_until_sigterm(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from anyedge.cli.main import main
    from store_support import SRC

    env = dict(os.environ, PYTHONPATH=str(SRC))
    db = tmp_path / "w.db"
    cmd = ["store", "serve", "--db", str(db), "--listen", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "anyedge", *cmd], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["seq"] == 0
        assert main(["store", "put", "--connect", ready["listen"], "a", "1"]) == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0
        if proc.stdout is not None:
            proc.stdout.close()
    log = SqliteLog(db)
    try:
        assert log.state() == {"a": b"1"}
    finally:
        log.close()


def _doc_commands() -> list[str]:
    import re

    text = (Path(__file__).resolve().parent.parent / "docs" / "store.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    lines = [re.split(r"\s#\s", ln)[0].strip() for b in blocks for ln in b.splitlines()]
    return [ln for ln in lines if ln.startswith("anyedge store ")]


def test_the_documented_store_commands_run(
    tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/store.md's commands, against a writer (and etcd) of this test's own:
    ``serve`` and ``replica`` as processes ended by SIGTERM, ``watch`` for one write."""
    import os
    import shlex
    import subprocess
    import sys

    from anyedge.cli.main import main
    from store_support import SRC

    commands = _doc_commands()
    assert {shlex.split(c)[2] for c in commands} >= {"serve", "replica", "put", "get", "watch"}
    env = dict(os.environ, PYTHONPATH=str(SRC))
    with EmbeddedWriter(tmp_path / "w.db") as w:
        addr = f"{w.address[0]}:{w.address[1]}"
        for command in commands:
            args = shlex.split(command)[1:]
            for i, a in enumerate(args):
                if a == "--db":
                    args[i + 1] = str(tmp_path / args[i + 1])
                elif a == "--listen":
                    args[i + 1] = "127.0.0.1:0"
                elif a == "--etcd":
                    cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
                    args[i + 1] = cluster.client_urls[0]
            if "--etcd" not in args and args[1] != "serve":
                args[2:2] = ["--connect", addr]
            if args[1] in ("serve", "replica"):
                proc = subprocess.Popen(
                    [sys.executable, "-m", "anyedge", *args], stdout=subprocess.PIPE, env=env
                )
                try:
                    assert proc.stdout is not None
                    assert json.loads(proc.stdout.readline())["seq"] == (
                        0 if args[1] == "serve" else w.seq
                    )
                finally:
                    proc.send_signal(signal.SIGTERM)
                    assert proc.wait(WAIT) == 0, command
                    if proc.stdout is not None:
                        proc.stdout.close()
                continue
            timer = None
            if args[1] == "watch":
                args[2:2] = ["--count", "1"]
                timer = threading.Timer(0.5, lambda: w.put("acme/late", b"1"))
                timer.start()
            assert main(args) == 0, command
            if timer is not None:
                timer.join()
            assert capsys.readouterr().out.strip(), command
