"""Weight resolution and verified downloads, against a local file server on loopback that reproduces each fault:
a cut-short transfer, a wrong-size stand-in, a 416 on a complete `.part`, a file changed between attempts, a wrong
Content-Range, no Content-Length, two processes racing for one file, and mirrors (HF_ENDPOINT and
DALLE_FLOW_WEIGHTS_MIRROR)."""
import dataclasses
import hashlib
import http.server
import json
import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from dalle_flow.serving import weights
from dalle_flow.serving.weights import MissingWeightsError, WeightFile

PAYLOAD = bytes(range(256)) * 1000  # 256,000 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()
SWINIR = "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth"


class FaultyHandler(http.server.BaseHTTPRequestHandler):
    """Serves `server.payload` at any path with Range/If-Range, or misbehaves as `server.fault` says."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append({"path": self.path, "range": self.headers.get("Range"),
                             "if_range": self.headers.get("If-Range")})
        data, fault = srv.payload, srv.fault
        start = 0
        if self.headers.get("Range") and fault != "ignore_range" and self.headers.get("If-Range") == srv.etag:
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            shown = start + 1 if fault == "wrong_start" else start
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {shown}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
            srv.full_bodies += 1
        if fault != "no_length":
            self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", srv.etag)
        for name, value in srv.extra_headers.items():
            self.send_header(name, value)
        self.end_headers()
        body = data[start:]
        if fault == "cut":
            body = body[:srv.cut_after]
        try:
            for i in range(0, len(body), 16384):
                self.wfile.write(body[i:i + 16384])
                if srv.delay:
                    time.sleep(srv.delay)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up on this answer, as it should
            pass
        if fault in ("cut", "no_length"):
            self.close_connection = True


@pytest.fixture
def file_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FaultyHandler)
    server.payload, server.etag, server.fault, server.cut_after = PAYLOAD, '"v1"', None, 5000
    server.requests, server.full_bodies, server.delay, server.extra_headers = [], 0, 0.0, {}
    server.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_explicit_dir_is_searched_first(tmp_path, monkeypatch):
    (tmp_path / "glid3").mkdir()
    (tmp_path / "glid3" / "bert.pt").write_bytes(b"x")
    monkeypatch.setenv("DALLE_FLOW_WEIGHTS_DIR", str(tmp_path))
    assert weights.resolve("glid3", "bert.pt") == tmp_path / "glid3" / "bert.pt"


def test_missing_offline_names_file_places_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("DALLE_FLOW_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("DALLE_FLOW_OFFLINE", "1")
    monkeypatch.setattr(weights, "CACHE_DIR", tmp_path / "cache")
    with pytest.raises(MissingWeightsError) as err:
        weights.resolve("swinir", SWINIR)
    text = str(err.value)
    assert SWINIR in text
    assert str(tmp_path / "swinir" / SWINIR) in text
    assert "python -m dalle_flow weights download --only swinir" in text


def test_hf_model_missing_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(MissingWeightsError, match="openai/clip-vit-large-patch14-336"):
        weights.resolve_hf_model("clip", "openai/clip-vit-large-patch14-336", weights_dir=tmp_path)


def test_every_pinned_checksum_names_its_source():
    pinned = [entry for entry in weights.REGISTRY if entry.size or entry.sha256]
    assert {entry.key for entry in pinned} == set(weights.PINNED) | {f"swinir/{SWINIR}"}
    for entry in pinned:
        assert entry.checksum_source, entry.key
        assert entry.sha256 is None or weights._is_hex(entry.sha256, 64), entry.key
    for entry in weights.REGISTRY:  # a pinned hub revision is a commit, never a branch that can move
        assert entry.hf_revision is None or weights._is_hex(entry.hf_revision, 40), entry.key


def test_readme_weights_table_lists_every_file_with_its_pins():
    """The README's table is the documentation of these numbers: it must not drift from the registry."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme[readme.index("## Weights"):readme.index("## How the models are implemented")]
    for entry in weights.REGISTRY:
        row = next((line for line in table.splitlines() if line.startswith(f"| `{entry.key}` |")), None)
        assert row is not None, f"README Weights table has no row for {entry.key}"
        if entry.sha256:
            assert f"`{entry.sha256[:12]}…`" in row, entry.key
        if entry.size:
            assert f"{entry.size:,}" in row, entry.key
        if not (entry.size or entry.sha256):
            assert "none stated publicly" in row, entry.key



