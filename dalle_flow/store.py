"""Finished images, persisted in SQLite: the PNG bytes exactly as served, plus their tags. No blobs or embeddings."""
from __future__ import annotations

import json
import sqlite3
import threading
import time
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


@dataclass
class StoredImage:
    id: str
    stored_time: float
    text: str
    mime_type: str
    tags: dict
    image: bytes


class ImageStore:
    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")  # a crash mid-write never corrupts what was committed
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(SCHEMA)

    def add(self, items: list[StoredImage]) -> int:
        """Insert (or replace, by id) in one transaction: either all of a request's images are stored or none."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for item in items:
                    self._db.execute(
                        "INSERT OR REPLACE INTO images (id, stored_time, text, mime_type, tags, image) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (item.id, item.stored_time or time.time(), item.text, item.mime_type,
                         json.dumps(item.tags, sort_keys=True, default=str), sqlite3.Binary(item.image)))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(items)

    def history(self, offset: int = 0, limit: int = 20) -> list[StoredImage]:
        """Newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, stored_time, text, mime_type, tags, image FROM images ORDER BY seq DESC LIMIT ? OFFSET ?",
                (int(limit), int(offset))).fetchall()
        return [StoredImage(r[0], r[1], r[2], r[3], json.loads(r[4]), bytes(r[5])) for r in rows]

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def close(self):
        with self._lock:
            self._db.close()
