"""The results store: one SQLite file per study (WAL mode, one transaction per recorded cell).

Schema (documented in docs/study.md):
  cells   one row per grid cell: its coordinates, status (pending | running | interrupted | done | failed),
          error, attempts, run directory, times and the cell's resolved spec (JSON)
  runs    the training run of a cell: final train / eval loss, steps, checkpoint it resumed from
  metrics one row per (cell, task, metric): value, n, k, 95% CI, spread over seeds, detail (JSON)
  costs   trainable / total parameters, peak memory, training wall time, tokens, tokens/s, eval time
  curves  the loss curves: (cell, split, step, loss) with split "train" or an eval set's name
  problems per-problem scores (cell, task, problem, metric): value, n samples, c passed, detail
          (JSON); what paired tests between methods compare (codepeft.metrics.per_problem)
Stores are migrated in place when opened (`PRAGMA user_version`, see `migrate`).
Only the process that runs the study writes; workers hand their results back to it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from codepeft.errors import CodepeftError
from codepeft.study.specs import spec_changed, spec_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    cell_id TEXT PRIMARY KEY, model TEXT NOT NULL, model_path TEXT, model_size REAL,
    method TEXT NOT NULL, method_label TEXT NOT NULL, family TEXT, dataset TEXT NOT NULL, seed INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    run_dir TEXT, started_at TEXT, finished_at TEXT, spec TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    cell_id TEXT PRIMARY KEY REFERENCES cells(cell_id), run_dir TEXT,
    final_train_loss REAL, final_eval_loss REAL, steps INTEGER, resumed_from TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    cell_id TEXT NOT NULL REFERENCES cells(cell_id), task TEXT NOT NULL, metric TEXT NOT NULL,
    value REAL, n INTEGER, k INTEGER, ci_low REAL, ci_high REAL, sd REAL, detail TEXT,
    PRIMARY KEY (cell_id, task, metric)
);
CREATE TABLE IF NOT EXISTS costs (
    cell_id TEXT PRIMARY KEY REFERENCES cells(cell_id), trainable_params INTEGER, total_params INTEGER,
    trainable_ratio REAL, peak_memory_bytes INTEGER, peak_memory_kind TEXT, wall_time_s REAL,
    train_tokens INTEGER, tokens_per_s REAL, eval_time_s REAL
);
CREATE TABLE IF NOT EXISTS curves (
    cell_id TEXT NOT NULL REFERENCES cells(cell_id), split TEXT NOT NULL, step INTEGER NOT NULL, loss REAL,
    PRIMARY KEY (cell_id, split, step)
);
CREATE TABLE IF NOT EXISTS problems (
    cell_id TEXT NOT NULL REFERENCES cells(cell_id), task TEXT NOT NULL, problem TEXT NOT NULL,
    metric TEXT NOT NULL, value REAL, n INTEGER, c INTEGER, detail TEXT,
    PRIMARY KEY (cell_id, task, problem, metric)
);
"""
TABLES = ("cells", "runs", "metrics", "costs", "curves", "problems")
RESULT_TABLES = ("runs", "metrics", "costs", "curves", "problems")
VERSION = 2  # 1: the problems table; 2: isolation levels in metrics.detail


TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def _now() -> str:
    return time.strftime(TIME_FORMAT)


