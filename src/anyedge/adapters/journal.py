"""A durable journal of the Traffic Manager's decisions, in one SQLite file.

Every decision the controller acts on is written here, with its reasons, *before* the
network is told to carry it out.  One decision is one transaction: its row in
``decisions`` and a row per action in ``actions`` are committed together or not at all,
and with ``journal_mode=WAL`` and ``synchronous=FULL`` a committed decision survives a
crash of the process or of the machine.  The journal is then both the audit trail
("why was Frankfurt's free plan sent to Amsterdam at 14:02?") and the controller's
memory: a restarted controller resumes from the state of the last decision.

The schema (``schema_version`` 3)::

    meta(key TEXT PRIMARY KEY, value TEXT)
        format = 'anyedge-journal', schema_version = '3',
        state_format = 'zlib(npy forward (K,3), npy share (K,), npy cpu (K,),
                        npy plans (1,), npy shift, npy withdrawn, npy last_change,
                        npy withdrawn_cpu, npy shift_cpu, npy withdrawn_basis)',
        names = '{"sites": [...], "plans": [...], "sections": [...], "prefixes": [...]}'
    decisions(seq INTEGER PRIMARY KEY,  -- 1, 2, 3, ... without gaps
              time REAL,                -- the decision's ``now``, seconds
              digest TEXT,              -- 'sha256:...' of the observation decided on
              state BLOB,               -- the State in force after the decision
              summary TEXT)             -- JSON, compact: see below
    actions(seq INTEGER REFERENCES decisions(seq), n INTEGER,  -- n: place in the plan
            kind TEXT, site TEXT, plan TEXT, to_site TEXT, share REAL,
            cpu REAL, section TEXT, prefix TEXT,
            code TEXT,    -- the reason's code (anyedge.control.reasons.TEXT)
            fields TEXT,  -- its fields, JSON, sites and prefixes by name
            reason TEXT,  -- the reason in words
            PRIMARY KEY (seq, n))

Everything is named as the network names it — sites by code, plans, sections and
prefixes by name — never by row: ``names`` in ``meta`` is the table the state's arrays
are indexed by, written when the journal is created and checked when it is opened again.

``state`` is the arrays of :class:`~anyedge.control.core.State` written one after
the other with ``np.save`` (each carries its dtype and shape) and compressed with zlib:
the forwarding array is mostly zeros.  ``summary`` says, without numpy::

    {"actions":{"forward":2,"hold":1},"changed":true,"forwarding":[0],"receiving":[1,2],
     "shape":{"plans":4,"prefixes":0,"sections":0,"sites":4},"shifted":[],"withdrawn":[]}

(``withdrawn`` lists ``[prefix, site]`` pairs.)  A file that is not a journal, or a
journal of a schema version this code does not know, raises
:class:`~anyedge.errors.InputError` naming the file.

Version 2 differs only in its states, which end at ``shift_cpu``: they are read with no
basis for their withdrawals (those prefixes come back on the CPU time they moved, as
then), and opening such a journal marks it version 3, whose rows may be of either kind.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import io
import json
import os
import sqlite3
import zlib
from pathlib import Path
from types import TracebackType
from typing import IO, get_args

import numpy as np

from ..control.core import Action, ActionKind, Observation, Plan, State
from ..control.forwards import Forwards
from ..control.reasons import SITE_FIELDS, TEXT, Names, Reason, fields, render
from ..errors import InputError

FORMAT = "anyedge-journal"
SCHEMA_VERSION = 3
READS = ("2", "3")  # version 2's states lack the withdrawals' basis, the last array
STATE_FORMAT = (
    "zlib(npy forward (K,3), npy share (K,), npy cpu (K,), npy plans (1,), npy shift, "
    "npy withdrawn, npy last_change, npy withdrawn_cpu, npy shift_cpu, npy withdrawn_basis)"
)
KINDS = frozenset(get_args(ActionKind))

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    """CREATE TABLE decisions (
        seq INTEGER PRIMARY KEY CHECK (seq > 0),
        time REAL NOT NULL,
        digest TEXT NOT NULL,
        state BLOB NOT NULL,
        summary TEXT NOT NULL)""",
    f"""CREATE TABLE actions (
        seq INTEGER NOT NULL REFERENCES decisions(seq) DEFERRABLE INITIALLY DEFERRED,
        n INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ({", ".join(repr(k) for k in sorted(KINDS))})),
        site TEXT,
        plan TEXT,
        to_site TEXT,
        share REAL NOT NULL,
        cpu REAL NOT NULL,
        section TEXT,
        prefix TEXT,
        code TEXT NOT NULL,
        fields TEXT NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (seq, n)) WITHOUT ROWID""",
)


def observation_digest(obs: Observation) -> str:
    """A digest of everything in an observation: equal observations, equal digests."""
    h = hashlib.sha256()
    for f in dataclasses.fields(obs):
        value = getattr(obs, f.name)
        if value is None:  # not an array's bytes (that would be an address)
            h.update(f"{f.name}:none;".encode())
            continue
        a = np.ascontiguousarray(value)
        h.update(f"{f.name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


def pack_state(state: State) -> bytes:
    """The state as bytes: its arrays as ``.npy``, one after the other, zlib'd.  The
    forwards are sparse — (K, 3) sites and plans, K shares, K CPU times — so a row is
    as small as the moves in force, whatever the size of the network."""
    f = state.forward
    buf = io.BytesIO()
    for a in (
        np.stack([f.src, f.plan, f.dst], axis=1).astype(np.int64).reshape(-1, 3),
        f.share,
        f.cpu,
        np.array([state.plans], dtype=np.int64),
        state.shift,
        state.withdrawn,
        state.last_change,
        state.moved_by_withdrawal(),
        state.shifted(),
        state.withdrawal_basis(),
    ):
        np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return zlib.compress(buf.getvalue())


def unpack_state(blob: bytes) -> State:
    """The state packed by :func:`pack_state`; ``ValueError`` if the bytes are not one."""
    try:
        raw = zlib.decompress(blob)
        buf = io.BytesIO(raw)
        arrays = [np.load(buf, allow_pickle=False) for _ in range(9)]
        if buf.tell() < len(raw):  # version 3: the withdrawals' basis
            arrays.append(np.load(buf, allow_pickle=False))
    except (zlib.error, EOFError, OSError, ValueError) as e:
        raise ValueError(f"not a packed state: {e}") from None
    if buf.tell() < len(raw):
        raise ValueError("not a packed state: bytes after the last array")
    spd, share, cpu, plans, shift, withdrawn, last, moved, shifted = arrays[:9]
    basis = arrays[9] if len(arrays) > 9 else None
    if last.ndim != 1:
        raise ValueError(f"last_change has shape {last.shape}, not (sites,)")
    s = last.shape[0]
    k = spd.shape[0] if spd.ndim == 2 else -1
    if spd.ndim != 2 or spd.shape[1] != 3 or share.shape != (k,) or cpu.shape != (k,):
        raise ValueError("the forwards are not (K, 3) sites and plans with K shares and CPUs")
    if plans.shape != (1,):
        raise ValueError("the number of plans is missing")
    p = int(plans[0])
    if k and (spd.min() < 0 or spd[:, [0, 2]].max() >= s or spd[:, 1].max() >= p):
        raise ValueError(f"a forward names a site or plan beyond {s} sites and {p} plans")
    if moved.shape != withdrawn.shape:
        raise ValueError(f"withdrawn_cpu has shape {moved.shape}, not {withdrawn.shape}")
    if basis is not None and basis.shape != withdrawn.shape:
        raise ValueError(f"withdrawn_basis has shape {basis.shape}, not {withdrawn.shape}")
    if shift.ndim != 1 or shifted.shape != shift.shape:
        raise ValueError(f"shift has shape {shift.shape}, not (sections,)")
    if withdrawn.ndim != 2 or withdrawn.shape[1] != s or withdrawn.dtype != np.bool_:
        raise ValueError(f"withdrawn is {withdrawn.dtype} {withdrawn.shape}, not bool (-, {s})")
    return State(
        forward=Forwards.of(spd[:, 0], spd[:, 1], spd[:, 2], share, cpu),
        shift=shift,
        withdrawn=withdrawn,
        last_change=last,
        withdrawn_cpu=moved,
        shift_cpu=shifted,
        plans=p,
        withdrawn_basis=basis,
    )


def _summary(plan: Plan, of_state: dict[str, object]) -> str:
    counts: dict[str, int] = {}
    for a in plan.actions:
        counts[a.kind] = counts.get(a.kind, 0) + 1
    summary = {"actions": counts, "changed": not plan.empty, **of_state}
    return json.dumps(summary, separators=(",", ":"), sort_keys=True)


def _state_summary(state: State, names: Names) -> dict[str, object]:
    return {
        "shape": {
            "sites": state.sites,
            "plans": state.plans,
            "sections": int(state.shift.shape[0]),
            "prefixes": int(state.withdrawn.shape[0]),
        },
        "forwarding": [names.sites[i] for i in np.flatnonzero(state.forwarding())],
        "receiving": [names.sites[i] for i in np.flatnonzero(state.receiving())],
        "shifted": [names.sections[i] for i in np.flatnonzero(state.shift > 0)],
        "withdrawn": [
            [names.prefixes[q], names.sites[s]] for q, s in np.argwhere(state.withdrawn).tolist()
        ],
    }


def _name(table: tuple[str, ...], i: int) -> str | None:
    return table[i] if 0 <= i < len(table) else None


def _row(a: Action, names: Names) -> tuple[object, ...]:
    return (
        a.kind,
        _name(names.sites, a.site),
        _name(names.plans, a.plan),
        _name(names.sites, a.to),
        float(a.share),
        float(a.cpu),
        _name(names.sections, a.section),
        _name(names.prefixes, a.prefix),
        a.reason.code,
        json.dumps(fields(a.reason, names), separators=(",", ":")),
        render(a.reason, names),
    )


def _reason(code: str, doc: str, names: Names) -> Reason:
    """The reason journaled as ``code`` and its fields (names back to rows)."""
    values: dict[str, float | str] = {}
    for k, v in json.loads(doc).items():
        table = _TABLES.get("sites" if k in SITE_FIELDS else k)
        values[k] = names.row(table, v) if table and isinstance(v, str) else v
    return Reason.of(code, **values)


_NAME_KEYS = ("sites", "plans", "sections", "prefixes")
_TABLES = {
    "sites": "sites",
    "to": "sites",
    "plan": "plans",
    "section": "sections",
    "prefix": "prefixes",
}


class Journal:
    """The decisions of one controller, in the SQLite file at ``path`` (created if new).

    Use as a context manager, or call :meth:`close`.  One controller writes a journal;
    others may read it while it does (WAL).  The path ``:memory:``
    (:meth:`in_memory`) makes a journal that lives in this process only, as fast as
    SQLite goes, for runs that need no record after they end (the twin's): the same
    tables and rows, without WAL, without syncing, and nothing to lock.
    """

    MEMORY = ":memory:"

    def __init__(self, path: str | Path, names: Names | None = None) -> None:
        self.path = Path(path)
        self.memory = str(path) == self.MEMORY
        self._lock: IO[str] | None = None
        self.names: Names | None = names
        self._packed: tuple[State, bytes, dict[str, object]] | None = None
        self._names_stored = False  # the table of names is in meta (checked on opening)
        self._old_version = False  # a version 2 journal, to be marked version 3
        try:
            self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        except sqlite3.Error as e:
            raise InputError.one(self.path, "", f"cannot open the journal: {e}") from None
        try:
            self._open()
        except sqlite3.Error as e:
            self._db.close()
            raise InputError.one(self.path, "", f"cannot use as a journal: {e}") from None
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def in_memory(cls, names: Names | None = None) -> Journal:
        """A journal in this process's memory, gone when it is closed."""
        return cls(cls.MEMORY, names)

    # ------------------------------------------------------------------ opening

    def _tables(self) -> set[str]:
        rows = self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {str(r[0]) for r in rows}

    def _open(self) -> None:
        try:
            tables = self._tables()
        except sqlite3.DatabaseError as e:  # "file is not a database"
            raise InputError.one(self.path, "", f"not an anyedge journal: {e}") from None
        if tables:
            self._check(tables)  # before anything is written to someone else's file
        self._pragmas()
        if not tables:
            self._create()
        elif self._old_version:
            self._upgrade()

    def _upgrade(self) -> None:
        """Mark a version 2 journal as version 3: its rows stay as they are (readable),
        new ones carry the withdrawals' basis."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "UPDATE meta SET value = ? WHERE key = ?",
                [(str(SCHEMA_VERSION), "schema_version"), (STATE_FORMAT, "state_format")],
            )
        self._old_version = False

    def _pragmas(self) -> None:
        if self.memory:  # nothing to survive a crash, and no other process to read it
            self._db.execute("PRAGMA foreign_keys = ON")
            return
        (mode,) = self._db.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise InputError.one(self.path, "", f"cannot use WAL mode here (got {mode})")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA foreign_keys = ON")

    def _create(self) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if not self._tables():  # another process may have created it meanwhile
                for statement in _SCHEMA:
                    db.execute(statement)
                db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("format", FORMAT),
                        ("schema_version", str(SCHEMA_VERSION)),
                        ("state_format", STATE_FORMAT),
                    ]
                    + ([("names", json.dumps(self.names.as_dict()))] if self.names else []),
                )
            db.execute("COMMIT")
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
        self._check(self._tables())

    def _check(self, tables: set[str]) -> None:
        if "meta" not in tables:
            raise InputError.one(self.path, "", "not an anyedge journal: it has no meta table")
        meta = {str(k): str(v) for k, v in self._db.execute("SELECT key, value FROM meta")}
        if meta.get("format") != FORMAT:
            raise InputError.one(
                self.path, "meta.format", f"not an anyedge journal ({meta.get('format')!r})"
            )
        version = meta.get("schema_version")
        if version not in READS:
            raise InputError.one(
                self.path,
                "meta.schema_version",
                f"schema version {version} is not one this anyedge reads ({', '.join(READS)})",
            )
        self._old_version = version != str(SCHEMA_VERSION)
        missing = {"decisions", "actions"} - tables
        if missing:
            raise InputError.one(self.path, "", f"journal without table {', '.join(missing)}")
        self._check_names(meta.get("names"))

    def _check_names(self, stored: str | None) -> None:
        if stored is None:
            return  # a journal created without names takes them from its first writer
        self._names_stored = True
        try:
            doc = json.loads(stored)
            names = Names(*(tuple(str(v) for v in doc[k]) for k in _NAME_KEYS))
        except (ValueError, KeyError, TypeError) as e:
            raise InputError.one(self.path, "meta.names", f"not a table of names: {e}") from None
        if self.names is not None and self.names != names:
            raise InputError.one(
                self.path,
                "meta.names",
                "this journal is for another network (its sites, plans, sections or "
                "prefixes differ): start a new journal",
            )
        self.names = names

    # ------------------------------------------------------------------ writing

    def record(self, now: float, observation_digest: str, plan: Plan, state: State) -> int:
        """Journal one decision — its plan and the state after it — in one transaction;
        its sequence number (1 for the first decision, then one more each time)."""
        names = self._names()
        if self._packed is None or self._packed[0] is not state:
            # a plan that only holds leaves the state as it was: pack it once
            self._packed = (state, pack_state(state), _state_summary(state, names))
        _, blob, of_state = self._packed
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            (last,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM decisions").fetchone()
            seq = int(last) + 1
            if not self._names_stored:  # a journal made without names takes its writer's
                db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('names', ?)",
                    (json.dumps(names.as_dict()),),
                )
            db.executemany(
                "INSERT INTO actions (seq, n, kind, site, plan, to_site, share, cpu, section,"
                " prefix, code, fields, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(seq, n, *_row(a, names)) for n, a in enumerate(plan.actions)],
            )
            # the decision row closes the transaction: its actions reference it
            db.execute(
                "INSERT INTO decisions (seq, time, digest, state, summary) VALUES (?, ?, ?, ?, ?)",
                (
                    seq,
                    float(now),
                    observation_digest,
                    blob,
                    _summary(plan, of_state),
                ),
            )
            db.execute("COMMIT")
            self._names_stored = True
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
        return seq

    def _names(self) -> Names:
        if self.names is None:
            raise InputError.one(
                self.path, "meta.names", "no names of sites and plans: cannot journal by name"
            )
        return self.names

    # ------------------------------------------------------------------ reading

    def _unpack(self, seq: int, blob: bytes) -> State:
        try:
            return unpack_state(blob)
        except ValueError as e:
            raise InputError.one(self.path, f"decisions[seq={seq}].state", str(e)) from None

    def latest(self) -> tuple[int, float, State] | None:
        """The last decision: its sequence number, time and the state after it."""
        row = self._db.execute(
            "SELECT seq, time, state FROM decisions ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        seq, time, blob = row
        return int(seq), float(time), self._unpack(int(seq), blob)

    def state(self, seq: int) -> tuple[float, State]:
        """The time of decision ``seq`` and the state after it (``KeyError`` if none)."""
        row = self._db.execute("SELECT time, state FROM decisions WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise KeyError(seq)
        return float(row[0]), self._unpack(seq, row[1])

    def digest(self, seq: int) -> str:
        """The digest of the observation decision ``seq`` was taken on (``KeyError``)."""
        row = self._db.execute("SELECT digest FROM decisions WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise KeyError(seq)
        return str(row[0])

    def actions(self, since_seq: int = 0) -> list[tuple[int, Action]]:
        """Every action of the decisions after ``since_seq``, in order, with its decision."""
        rows = self._db.execute(
            "SELECT seq, kind, site, plan, to_site, share, cpu, section, prefix, code, fields"
            " FROM actions WHERE seq > ? ORDER BY seq, n",
            (since_seq,),
        )
        out: list[tuple[int, Action]] = []
        names = self._names() if self.names is not None else Names((), ())
        for seq, kind, site, plan, to, share, cpu, section, prefix, code, doc in rows:
            where = f"actions[seq={seq}]"
            if kind not in KINDS:
                raise InputError.one(self.path, where, f"unknown kind {kind!r}")
            if code not in TEXT:
                raise InputError.one(self.path, where, f"unknown reason code {code!r}")
            try:
                reason = _reason(code, doc, names)
            except (ValueError, TypeError, AttributeError) as e:
                raise InputError.one(self.path, where + ".fields", str(e)) from None

            def row(table: str, name: str | None) -> int:
                return -1 if name is None else names.row(table, name)

            action = Action(
                kind,
                row("sites", site),
                reason,
                plan=row("plans", plan),
                to=row("sites", to),
                share=float(share),
                cpu=float(cpu),
                section=row("sections", section),
                prefix=row("prefixes", prefix),
            )
            out.append((int(seq), action))
        return out

    def decisions(self) -> int:
        """How many decisions are journaled."""
        (n,) = self._db.execute("SELECT COUNT(*) FROM decisions").fetchone()
        return int(n)

    # ------------------------------------------------------------------ closing

    def claim(self) -> None:
        """Become this journal's one writer, or raise if another process is.

        An exclusive lock on ``PATH.lock``, held until :meth:`close`; the kernel drops it
        when the process ends, however it ends, so a controller killed mid-decision never
        leaves a stale lock for its successor.
        """
        if self._lock is not None or self.memory:  # no other process sees the memory
            return
        f = open(self.path.with_name(self.path.name + ".lock"), "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise InputError.one(
                self.path, "", f"another controller (pid {holder}) is writing this journal"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._lock = f

    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
