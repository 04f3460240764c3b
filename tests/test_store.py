"""The SQLite store, then the store executor called without a Flow: what it stored survives a restart."""
from docarray import Document, DocumentArray

from dalle_flow.store import ImageStore, StoredImage
from tests.conftest import load_script, png_data_uri, test_image


def test_store_survives_reopen_and_pages_newest_first(tmp_path):
    path = tmp_path / "db.sqlite"
    store = ImageStore(path)
    store.add([StoredImage(f"id{i}", 0.0, f"prompt {i}", "image/png", {"i": i}, bytes([i]) * 10) for i in range(5)])
    store.close()
    store = ImageStore(path)
    assert store.count() == 5
    page = store.history(offset=1, limit=2)
    assert [item.id for item in page] == ["id3", "id2"]
    assert page[0].image == bytes([3]) * 10 and page[0].tags == {"i": 3}


def test_failed_batch_stores_nothing(tmp_path):
    store = ImageStore(tmp_path / "db.sqlite")
    store.add([StoredImage("keep", 0.0, "", "image/png", {}, b"x")])
    bad = [StoredImage("new", 0.0, "", "image/png", {}, b"y"), StoredImage("broken", 0.0, "", "image/png", {}, None)]
    try:
        store.add(bad)
    except Exception:
        pass
    assert [item.id for item in store.history()] == ["keep"]


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
