"""The study store: one SQLite file per study (stdlib ``sqlite3``, WAL mode), written only by the driver.

Tables (schema version :data:`SCHEMA_VERSION`)::

    schema_version  version
    study           id, name, spec_path, spec_hash, spec_text, created_at       (one row per distinct spec text)
    runs            run_id (hash of resolved config + seeds + phase), method, task, phase (search|final),
                    seed, init_seed, data_seed, split_seed, candidate (JSON), status, config (JSON), error,
                    attempts, main_metric, best_val, best_step, last_step, num_steps, wall_s, train_s,
                    examples_per_s, peak_memory_mb, timings/environment/summary (JSON), copied_from, host,
                    created_at, started_at, finished_at
    evals           run_id, step, epoch, metric, value          (validation curve; metric "loss" = val loss)
    train_loss      run_id, step, loss, lr, grad_norm
    test_metrics    run_id, checkpoint (best|last), split (val|test), step, metric, value
    param_distance  run_id, step, block, distance              (Figure 7)
    predictions     run_id, checkpoint (best|last), split (test), n, data  (per-example predictions, one text:
                    :mod:`stabletune.predcodec`; schema version 2)

Version 1 databases (no predictions table) are read as they are and upgraded in place by the next writer (the
table is added; their runs keep no predictions).

Crash safety: a run's whole result (its row update and every curve) is written in ONE ``BEGIN IMMEDIATE``
transaction, so a SIGKILL at any moment leaves the run either complete or not finished (then redone), never
half-written or duplicated (``run_id`` is the primary key). ``synchronous=FULL`` makes commits durable.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import math
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Iterator

from stabletune.errors import DataError, UserError
from stabletune.predcodec import decode_predictions

SCHEMA_VERSION = 2
TERMINAL = ("finished", "failed", "diverged", "killed")
STATUSES = ("pending", "running", *TERMINAL)
RESULT_STATUSES = ("finished", "diverged", "killed")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS study (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    spec_path TEXT,
    spec_hash TEXT NOT NULL,
    spec_text TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    task TEXT NOT NULL,
    phase TEXT NOT NULL CHECK (phase IN ('search', 'final')),
    seed INTEGER NOT NULL,
    init_seed INTEGER NOT NULL,
    data_seed INTEGER NOT NULL,
    split_seed INTEGER NOT NULL,
    candidate TEXT NOT NULL DEFAULT '{{}}',
    status TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in STATUSES)})),
    config TEXT NOT NULL,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    main_metric TEXT,
    best_val REAL,
    best_step INTEGER,
    last_step INTEGER,
    num_steps INTEGER,
    wall_s REAL,
    train_s REAL,
    examples_per_s REAL,
    peak_memory_mb REAL,
    timings TEXT,
    environment TEXT,
    summary TEXT,
    copied_from TEXT,
    host TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS runs_group ON runs (method, task, phase, status);
CREATE TABLE IF NOT EXISTS evals (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    epoch REAL,
    metric TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, step, metric)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS train_loss (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    loss REAL,
    lr REAL,
    grad_norm REAL,
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS test_metrics (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    checkpoint TEXT NOT NULL CHECK (checkpoint IN ('best', 'last')),
    split TEXT NOT NULL CHECK (split IN ('val', 'test')),
    step INTEGER,
    metric TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, checkpoint, split, metric)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS param_distance (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    block INTEGER NOT NULL,
    distance REAL,
    PRIMARY KEY (run_id, step, block)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS predictions (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    checkpoint TEXT NOT NULL CHECK (checkpoint IN ('best', 'last')),
    split TEXT NOT NULL CHECK (split IN ('val', 'test')),
    n INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, checkpoint, split)
) WITHOUT ROWID;
"""

_CURVE_TABLES = ("evals", "train_loss", "test_metrics", "param_distance", "predictions")