def test_hf_model_folder_with_a_wrong_pinned_file_is_refused(tmp_path):
    """CLIP and CLIPSeg load whole folders: the registry's files in them are checked like single files."""
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert weights.resolve_hf_model("clip", weights.CLIP_REPO, weights_dir=tmp_path) == str(folder)
    (folder / "pytorch_model.bin").write_bytes(PAYLOAD)
    with pytest.raises(MissingWeightsError, match=f"pytorch_model.bin .*BAD size {len(PAYLOAD)} != 1711974081"):
        weights.resolve_hf_model("clip", weights.CLIP_REPO, weights_dir=tmp_path)

# ---- faults ----------------------------------------------------------------------------------------------------

def test_cut_short_download_is_refused_then_resumed_with_if_range(tmp_path, file_server):
    """The fault: 5,000 of 256,000 bytes arrive and the connection closes. Before, the part was moved into place."""
    target = tmp_path / "f.bin"
    file_server.fault = "cut"
    with pytest.raises(OSError, match="cut short at 5000 of 256000 bytes"):
        weights.fetch_url(f"{file_server.url}/f.bin", target, progress=False)
    assert not target.exists() and (tmp_path / "f.bin.part").stat().st_size == 5000
    file_server.fault = None
    weights.fetch_url(f"{file_server.url}/f.bin", target, expected_sha256=SHA, progress=False)
    assert target.read_bytes() == PAYLOAD and not (tmp_path / "f.bin.part").exists()
    assert file_server.requests[-1] == {"path": "/f.bin", "range": "bytes=5000-", "if_range": '"v1"'}
    assert file_server.full_bodies == 1  # the second request fetched only the rest
    assert weights.read_record(target) == {"size": len(PAYLOAD), "sha256": SHA, "checked_against": "expected",
                                           "url": f"{file_server.url}/f.bin"}


def test_file_changed_since_the_part_starts_over(tmp_path, file_server):
    target = tmp_path / "f.bin"
    file_server.fault = "cut"
    with pytest.raises(OSError, match="cut short"):
        weights.fetch_url(f"{file_server.url}/f.bin", target, progress=False)
    file_server.fault, file_server.etag = None, '"v2"'
    file_server.payload = PAYLOAD[::-1]  # a new version: the server answers the If-Range with the whole file
    weights.fetch_url(f"{file_server.url}/f.bin", target, progress=False)
    assert target.read_bytes() == PAYLOAD[::-1]


def test_a_part_without_validator_is_not_trusted(tmp_path, file_server):
    (tmp_path / "f.bin.part").write_bytes(b"garbage from somewhere")  # no .part.json: cannot prove it is this file
    weights.fetch_url(f"{file_server.url}/f.bin", tmp_path / "f.bin", progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert file_server.requests[-1]["range"] is None


def test_wrong_content_range_restarts_from_zero(tmp_path, file_server):
    target = tmp_path / "f.bin"
    file_server.fault = "cut"
    with pytest.raises(OSError):
        weights.fetch_url(f"{file_server.url}/f.bin", target, progress=False)
    file_server.fault = "wrong_start"  # 206 whose Content-Range does not continue the part: its bytes are dropped
    weights.fetch_url(f"{file_server.url}/f.bin", target, expected_sha256=SHA, progress=False)
    assert target.read_bytes() == PAYLOAD
    assert [r["range"] for r in file_server.requests[-2:]] == ["bytes=5000-", None]


def test_complete_part_answered_416_is_accepted(tmp_path, file_server):
    """The fault: a .part holding the whole file (killed before the rename) got 416 on every later attempt."""
    target = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD)
    (tmp_path / "f.bin.part.json").write_text(json.dumps({"validator": '"v1"'}))
    weights.fetch_url(f"{file_server.url}/f.bin", target, expected_size=len(PAYLOAD), expected_sha256=SHA,
                      progress=False)
    assert target.read_bytes() == PAYLOAD
    assert file_server.requests[-1]["range"] == f"bytes={len(PAYLOAD)}-" and file_server.full_bodies == 0


