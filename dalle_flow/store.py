"""Finished images, persisted in SQLite: the image bytes exactly as served, their real mime type and their tags.

The store owns every row: ids are drawn here (never a client's `doc.id`), rows are only ever inserted, never
replaced, and a write is reported only after its transaction is committed with `synchronous=FULL` (durable). An
optional namespace (a name the client chooses) keeps one client's history apart from the shared one. SQLite's own
error reaches the caller (e.g. "database or disk is full"), and the database is checked with `quick_check` on open.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    stored_time REAL NOT NULL,
    text TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    tags TEXT NOT NULL,
    image BLOB NOT NULL
)
"""
# added after the first release: a database written before it gets the column with every row in the shared history
NAMESPACE_COLUMN = "ALTER TABLE images ADD COLUMN namespace TEXT NOT NULL DEFAULT ''"
NAMESPACE_INDEX = "CREATE INDEX IF NOT EXISTS images_by_namespace ON images (namespace, seq)"


class StoreError(RuntimeError):
    """SQLite refused a read or write; the message is SQLite's own."""


@dataclass
class StoredImage:
    text: str
    mime_type: str
    tags: dict
    image: bytes
    namespace: str = ""
    id: str = ""  # drawn by the store when the row is written
    stored_time: float = 0.0


class ImageStore:
    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")  # a crash mid-write never corrupts what was committed
            self._db.execute("PRAGMA synchronous=FULL")  # COMMIT returns once the write is on disk
            problems = [row[0] for row in self._db.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise StoreError(f"{self.path}: the database failed SQLite's quick_check: {'; '.join(problems[:5])}")
            self._db.execute(SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(images)")}
            if "namespace" not in columns:
                self._db.execute(NAMESPACE_COLUMN)
            self._db.execute(NAMESPACE_INDEX)
        except sqlite3.DatabaseError as exc:  # e.g. "file is not a database"
            self._db.close()
            raise StoreError(f"{self.path}: {exc}") from None
        except StoreError:
            self._db.close()
            raise

    def add(self, items: list[StoredImage]) -> list[StoredImage]:
        """Insert in one transaction: either all of a request's images are stored or none. Returns the items with
        the ids and times the store gave them, once the transaction is durable."""
        now = time.time()
        rows = [StoredImage(item.text, item.mime_type, item.tags, item.image, item.namespace, uuid.uuid4().hex, now)
                for item in items]
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for item in rows:
                    self._db.execute(
                        "INSERT INTO images (id, stored_time, text, mime_type, tags, image, namespace) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (item.id, item.stored_time, item.text, item.mime_type,
                         json.dumps(item.tags, sort_keys=True, default=str), sqlite3.Binary(item.image),
                         item.namespace))
                self._db.execute("COMMIT")
            except (sqlite3.Error, TypeError, ValueError) as exc:
                # SQLite may already have rolled back (a full disk does): a second ROLLBACK would replace its error
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"the images were not stored: {exc}") from None
        return rows

    def history(self, offset: int = 0, limit: int = 20, namespace: str = "",
                max_bytes: int | None = None) -> list[StoredImage]:
        """Newest first, `limit` rows at most and, with max_bytes, no more image bytes than that (at least one row,
        so a page always advances)."""
        with self._lock:
            try:
                sizes = self._db.execute(
                    "SELECT seq, length(image) FROM images WHERE namespace = ? ORDER BY seq DESC LIMIT ? OFFSET ?",
                    (namespace, int(limit), int(offset))).fetchall()
                chosen, total = [], 0
                for seq, size in sizes:
                    if max_bytes is not None and chosen and total + size > max_bytes:
                        break
                    chosen.append(seq)
                    total += size
                rows = [self._db.execute(
                    "SELECT id, stored_time, text, mime_type, tags, image, namespace FROM images WHERE seq = ?",
                    (seq,)).fetchone() for seq in chosen]
            except sqlite3.Error as exc:
                raise StoreError(f"the history could not be read: {exc}") from None
        return [StoredImage(text=r[2], mime_type=r[3], tags=json.loads(r[4]), image=bytes(r[5]), namespace=r[6],
                            id=r[0], stored_time=r[1]) for r in rows]

    def count(self, namespace: str | None = None) -> int:
        with self._lock:
            if namespace is None:
                return self._db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM images WHERE namespace = ?", (namespace,)).fetchone()[0]

    def close(self):
        with self._lock:
            self._db.close()