def utcnow() -> str:
    """ISO-8601 UTC timestamp with microseconds (sorts as text)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def _num(v: Any) -> float | None:
    """A finite float or None (SQLite has no NaN; a constant predictor's correlation is NaN)."""
    if v is None or isinstance(v, bool):
        return None if v is None else float(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def to_json(obj: Any) -> str:
    """Compact JSON with sorted keys; NaN/inf become null, numpy scalars become numbers (as in run folders)."""
    from stabletune.engine.runlog import json_safe

    return json.dumps(json_safe(obj), separators=(",", ":"), sort_keys=True, default=str)


class StudyLock:
    """An exclusive ``flock`` on ``<db>.lock``: one driver per study database at a time.

    The kernel drops the lock when the holder dies (even by SIGKILL), so a killed study never blocks a rerun.
    The holder removes the file when it lets go, so no ``.lock`` is left beside a study that is not running (nor
    beside a database that could not be opened). Removing it is safe because :meth:`acquire` checks, once
    locked, that the path still names the file it locked; if another holder removed it meanwhile, it locks anew.
    """

    def __init__(self, db_path: str | Path):
        self.path = Path(str(db_path) + ".lock")
        self._fd: int | None = None

    def acquire(self) -> "StudyLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create the folder of study database {self.path.with_suffix('')}: "
                            f"{e.strerror}") from None
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise DataError(f"cannot create {self.path}: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = os.read(fd, 64).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise UserError(f"study database {self.path.with_suffix('')} is in use by another "
                                f"`stabletune study run` (pid {other}); wait for it or stop it") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed the file between our open and our lock: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # while still locked: see the class docstring
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "StudyLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    @staticmethod
    def held(db_path: str | Path) -> bool:
        """True if some process holds the lock of ``db_path`` now (a study is running)."""
        path = Path(str(db_path) + ".lock")
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


def _holds_result(c: sqlite3.Connection, run_id: str) -> bool:
    """Whether the run already holds a result (then it is never overwritten); KeyError for an unknown run."""
    row = c.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        raise KeyError(f"run {run_id} is not in the study database")
    return row["status"] in RESULT_STATUSES


class Store:
    """A study database. ``Store.open(path, create=True)`` makes it; read-only opens never create a file."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool = False):
        self.conn = conn
        self.path = path
        self.readonly = readonly

    # --- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, create: bool = False, readonly: bool = False) -> "Store":
        """Open (and with ``create`` make) a study database; check its schema version.

        Raises:
            DataError: not a SQLite file, written by a newer stabletune, or missing (without ``create``).
        """
        p = Path(path)
        if p.is_dir():
            raise DataError(f"{p} is a folder, not a study database")
        if not p.exists() and not create:
            raise DataError(f"study database not found: {p} (run `stabletune study run` first)")
        try:
            if readonly:
                conn = sqlite3.connect(f"file:{p.resolve()}?mode=ro", uri=True, timeout=30, isolation_level=None)
            else:
                p.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(p), timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
            store = cls(conn, p, readonly=readonly)
            store._check_schema(create=not readonly)
        except sqlite3.DatabaseError as e:
            raise DataError(f"{p}: not a usable study database ({e})") from None
        return store

    def _check_schema(self, *, create: bool) -> None:
        has = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
        if has:
            row = self.conn.execute("SELECT max(version) AS v FROM schema_version").fetchone()
            version = row["v"] if row else None
            if version is not None and version > SCHEMA_VERSION:
                raise DataError(f"{self.path}: study database schema version {version} is newer than this "
                                f"stabletune supports ({SCHEMA_VERSION}); upgrade stabletune to read it")
            if version == SCHEMA_VERSION or (version is not None and not create):
                return  # current, or an older version read as it is (its missing tables read as empty)
        if not create:
            empty = self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
            raise DataError(f"{self.path}: " + ("empty study database (stopped before its first run?): run "
                                                "`stabletune study run` again" if empty else
                                                "not a stabletune study database (no schema version)"))
        with self.transaction() as c:  # the tables and their version appear together or not at all
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            if c.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 0:
                c.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            else:  # an older database: its new tables were just added (every CREATE above is IF NOT EXISTS)
                c.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def close(self) -> None:
        """Close; a writer first leaves WAL mode (checkpointing the log into the file), so that a database no
        driver is using is one plain file: read-only opens (``study status``, export, report) then create no
        ``-wal``/``-shm`` files. A reader still open keeps WAL mode (then those files exist already)."""
        if not self.readonly:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("PRAGMA busy_timeout = 0")  # a reader is open: don't wait, stay in WAL
                self.conn.execute("PRAGMA journal_mode = DELETE")
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.close()
        # A damaged page (the header intact) is met only when a query reads it, not at open: word it as the
        # open-time errors are, one line naming the file. pandas wraps the sqlite3 error in its own DatabaseError.
        cause = exc if isinstance(exc, sqlite3.DatabaseError) else getattr(exc, "__cause__", None)
        if exc is not None and type(cause) in (sqlite3.DatabaseError, sqlite3.OperationalError):
            code = getattr(cause, "sqlite_errorname", "") or ""
            verb = "write" if code.startswith(("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR")) else "read"
            raise DataError(f"{self.path}: cannot {verb} the study database ({cause})") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception)."""
        if self.conn.in_transaction:
            raise RuntimeError("nested study-store transaction")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        else:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    # --- the study row ---------------------------------------------------------------------------
    def save_spec(self, name: str, text: str, path: str | None) -> None:
        """Record the study file's text (a new row when it changed). Refuse another study's database."""
        digest = hashlib.sha256(text.encode()).hexdigest()
        with self.transaction() as c:
            row = c.execute("SELECT name, spec_hash FROM study ORDER BY id DESC LIMIT 1").fetchone()
            if row is not None and row["name"] != name:
                raise UserError(f"{self.path} holds study {row['name']!r}, not {name!r}; pass another --db")
            if row is None or row["spec_hash"] != digest:
                c.execute("INSERT INTO study (name, spec_path, spec_hash, spec_text, created_at) "
                          "VALUES (?, ?, ?, ?, ?)", (name, path, digest, text, utcnow()))

    def latest_spec(self) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM study ORDER BY id DESC LIMIT 1").fetchone()

    # --- planning and scheduling -----------------------------------------------------------------
    def add_planned(self, runs: Iterable[Any]) -> int:
        """Insert runs (``RunSpec``) as pending; runs already stored are left as they are."""
        now = utcnow()
        rows = [(r.run_id, r.method, r.task, r.phase, r.seeds.seed, r.config.resolved_init_seed,
                 r.config.resolved_data_seed, r.config.split_seed, to_json(r.candidate), "pending",
                 to_json(r.config.to_dict()), now) for r in runs]
        if not rows:
            return 0
        with self.transaction() as c:
            before = c.total_changes
            c.executemany("INSERT OR IGNORE INTO runs (run_id, method, task, phase, seed, init_seed, data_seed, "
                          "split_seed, candidate, status, config, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            return c.total_changes - before

    def reset(self, run_ids: Iterable[str], *, from_status: tuple[str, ...] = ("running",)) -> int:
        """Set runs back to pending (interrupted runs; failed ones with ``--retry-failed``)."""
        ids = list(run_ids)
        if not ids:
            return 0
        marks = ",".join("?" * len(from_status))
        with self.transaction() as c:
            before = c.total_changes
            for chunk in _chunks(ids, 500):
                c.execute(f"UPDATE runs SET status = 'pending' WHERE status IN ({marks}) AND run_id IN "
                          f"({','.join('?' * len(chunk))})", (*from_status, *chunk))
            return c.total_changes - before

    def mark_running(self, run_id: str) -> None:
        with self.transaction() as c:
            c.execute("UPDATE runs SET status = 'running', attempts = attempts + 1, started_at = ? "
                      "WHERE run_id = ? AND status NOT IN ('finished', 'diverged', 'killed')", (utcnow(), run_id))

    # --- results ---------------------------------------------------------------------------------
    def record_result(self, run_id: str, result: dict, *, started_at: str | None = None,
                      host: str | None = None) -> bool:
        """Store a run's result (``RunResult.to_dict()``) with all its curves in one transaction.

        Returns:
            False (and writes nothing) if the run already holds a result.
        """
        status = result.get("status", "finished")
        if status not in RESULT_STATUSES:
            raise ValueError(f"unexpected run status {status!r}")
        metric = (result.get("task") or {}).get("metric")
        best = result.get("best") or {}
        last = result.get("last") or {}
        timings = result.get("timings") or {}
        summary = {k: result.get(k) for k in ("seeds", "task", "num_steps", "warmup_steps", "best", "last",
                                               "data", "techniques")}
        best_val = _num((best.get("val") or {}).get(metric)) if metric else None
        evals, params = [], []
        for e in result.get("evals") or []:
            for m, v in (e.get("val") or {}).items():
                evals.append((run_id, e["step"], _num(e.get("epoch")), m, _num(v)))
            if "val_loss" in e:
                evals.append((run_id, e["step"], _num(e.get("epoch")), "loss", _num(e["val_loss"])))
            for b, d in enumerate(e.get("param_distance") or []):
                params.append((run_id, e["step"], b, _num(d)))
        losses = [(run_id, r["step"], _num(r.get("loss")), _num(r.get("lr")), _num(r.get("grad_norm")))
                  for r in result.get("train_log") or []]
        tests = [(run_id, ck, split, point.get("step"), m, _num(v))
                 for ck, point in (("best", best), ("last", last))
                 for split in ("val", "test") for m, v in (point.get(split) or {}).items()]
        preds = [(run_id, ck, "test", len(decode_predictions(text)), text)
                 for ck, text in (result.get("predictions") or {}).items()]
        with self.transaction() as c:
            if _holds_result(c, run_id):
                return False
            for table in _CURVE_TABLES:
                c.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            c.executemany("INSERT INTO evals VALUES (?,?,?,?,?)", evals)
            c.executemany("INSERT INTO train_loss VALUES (?,?,?,?,?)", losses)
            c.executemany("INSERT INTO test_metrics VALUES (?,?,?,?,?,?)", tests)
            c.executemany("INSERT INTO param_distance VALUES (?,?,?,?)", params)
            c.executemany("INSERT INTO predictions VALUES (?,?,?,?,?)", preds)
            c.execute(
                "UPDATE runs SET status = ?, error = ?, main_metric = ?, best_val = ?, best_step = ?, "
                "last_step = ?, num_steps = ?, wall_s = ?, train_s = ?, examples_per_s = ?, peak_memory_mb = ?, "
                "timings = ?, environment = ?, summary = ?, host = ?, started_at = coalesce(?, started_at), "
                "finished_at = ? WHERE run_id = ?",
                (status, result.get("error"), metric, best_val, best.get("step"), last.get("step"),
                 result.get("num_steps"), _num(timings.get("wall_s")), _num(timings.get("train_s")),
                 _num(timings.get("examples_per_s")), _num(timings.get("peak_memory_mb")), to_json(timings),
                 to_json(result.get("environment") or {}), to_json(summary), host, started_at, utcnow(), run_id))
        return True

    def record_failure(self, run_id: str, error: str, *, started_at: str | None = None,
                       host: str | None = None) -> bool:
        """Mark a run failed (train() raised) with its error; False if it already holds a result."""
        with self.transaction() as c:
            if _holds_result(c, run_id):
                return False
            c.execute("UPDATE runs SET status = 'failed', error = ?, host = ?, started_at = coalesce(?, started_at), "
                      "finished_at = ? WHERE run_id = ?", (error, host, started_at, utcnow(), run_id))
        return True

    def copy_run(self, src_id: str, run: Any) -> bool:
        """Store ``run`` (a ``RunSpec``) as a copy of the finished run ``src_id`` (same config and seeds,
        another phase): a search run reused as a final run costs nothing. One transaction."""
        with self.transaction() as c:
            src = c.execute("SELECT * FROM runs WHERE run_id = ?", (src_id,)).fetchone()
            dst = c.execute("SELECT status FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()
            if src is None or src["status"] not in RESULT_STATUSES or (dst and dst["status"] in RESULT_STATUSES):
                return False
            cols = [k for k in src.keys() if k not in ("run_id", "phase", "candidate", "copied_from", "config",
                                                          "created_at", "method", "task")]
            values = [src[k] for k in cols]
            c.execute("DELETE FROM runs WHERE run_id = ?", (run.run_id,))
            c.execute(f"INSERT INTO runs (run_id, method, task, phase, candidate, config, copied_from, created_at, "
                      f"{', '.join(cols)}) VALUES ({','.join('?' * (8 + len(cols)))})",
                      (run.run_id, run.method, run.task, run.phase, to_json(run.candidate),
                       to_json(run.config.to_dict()), src_id, utcnow(), *values))
            for table in _CURVE_TABLES:
                tcols = [r[1] for r in c.execute(f"PRAGMA table_info({table})")]
                rest = [k for k in tcols if k != "run_id"]
                c.execute(f"INSERT INTO {table} (run_id, {', '.join(rest)}) SELECT ?, {', '.join(rest)} "
                          f"FROM {table} WHERE run_id = ?", (run.run_id, src_id))
        return True

    # --- queries ---------------------------------------------------------------------------------
    def runs(self, run_ids: Iterable[str] | None = None) -> list[sqlite3.Row]:
        """Rows of ``runs`` (all, or those of ``run_ids``) in insertion order."""
        if run_ids is None:
            return self.conn.execute("SELECT * FROM runs ORDER BY rowid").fetchall()
        out: list[sqlite3.Row] = []
        for chunk in _chunks(list(run_ids), 500):
            out += self.conn.execute(f"SELECT * FROM runs WHERE run_id IN ({','.join('?' * len(chunk))}) "
                                     "ORDER BY rowid", chunk).fetchall()
        return out

    def has_table(self, name: str) -> bool:
        """Whether the database has table ``name`` (a version 1 database has no ``predictions``)."""
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                 (name,)).fetchone() is not None

    def statuses(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self.conn.execute("SELECT run_id, status FROM runs")}

    def eval_scores(self, method: str, task: str, phase: str, candidate: str, at_eval: int) -> list[float]:
        """Main-metric validation score at the ``at_eval``-th evaluation (1-based) of every finished run
        of one group (early kill's peers)."""
        rows = self.conn.execute(
            "SELECT e.run_id, e.step, e.value FROM evals e JOIN runs r ON r.run_id = e.run_id "
            "WHERE r.method = ? AND r.task = ? AND r.phase = ? AND r.candidate = ? AND r.status = 'finished' "
            "AND e.metric = r.main_metric ORDER BY e.run_id, e.step", (method, task, phase, candidate)).fetchall()
        by_run: dict[str, list[float | None]] = {}
        for r in rows:
            by_run.setdefault(r["run_id"], []).append(r["value"])
        return [v[at_eval - 1] for v in by_run.values() if len(v) >= at_eval and v[at_eval - 1] is not None]

    def mean_run_seconds(self) -> float | None:
        """Mean wall time of the runs this study really computed (copies left out)."""
        row = self.conn.execute("SELECT avg(wall_s) FROM runs WHERE wall_s IS NOT NULL AND copied_from IS NULL "
                                "AND status IN ('finished', 'diverged', 'killed')").fetchone()
        return row[0]


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]