def test_wrong_size_is_refused_before_writing(tmp_path, file_server):
    with pytest.raises(OSError, match="offers 256000 bytes, expected 1000000"):
        weights.fetch_url(f"{file_server.url}/f.bin", tmp_path / "f.bin", expected_size=1_000_000, progress=False)
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()


def test_wrong_hash_removes_the_part(tmp_path, file_server):
    with pytest.raises(OSError, match="SHA-256"):
        weights.fetch_url(f"{file_server.url}/g.bin", tmp_path / "g.bin", None, "0" * 64, progress=False)
    assert not (tmp_path / "g.bin").exists() and not (tmp_path / "g.bin.part").exists()


def test_no_content_length_is_refused(tmp_path, file_server):
    file_server.fault = "no_length"
    with pytest.raises(OSError, match="no Content-Length"):
        weights.fetch_url(f"{file_server.url}/f.bin", tmp_path / "f.bin", progress=False)
    assert not (tmp_path / "f.bin").exists()


def _fetch_in_child(url, target, queue):
    try:
        weights.fetch_url(url, target, expected_sha256=SHA, progress=False)
        queue.put("ok")
    except Exception as exc:  # reported to the parent, which fails the test
        queue.put(repr(exc))


def test_two_processes_racing_share_one_download(tmp_path, file_server):
    """The fault: two replicas starting together appended to one .part. Now the second waits on the file's lock and
    finds the finished file."""
    file_server.delay = 0.02  # 16 chunks: ~0.3 s, so the second process starts while the first downloads
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    target = tmp_path / "f.bin"
    children = [context.Process(target=_fetch_in_child, args=(f"{file_server.url}/f.bin", target, queue))
                for _ in range(2)]
    for child in children:
        child.start()
        time.sleep(0.05)
    for child in children:
        child.join(30)
    assert sorted(queue.get(timeout=5) for _ in children) == ["ok", "ok"]
    assert target.read_bytes() == PAYLOAD
    assert file_server.full_bodies == 1 and len(file_server.requests) == 1


# ---- checks on files already present ---------------------------------------------------------------------------

def test_wrong_size_stand_in_stops_resolve_and_fails_verify(tmp_path, monkeypatch):
    """The fault: a 5 kB stand-in for the 142 MB SwinIR file was reported present and loaded."""
    (tmp_path / "swinir").mkdir()
    stand_in = tmp_path / "swinir" / SWINIR
    stand_in.write_bytes(b"\0" * 5000)
    entry = weights.lookup("swinir", SWINIR)
    assert weights.verify_file(entry, stand_in).startswith("BAD size 5000 != 142473939")
    with pytest.raises(MissingWeightsError, match="not the expected file: BAD size 5000 != 142473939"):
        weights.resolve("swinir", SWINIR, weights_dir=tmp_path)


def test_manifest_replaces_expected_size_and_hash(tmp_path, monkeypatch):
    (tmp_path / "swinir").mkdir()
    (tmp_path / "swinir" / SWINIR).write_bytes(PAYLOAD)
    manifest = tmp_path / "sizes.json"
    manifest.write_text(json.dumps({f"swinir/{SWINIR}": {"size": len(PAYLOAD), "sha256": SHA}}))
    monkeypatch.setenv(weights.ENV_MANIFEST, str(manifest))
    entry = weights.lookup("swinir", SWINIR)
    assert (entry.size, entry.sha256, entry.checksum_source) == (len(PAYLOAD), SHA, str(manifest))
    assert weights.verify_file(entry, tmp_path / "swinir" / SWINIR) == "ok (sha256)"
    assert weights.resolve("swinir", SWINIR, weights_dir=tmp_path) == tmp_path / "swinir" / SWINIR
    manifest.write_text(json.dumps({"swinir/other.pth": {"size": 1}}))
    with pytest.raises(ValueError, match="unknown file.*swinir/other.pth"):
        weights.entries()
    manifest.write_text(json.dumps({f"swinir/{SWINIR}": {"sha256": "xyz"}}))
    with pytest.raises(ValueError, match="DALLE_FLOW_WEIGHTS_MANIFEST.*64 hex digits"):
        weights.entries()


