"""The calibration store: one SQLite file, append-only, a row per run.

``runs(seed PRIMARY KEY, record, seconds)``: the record is the run's canonical JSON (its seed,
verdict, draws, and every check's name, status and p-value: the check names are stored per record,
so a battery that gains checks still reads); ``seconds`` is timing, outside the record.
``meta``: the schema and the Spec the runs belong to.  Each finished task is one transaction, so a
killed process (SIGKILL included) leaves every committed run whole and no partial one; the next
run with the same store skips the seeds it holds.  A seed met twice (a task that Dask re-ran after
a worker died) is kept once, and its second record must be identical to the first.
"""

from __future__ import annotations

import sqlite3

SCHEMA = "dropout-stats-calibration-store/1"


class StoreError(ValueError):
    pass


class Store:
    def __init__(self, path: str | None, spec_json: str):
        self.path = path or ":memory:"
        try:
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL" if path else "PRAGMA journal_mode=MEMORY")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across a killed process
            self._init(spec_json)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"--store ({path}) is not a calibration store: {exc}") from None

    def _init(self, spec_json: str) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS runs (seed INTEGER PRIMARY KEY, record TEXT NOT NULL, seconds REAL)")
            meta = dict(db.execute("SELECT key, value FROM meta"))
            if not meta:
                db.executemany("INSERT INTO meta VALUES (?, ?)", [("schema", SCHEMA), ("spec", spec_json)])
            elif meta.get("schema") != SCHEMA:
                raise StoreError(f"--store ({self.path}) has schema {meta.get('schema')!r}, not {SCHEMA!r}")
            elif meta.get("spec") != spec_json:
                raise StoreError(
                    f"--store ({self.path}) holds runs of other settings ({_difference(meta.get('spec'), spec_json)}): "
                    "use another file, or the settings it was made with"
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def done(self, lo: int, hi: int) -> set:
        """The seeds in [lo, hi) that the store holds."""
        return {s for (s,) in self.db.execute("SELECT seed FROM runs WHERE seed >= ? AND seed < ?", (lo, hi))}

    def add(self, rows) -> int:
        """[(seed, record, seconds)] in one transaction; the number of new runs."""
        db, new = self.db, 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for seed, record, seconds in rows:
                cur = db.execute("INSERT OR IGNORE INTO runs VALUES (?, ?, ?)", (seed, record, seconds))
                if cur.rowcount:
                    new += 1
                    continue
                (old,) = db.execute("SELECT record FROM runs WHERE seed = ?", (seed,)).fetchone()
                if old != record:
                    raise StoreError(
                        f"seed {seed} gave a different record on a second run: verify(seed) is not reproducible "
                        "for this target, so no store can make its calibration repeatable"
                    )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return new

    def records(self, lo: int, hi: int, batch: int = 10_000):
        """The records of the seeds in [lo, hi), by seed."""
        cur = self.db.execute("SELECT record FROM runs WHERE seed >= ? AND seed < ? ORDER BY seed", (lo, hi))
        while rows := cur.fetchmany(batch):
            yield from (r for (r,) in rows)

    def seconds(self, lo: int, hi: int) -> tuple[int, float]:
        """(runs, their seconds added up) in [lo, hi)."""
        n, total = self.db.execute(
            "SELECT COUNT(seconds), TOTAL(seconds) FROM runs WHERE seed >= ? AND seed < ?", (lo, hi)
        ).fetchone()
        return int(n), float(total)

    def close(self) -> None:
        self.db.close()


def _difference(old: str | None, new: str) -> str:
    import json

    try:
        a, b = json.loads(old), json.loads(new)
    except (TypeError, ValueError):
        return "unreadable settings"
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return "; ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} here" for k in keys) or "different"
