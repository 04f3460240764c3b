from dalle_flow.store import ImageStore, StoredImage


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