def test_verify_uses_the_download_record(tmp_path, file_server):
    target = tmp_path / "f.bin"
    weights.fetch_url(f"{file_server.url}/f.bin", target, progress=False)
    entry = WeightFile("t", "f.bin", url="http://unused")
    assert weights.verify_file(entry, target) == "ok (sha256)"
    target.write_bytes(PAYLOAD[:-1] + b"x")  # same size, corrupted later
    assert weights.verify_file(entry, target).startswith("BAD sha256")
    target.write_bytes(b"short")
    assert weights.verify_file(entry, target).startswith("BAD size 5 != 256000 (download record)")
    loose = tmp_path / "placed-by-hand.bin"
    loose.write_bytes(PAYLOAD)
    assert weights.verify_file(WeightFile("t", loose.name, url="http://unused"), loose).startswith("unverified")


# ---- mirrors -----------------------------------------------------------------------------------------------------

def test_mirror_variable_replaces_the_origin_of_non_hub_urls(monkeypatch):
    entry = weights.lookup("swinir", SWINIR)
    monkeypatch.delenv(weights.ENV_MIRROR, raising=False)
    assert weights.download_url(entry) == weights.SWINIR_URL
    monkeypatch.setenv(weights.ENV_MIRROR, "http://mirror.internal:8080/")
    assert weights.download_url(entry) == ("http://mirror.internal:8080/JingyunLiang/SwinIR/releases/download/v0.0/"
                                           + SWINIR)
    monkeypatch.setenv(weights.ENV_MIRROR, "ftp://x")
    with pytest.raises(ValueError, match="DALLE_FLOW_WEIGHTS_MIRROR"):
        weights.download_url(entry)