def cell_seconds(row: dict, now: bool = False) -> float | None:
    """How long a cell's last attempt took (so far, with `now`), from its recorded times."""
    try:
        begun = time.mktime(time.strptime(row["started_at"], TIME_FORMAT))
        end = time.time() if now else time.mktime(time.strptime(row["finished_at"], TIME_FORMAT))
    except (KeyError, TypeError, ValueError):
        return None
    return max(0.0, end - begun)


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise CodepeftError(f"{self.path}: not a codepeft results store ({err})") from None
        self.db.row_factory = sqlite3.Row
        self.migrate()

    def migrate(self) -> None:
        """Bring a store written by an older codepeft up to VERSION, in place, keeping every row,
        from the evaluation files of the cells already done (`<cell>/eval/<task>.json`; a cell
        whose files are gone keeps what it has).
        0 -> 1: their per-problem scores. 1 -> 2: the isolation level of each execution score."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version >= VERSION:
            return
        with self.transaction() as db:
            for cell in db.execute("SELECT cell_id, spec FROM cells WHERE status='done'").fetchall():
                for task, result in _eval_files(self.path.parent, cell["spec"]):
                    if version < 1:
                        _insert_problem_scores(db, cell["cell_id"], task, result)
                    if version < 2 and result.get("isolation"):
                        _add_isolation(db, cell["cell_id"], task, result["isolation"])
            db.execute(f"PRAGMA user_version={VERSION}")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            with self.db:  # commits on success, rolls back on any error
                yield self.db
        except sqlite3.OperationalError as err:
            raise CodepeftError(f"cannot write the results store {self.path}: {err}") from None

    # -- cells ---------------------------------------------------------------------------------
    def add_cells(self, cells: list[dict]) -> None:
        """Register the grid's cells. A known cell keeps its status and results unless its spec
        (model, method options, data, training or evaluation settings) changed: then it is due again."""
        with self.transaction() as db:
            recorded = dict(db.execute("SELECT cell_id, spec FROM cells").fetchall())
            for c in cells:
                if spec_changed(recorded.get(c["cell_id"]), c["spec"]):
                    db.execute(
                        "UPDATE cells SET status='pending', spec=? WHERE cell_id=?",
                        (spec_text(c["spec"]), c["cell_id"]),
                    )
                db.execute(
                    "INSERT OR IGNORE INTO cells (cell_id, model, model_path, model_size, method, method_label, family,"
                    " dataset, seed, spec) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        c["cell_id"], c["model"], c["model_path"], c.get("model_size"), c["method"],
                        c["method_label"], c["family"], c["dataset"], c["seed"], spec_text(c["spec"]),
                    ),
                )  # fmt: skip

    def cells(self) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM cells ORDER BY rowid")]

    def status(self, cell_id: str) -> str | None:
        row = self.db.execute("SELECT status FROM cells WHERE cell_id=?", (cell_id,)).fetchone()
        return row["status"] if row else None

    def mark_running(self, cell_id: str, run_dir: str | None) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE cells SET status='running', attempts=attempts+1, started_at=?, error=NULL, run_dir=?"
                " WHERE cell_id=?",
                (_now(), run_dir, cell_id),
            )

    def mark_interrupted(self, cell_id: str) -> None:
        """A cell stopped before it finished (a signal, or its directory was busy): due again."""
        with self.transaction() as db:
            db.execute(
                "UPDATE cells SET status='interrupted', finished_at=? WHERE cell_id=? AND status='running'",
                (_now(), cell_id),
            )

    def mark_failed(self, cell_id: str, error: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE cells SET status='failed', error=?, finished_at=? WHERE cell_id=?", (error, _now(), cell_id)
            )

    # -- results -------------------------------------------------------------------------------
    def record(self, cell_id: str, result: dict) -> None:
        """Write a finished cell's results and mark it done, all in one transaction; a cell
        recorded again replaces its rows, so nothing is ever counted twice."""
        with self.transaction() as db:
            for table in RESULT_TABLES:
                db.execute(f"DELETE FROM {table} WHERE cell_id=?", (cell_id,))
            run = result.get("run")
            if run:
                db.execute(
                    "INSERT INTO runs VALUES (?,?,?,?,?,?)",
                    (cell_id, run["run_dir"], run.get("final_train_loss"), run.get("final_eval_loss"),
                     run.get("steps"), run.get("resumed_from")),
                )  # fmt: skip
            for m in result.get("metrics", []):
                db.execute(
                    "INSERT INTO metrics VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (cell_id, m["task"], m["metric"], m.get("value"), m.get("n"), m.get("k"), m.get("ci_low"),
                     m.get("ci_high"), m.get("sd"), json.dumps(m.get("detail")) if m.get("detail") else None),
                )  # fmt: skip
            c = result.get("cost")
            if c:
                db.execute(
                    "INSERT INTO costs VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (cell_id, c.get("trainable_params"), c.get("total_params"), c.get("trainable_ratio"),
                     c.get("peak_memory_bytes"), c.get("peak_memory_kind"), c.get("wall_time_s"),
                     c.get("train_tokens"), c.get("tokens_per_s"), c.get("eval_time_s")),
                )  # fmt: skip
            # A step logged twice (by a run and its resumption, or two writers before the cell lock
            # existed) keeps its last value: curves come in log order.
            db.executemany(
                "INSERT OR REPLACE INTO curves VALUES (?,?,?,?)",
                [(cell_id, p["split"], p["step"], p["loss"]) for p in result.get("curves", [])],
            )
            for task, rows in (result.get("problem_scores") or {}).items():
                _insert_rows(db, cell_id, task, rows)
            size = result.get("model_size")
            db.execute(
                "UPDATE cells SET status='done', error=NULL, finished_at=?, model_size=COALESCE(model_size, ?)"
                " WHERE cell_id=?",
                (_now(), size, cell_id),
            )

    def rows(self, table: str) -> list[dict]:
        if table not in TABLES:
            raise CodepeftError(f"unknown table {table!r}; the store has {', '.join(TABLES)}")
        return [dict(r) for r in self.db.execute(f"SELECT * FROM {table}")]

    def export(self, directory: str | Path, fmt: str) -> list[Path]:
        """Every table as CSV or Parquet files in `directory`."""
        import pandas as pd

        if fmt not in ("csv", "parquet"):
            raise CodepeftError(f"export format must be csv or parquet, not {fmt!r}")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for table in TABLES:
            frame = pd.read_sql_query(f"SELECT * FROM {table}", self.db)
            path = out / f"{table}.{fmt}"
            frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path, index=False)
            paths.append(path)
        return paths


def _insert_problem_scores(db: sqlite3.Connection, cell_id: str, task: str, result: dict) -> None:
    from codepeft.metrics.per_problem import problem_scores

    _insert_rows(db, cell_id, task, problem_scores(result))


def _add_isolation(db: sqlite3.Connection, cell_id: str, task: str, level: str) -> None:
    rows = db.execute("SELECT metric, detail FROM metrics WHERE cell_id=? AND task=?", (cell_id, task)).fetchall()
    for row in rows:
        detail = {**json.loads(row["detail"] or "{}"), "isolation": level}
        db.execute(
            "UPDATE metrics SET detail=? WHERE cell_id=? AND task=? AND metric=?",
            (json.dumps(detail), cell_id, task, row["metric"]),
        )


def _insert_rows(db: sqlite3.Connection, cell_id: str, task: str, rows: list[dict]) -> None:
    db.executemany(
        "INSERT OR REPLACE INTO problems VALUES (?,?,?,?,?,?,?,?)",
        [
            (cell_id, task, r["problem"], r["metric"], r["value"], r.get("n"), r.get("c"),
             json.dumps(r["detail"]) if r.get("detail") is not None else None)
            for r in rows
        ],
    )  # fmt: skip


def _eval_files(study_dir: Path, spec: str | None) -> Iterator[tuple[str, dict]]:
    """(task, evaluation result) of a done cell, from its folder (as recorded, or under the
    store's own cells/ when the study folder moved)."""
    if not spec:
        return
    recorded = json.loads(spec).get("cell_dir")
    if not recorded:
        return
    for folder in (Path(recorded), study_dir / "cells" / Path(recorded).name):
        if (folder / "eval").is_dir():
            for path in sorted((folder / "eval").glob("*.json")):
                try:
                    yield path.stem, json.loads(path.read_text())
                except (OSError, json.JSONDecodeError):
                    continue  # an unreadable file: that task has no per-problem scores
            return


def flatten_scores(task: str, scores: dict, isolation: str | None = None) -> list[dict]:
    """Metric rows of one task's scores; nested breakdowns (per category, per CWE) become
    `parent/child` metrics when they carry a value. An execution task's rows name the isolation
    level its programs ran at in their detail."""
    rows = []

    def visit(name: str, s: dict) -> None:
        if "value" in s and not isinstance(s["value"], dict):
            ci = s.get("ci95") or (None, None)
            rows.append(
                {
                    "task": task,
                    "metric": name,
                    "value": s["value"],
                    "n": s.get("n"),
                    "k": s.get("k"),
                    "ci_low": ci[0],
                    "ci_high": ci[1],
                    "sd": s.get("sd"),
                    "detail": {
                        **{
                            k: v
                            for k, v in s.items()
                            if k in ("per_seed", "seeds", "components", "problems", "examples", "samples", "tokens")
                        },
                        **({"isolation": isolation} if isolation else {}),
                    },
                }
            )
            return
        for key, child in s.items():
            if isinstance(child, dict):
                visit(f"{name}/{key}", child)

    for metric, s in scores.items():
        if isinstance(s, dict):
            visit(metric, s)
    return rows


STORE_NAME = "results.sqlite"


def store_path(directory: str | Path) -> Path:
    return Path(directory) / STORE_NAME


def open_store(directory: str | Path, must_exist: bool = True) -> Store:
    path = store_path(directory)
    if must_exist and not path.is_file():
        raise CodepeftError(
            f"no study results in {directory} (missing {STORE_NAME}); run `codepeft study CONFIG` first"
        )
    return Store(path)
