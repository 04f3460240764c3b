"""The SQLite store: server-owned ids, insert-only rows, namespaces, /history bounded by bytes, SQLite's own errors,
quick_check on open."""
import sqlite3

import pytest
from docarray import Document, DocumentArray

from dalle_flow.store import ImageStore, StoredImage, StoreError
from tests.conftest import load_script, png_data_uri, test_image


def image(i: int, namespace: str = "", size: int = 10) -> StoredImage:
    return StoredImage(f"prompt {i}", "image/png", {"i": i}, bytes([i % 256]) * size, namespace)


def test_store_survives_reopen_and_pages_newest_first(tmp_path):
    path = tmp_path / "db.sqlite"
    store = ImageStore(path)
    rows = store.add([image(i) for i in range(5)])
    store.close()
    store = ImageStore(path)
    assert store.count() == 5
    page = store.history(offset=1, limit=2)
    assert [item.id for item in page] == [rows[3].id, rows[2].id]
    assert page[0].image == bytes([3]) * 10 and page[0].tags == {"i": 3} and page[0].mime_type == "image/png"


def test_ids_are_drawn_by_the_store_and_rows_never_replaced(tmp_path):
    store = ImageStore(tmp_path / "db.sqlite")
    first = store.add([StoredImage("mine", "image/png", {}, b"original", id="chosen-by-client")])[0]
    # the original keyed rows by the client's doc.id with INSERT OR REPLACE: the same id overwrote the image
    second = store.add([StoredImage("attack", "image/png", {}, b"overwrite", id=first.id)])[0]
    assert first.id != "chosen-by-client" and second.id != first.id
    assert [item.image for item in store.history()] == [b"overwrite", b"original"]


def test_failed_batch_stores_nothing(tmp_path):
    store = ImageStore(tmp_path / "db.sqlite")
    store.add([image(1)])
    bad = [image(2), StoredImage("broken", "image/png", {}, None)]
    with pytest.raises(StoreError, match="not stored"):
        store.add(bad)
    assert [item.text for item in store.history()] == ["prompt 1"]


def test_disk_full_reports_sqlites_error_and_stores_nothing(tmp_path):
    store = ImageStore(tmp_path / "db.sqlite")
    store.add([image(1)])
    store._db.execute("PRAGMA max_page_count = 20")  # a full disk, as SQLite sees it
    with pytest.raises(StoreError) as caught:
        store.add([image(i, size=64 * 1024) for i in range(4)])
    # the original answered "cannot rollback - no transaction is active", hiding the cause
    assert "database or disk is full" in str(caught.value) and "cannot rollback" not in str(caught.value)
    assert store.count() == 1
    store._db.execute("PRAGMA max_page_count = 1073741823")
    assert len(store.add([image(2)])) == 1  # the store keeps working once there is room


def test_history_is_bounded_by_bytes_and_always_advances(tmp_path):
    store = ImageStore(tmp_path / "db.sqlite")
    store.add([image(i, size=1000) for i in range(10)])
    page = store.history(limit=10, max_bytes=3500)
    assert [item.text for item in page] == ["prompt 9", "prompt 8", "prompt 7"]
    assert len(store.history(limit=10, max_bytes=10)) == 1  # one row even when it alone is larger


def test_namespaces_keep_histories_apart(tmp_path):
    store = ImageStore(tmp_path / "db.sqlite")
    store.add([image(1), image(2, namespace="alice")])
    assert [item.text for item in store.history()] == ["prompt 1"]
    assert [item.text for item in store.history(namespace="alice")] == ["prompt 2"]
    assert store.history(namespace="bob") == []


def test_old_database_gains_the_namespace_column(tmp_path):
    path = tmp_path / "db.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE images (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, stored_time REAL "
               "NOT NULL, text TEXT NOT NULL, mime_type TEXT NOT NULL, tags TEXT NOT NULL, image BLOB NOT NULL)")
    db.execute("INSERT INTO images (id, stored_time, text, mime_type, tags, image) VALUES ('old', 1, 't', "
               "'image/png', '{}', x'00')")
    db.commit()
    db.close()
    assert [item.id for item in ImageStore(path).history()] == ["old"]


def test_damaged_database_is_refused_at_open(tmp_path):
    path = tmp_path / "db.sqlite"
    store = ImageStore(path)
    store.add([image(i, size=4096) for i in range(20)])
    store.close()
    data = bytearray(path.read_bytes())
    data[4096 * 2:4096 * 4] = b"\xff" * 8192  # overwrite pages of the table
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=str(path.name)):
        ImageStore(path)


def test_store_executor_serves_the_same_bytes_after_a_restart(tmp_path):
    store_executor = load_script("executors/store/executor.py").ImageStoreExecutor
    uris = [png_data_uri(test_image(24, seed=s)) for s in range(3)]
    executor = store_executor(workspace=str(tmp_path))
    for uri in uris:  # one request each, as /upscale sends them
        docs = DocumentArray([Document(uri=uri, text="keep me")])
        executor.persist(docs)
        assert docs[0].tags["stored"] is True
    executor.close()
    executor = store_executor(workspace=str(tmp_path))  # the same workspace, as a restarted Flow
    try:
        history = executor.history(parameters={"limit": 10})
    finally:
        executor.close()
    assert [d.uri for d in history] == uris[::-1]  # newest first, the very same PNG bytes
    assert [d.text for d in history] == ["keep me"] * 3