def test_hub_files_with_a_dir_come_from_hf_endpoint_checked_against_the_hub(tmp_path, file_server, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", file_server.url)
    pinned = weights.lookup("vqgan", "flax_model.msgpack")
    assert weights.download_url(pinned) == (f"{file_server.url}/dalle-mini/vqgan_imagenet_f16_16384/resolve/"
                                            f"{weights.VQGAN_REVISION}/flax_model.msgpack")
    entry = dataclasses.replace(pinned, size=None, sha256=None)  # a hub file nobody published a hash for
    file_server.extra_headers = {"X-Linked-Size": str(len(PAYLOAD)), "X-Linked-Etag": f'"{"0" * 64}"'}
    with pytest.raises(OSError, match="stated by the hub"):
        weights.download(entry, tmp_path / "vqgan", progress=False)
    assert not (tmp_path / "vqgan" / "flax_model.msgpack").exists()
    file_server.extra_headers = {"X-Linked-Size": str(len(PAYLOAD)), "X-Linked-Etag": f'"{SHA}"'}
    path = weights.download(entry, tmp_path / "vqgan", progress=False)
    assert path.read_bytes() == PAYLOAD and weights.read_record(path)["checked_against"] == "hub"


def test_small_hub_files_are_checked_against_their_git_sha1(tmp_path, file_server, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", file_server.url)
    entry = weights.lookup("clip", "config.json")
    file_server.payload = b'{"projection_dim": 768}\n'
    file_server.etag = '"' + hashlib.sha1(b"blob 24\0" + file_server.payload).hexdigest() + '"'
    path = weights.download(entry, tmp_path / "clip", progress=False)
    assert weights.read_record(path)["checked_against"] == "hub"
    path.unlink()
    weights.record_path(path).unlink()
    file_server.etag = '"' + "1" * 40 + '"'
    with pytest.raises(OSError, match="git blob SHA-1"):
        weights.download(entry, tmp_path / "clip", progress=False)


# ---- the published sizes and hashes of the real files -----------------------------------------------------------

@pytest.mark.parametrize("key", ["dalle/flax_model.msgpack", "vqgan/flax_model.msgpack", "clip/pytorch_model.bin",
                                 "clipseg/pytorch_model.bin", "dalle/enwiki-words-frequency.txt"])
def test_pinned_hub_file_with_other_bytes_is_refused_even_when_the_hub_vouches_for_them(key, tmp_path, file_server,
                                                                                      monkeypatch):
    """A mirror (or a moved branch) serving other bytes under the right name: the hub's own headers agree with what it
    sends, the registry's published SHA-256 (or size) does not, and nothing is kept."""
    monkeypatch.setenv("HF_ENDPOINT", file_server.url)
    entry = weights.lookup(*key.split("/"))
    file_server.extra_headers = {"X-Linked-Size": str(len(PAYLOAD)), "X-Linked-Etag": f'"{SHA}"'}
    expected = (f"offers {len(PAYLOAD)} bytes, expected {entry.size}" if entry.size
                else f"SHA-256 {SHA} != {entry.sha256} \\(expected\\)")
    with pytest.raises(OSError, match=expected):
        weights.download(entry, tmp_path / entry.group, progress=False)
    assert not [path.name for path in (tmp_path / entry.group).iterdir() if not path.name.endswith(".lock")]


@pytest.mark.parametrize("key", ["clip/pytorch_model.bin", "dalle/enwiki-words-frequency.txt", "vqgan/config.json"])
def test_wrong_size_stand_in_for_a_pinned_hub_file_stops_resolve(key, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = weights.lookup(*key.split("/"))
    (tmp_path / entry.group).mkdir()
    (tmp_path / entry.group / entry.filename).write_bytes(PAYLOAD)
    assert weights.verify_file(entry, tmp_path / entry.group / entry.filename).startswith(
        f"BAD size {len(PAYLOAD)} != {entry.size}")
    with pytest.raises(MissingWeightsError, match=f"BAD size {len(PAYLOAD)} != {entry.size}"):
        weights.resolve(entry.group, entry.filename, weights_dir=tmp_path)


def test_same_size_file_with_another_hash_is_refused(tmp_path):
    """`weights verify` hashes the file; start-up reads no bytes but compares the hash already known for it."""
    entry = dataclasses.replace(weights.lookup("clip", "pytorch_model.bin"), size=len(PAYLOAD))
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(PAYLOAD)
    assert weights.verify_file(entry, path) == f"BAD sha256 {SHA} != {entry.sha256} (registry)"
    assert weights.verify_file(entry, path, hash_contents=False) == "ok (size)"  # nothing known yet without reading
    weights._write_record(path, {"size": len(PAYLOAD), "sha256": SHA})  # downloaded under another expectation
    assert weights.verify_file(entry, path, hash_contents=False) == f"BAD sha256 {SHA} != {entry.sha256} (registry)"


def test_hub_cache_blob_of_another_revision_is_refused_at_start_up(tmp_path):
    """The hub cache names each LFS blob after its SHA-256: a snapshot pointing at another blob (another revision,
    a hand-copied cache) is caught without reading the file."""
    entry = dataclasses.replace(weights.lookup("vqgan", "flax_model.msgpack"))
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / weights.VQGAN_REVISION
    blobs.mkdir()
    snapshot.mkdir(parents=True)
    (blobs / SHA).write_bytes(PAYLOAD)
    (snapshot / "flax_model.msgpack").symlink_to(blobs / SHA)
    status = weights.verify_file(entry, snapshot / "flax_model.msgpack", hash_contents=False)
    assert status == f"BAD sha256 {SHA} != {entry.sha256} (registry)"
    (blobs / entry.sha256).write_bytes(PAYLOAD)  # the right name (contents are only read by `weights verify`)
    (snapshot / "flax_model.msgpack").unlink()
    (snapshot / "flax_model.msgpack").symlink_to(blobs / entry.sha256)
    assert weights.verify_file(entry, snapshot / "flax_model.msgpack", hash_contents=False) == "ok (size)"
    assert weights.verify_file(entry, snapshot / "flax_model.msgpack").startswith("BAD sha256")
