"""Where every real checkpoint comes from, how a running server finds it, and how a download is checked.

One registry (`REGISTRY`) lists every file the Flow needs. `resolve()` looks for a file in this order:

1. an explicit directory: the ``weights_dir`` argument, else ``DALLE_FLOW_WEIGHTS_DIR``; inside it
   ``<group>/<filename>`` and then ``<filename>``;
2. the cache: the Hugging Face hub cache for files hosted there, else ``~/.cache/dalle_flow/<group>/``;
3. a download with a progress bar, unless offline (``HF_HUB_OFFLINE=1`` or ``DALLE_FLOW_OFFLINE=1``).

A file that cannot be found raises `MissingWeightsError` naming the file, every place searched, and the command
that fetches it; so does a file whose size differs from the one expected. Executors resolve at start-up so that a
missing or wrong file stops the server before the first request.

Downloads (`fetch_url`) are checked against, where known: the registry's size and SHA-256 (each with its public
source), the ``Content-Length`` / ``Content-Range`` the server sends, and what the hub states about its files
(``X-Linked-Size``, ``X-Linked-Etag``: the LFS SHA-256 its model pages list; the git SHA-1 ``ETag`` of small files).
Hub files come from ``HF_ENDPOINT`` (the hub client's own variable), the others from their URL or, with
``DALLE_FLOW_WEIGHTS_MIRROR``, from the same path on that server. ``DALLE_FLOW_WEIGHTS_MANIFEST`` names a JSON file
that replaces the expected size/SHA-256 of the files it lists (self-built or fine-tuned checkpoints on a mirror).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import http.client
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ENV_WEIGHTS_DIR = "DALLE_FLOW_WEIGHTS_DIR"
ENV_OFFLINE = "DALLE_FLOW_OFFLINE"
ENV_MIRROR = "DALLE_FLOW_WEIGHTS_MIRROR"
ENV_MANIFEST = "DALLE_FLOW_WEIGHTS_MANIFEST"
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
CACHE_DIR = Path(os.environ.get("DALLE_FLOW_CACHE", Path.home() / ".cache" / "dalle_flow"))
DOWNLOAD_TIMEOUT_S = 60  # per network operation (connect, each read), not for the whole file
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class WeightFile:
    group: str  # which model needs it: dalle, vqgan, glid3, swinir, clip, clipseg
    filename: str
    hf_repo: str | None = None
    hf_revision: str | None = None
    url: str | None = None
    size: int | None = None  # exact bytes, where a public source states them (checked on download and at start-up)
    sha256: str | None = None
    checksum_source: str | None = None  # who states `size` / `sha256`
    approx_size: int | None = None  # for disk planning only: from the model's parameter count

    @property
    def key(self) -> str:
        return f"{self.group}/{self.filename}"

    @property
    def source(self) -> str:
        if self.hf_repo:
            rev = f"@{self.hf_revision}" if self.hf_revision else ""
            return f"huggingface.co/{self.hf_repo}{rev}"
        return self.url or "?"


def _hf(group, repo, names, revision=None, approx=None, pinned=None):
    """Hub files of one repository; `pinned` maps a file name to the size / SHA-256 a public source states for it."""
    approx, pinned = approx or {}, pinned or {}
    return [WeightFile(group, name, hf_repo=repo, hf_revision=revision, approx_size=approx.get(name),
                       **pinned.get(name, {})) for name in names]


GB, MB = 10**9, 10**6

# Hub revisions are pinned to a commit wherever a public page ties the files to one, so that `hf_hub_download` and
# `--dir` downloads fetch (and check) the same bytes; CLIP stays at main (no commit id found), its SHA-256 pinned.
# The hub's pages round LFS sizes ("10.4 GB"): an exact size is pinned only where an LFS pointer (`size N`) or a
# listing in bytes states it. Where nothing is stated publicly the entry keeps only `approx_size`.
DALLE_MEGA_REPO = "dalle-mini/dalle-mega"
DALLE_MEGA_REVISION = "661203c9f0b19db31c8c857bad6c9c2315a95b42"  # "Push wandb artifact dalle-mini/dalle-mini/mega-1:v16"
DALLE_MINI_REPO = "dalle-mini/dalle-mini"
ENWIKI_REVISION = "d37887a74f2b3fafe88849d8fa7410c6ac68c29f"  # "feat: update enwiki", the word list's last change
VQGAN_REPO = "dalle-mini/vqgan_imagenet_f16_16384"
VQGAN_REVISION = "e93a26e7707683d349bf5d5c41c5b0ef69b677a9"  # the revision DALL·E Flow pinned
GLID3_BASE_URL = "https://dall-3.com/models/glid-3-xl"
SWINIR_URL = ("https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
              "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth")
# The release page states no checksum; these public download manifests of the same URL agree on size and SHA-256:
SWINIR_CHECKSUM_SOURCE = ("TensoRaws/ccrestoration model zoo and LykosAI/StabilityMatrix's upscaler list "
                          "(SHA-256); independent download scripts (size 142,473,939)")
CLIP_REPO = "openai/clip-vit-large-patch14-336"  # main ships pytorch_model.bin; model.safetensors is only in PR #8
CLIPSEG_REPO = "CIDAS/clipseg-rd64-refined"
CLIPSEG_REVISION = "583b388deb98a04feb3e1f816dcdb8f3062ee205"  # "Update preprocessor_config.json": main
HF = "https://huggingface.co"

PINNED = {
    "dalle/flax_model.msgpack": dict(
        sha256="35a6c84b02cff45f7257283dbc7f2e4c403950ef146d9f0c9f5e6b9848b9602c",
        checksum_source=f"{HF}/{DALLE_MEGA_REPO}/blob/main/flax_model.msgpack (LFS SHA-256; last changed in 661203c, "
                        f"the pinned revision)"),
    "dalle/enwiki-words-frequency.txt": dict(
        size=34_196_068, sha256="26bc86b265dacb1f3974fc5aec5fd2523319a2a5207c6ff5c3c602a0f146574b",
        checksum_source=f"LFS pointers in {HF}/{DALLE_MINI_REPO}/commit/{ENWIKI_REVISION} and "
                        f"{HF}/{DALLE_MEGA_REPO}/commit/f815ffa5bdab671dfdb6aa4e0f749b7228dc8d9a"),
    "vqgan/config.json": dict(
        size=434, checksum_source=f"{HF}/{VQGAN_REPO}/tree/85eb5d3b51a1c62a0cc8f4ccdee9882c0d0bd384 and "
                                  f"/tree/9f990ec03ea054204706013e2176bbb498ebc387 (434 Bytes; the file's last "
                                  f"change is 85eb5d3, before the pinned revision)"),
    "vqgan/flax_model.msgpack": dict(
        sha256="5ef1a8f63877e450b2616169dcd1ab8f7b8a5eb95160549a1805e9e4511caa93",
        checksum_source=f"{HF}/{VQGAN_REPO}/blob/main/flax_model.msgpack (LFS SHA-256; last changed in 85eb5d3, "
                        f"before the pinned revision, which only edits README.md)"),
    "clip/pytorch_model.bin": dict(
        size=1_711_974_081, sha256="c6032c2e0caae3dc2d4fba35535fa6307dbb49df59c7e182b1bc4b3329b81801",
        checksum_source=f"{HF}/{CLIP_REPO}/blob/main/pytorch_model.bin (LFS SHA-256); the same SHA-256 with size "
                        f"1711974081 in the LFS pointer of {HF}/licyk/controlnet_v1.1_annotator/commit/fdd93e3 "
                        f"(clip_vision/Clip-vit-large-patch14-336.bin), and on {HF}/fofr/comfyui "
                        f"(clip_vision/clip-vit-large-patch14-336.bin)"),
    "clipseg/pytorch_model.bin": dict(
        sha256="dd9308225b8314bb7236f207e6ea72b22db5d90dba03fe3dc7d654f54dcfd08a",
        checksum_source=f"{HF}/{CLIPSEG_REPO}/blob/8bef68afb9ebcbb7b153eee19f49aedb58e3f083/pytorch_model.bin "
                        f"(LFS SHA-256; last changed in 217ba22, before the pinned revision); the same blob in the "
                        f"hub-cache copy at {HF}/fofr/comfyui (clipseg/blobs/, refs/main = the pinned revision)"),
}


def _pins(group: str) -> dict[str, dict]:
    return {key.split("/", 1)[1]: pin for key, pin in PINNED.items() if key.startswith(group + "/")}


REGISTRY: list[WeightFile] = [
    *_hf("dalle", DALLE_MEGA_REPO, ["config.json", "flax_model.msgpack", "vocab.json", "merges.txt",
                                    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"],
         revision=DALLE_MEGA_REVISION, approx={"flax_model.msgpack": int(10.4 * GB)}, pinned=_pins("dalle")),
    *_hf("dalle", DALLE_MINI_REPO, ["enwiki-words-frequency.txt"], revision=ENWIKI_REVISION, pinned=_pins("dalle")),
    *_hf("vqgan", VQGAN_REPO, ["config.json", "flax_model.msgpack"], revision=VQGAN_REVISION,
         approx={"flax_model.msgpack": 304 * MB}, pinned=_pins("vqgan")),
    WeightFile("glid3", "finetune.pt", url=f"{GLID3_BASE_URL}/finetune.pt", approx_size=int(3.49 * GB)),
    WeightFile("glid3", "kl-f8.pt", url=f"{GLID3_BASE_URL}/kl-f8.pt", approx_size=335 * MB),
    WeightFile("glid3", "bert.pt", url=f"{GLID3_BASE_URL}/bert.pt", approx_size=int(2.33 * GB)),
    WeightFile("glid3", "vocab.txt", hf_repo="bert-base-uncased"),
    WeightFile("swinir", "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth", url=SWINIR_URL,
               size=142_473_939, sha256="99adfa91350a84c99e946c1eb3d8fce34bc28f57d807b09dc8fe40a316328c0a",
               checksum_source=SWINIR_CHECKSUM_SOURCE),
    *_hf("clip", CLIP_REPO, ["config.json", "pytorch_model.bin", "preprocessor_config.json", "tokenizer.json",
                             "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"],
         pinned=_pins("clip")),
    *_hf("clipseg", CLIPSEG_REPO, ["config.json", "pytorch_model.bin", "preprocessor_config.json", "tokenizer.json",
                                   "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"],
         revision=CLIPSEG_REVISION, approx={"pytorch_model.bin": 603 * MB}, pinned=_pins("clipseg")),
]
GROUPS = tuple(dict.fromkeys(f.group for f in REGISTRY))


class MissingWeightsError(FileNotFoundError):
    pass


def entries() -> list[WeightFile]:
    """The registry with ``DALLE_FLOW_WEIGHTS_MANIFEST`` applied: ``{"<group>/<file>": {"size": N, "sha256": H}}``
    replaces the expected size and hash of the files it names."""
    overrides = _manifest()
    if not overrides:
        return list(REGISTRY)
    known = {entry.key for entry in REGISTRY}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"{ENV_MANIFEST}: unknown file(s) {', '.join(unknown)}; names are <group>/<file> as in "
                         f"`python -m dalle_flow weights list`")
    return [dataclasses.replace(entry, size=overrides[entry.key].get("size"), sha256=overrides[entry.key].get("sha256"),
                                checksum_source=os.environ[ENV_MANIFEST])
            if entry.key in overrides else entry for entry in REGISTRY]


def _manifest() -> dict[str, dict]:
    path = os.environ.get(ENV_MANIFEST, "").strip()
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{ENV_MANIFEST}: cannot read {path}: {exc}") from None
    for key, value in (data.items() if isinstance(data, dict) else [("(top level)", None)]):
        size, sha256 = (value.get("size"), value.get("sha256")) if isinstance(value, dict) else (None, None)
        if not isinstance(value, dict) or not (isinstance(size, int) and size >= 0 or size is None) or not (
                sha256 is None or isinstance(sha256, str) and _is_hex(sha256.lower(), 64)):
            raise ValueError(f"{ENV_MANIFEST}: {key}: must be {{\"size\": <bytes>, \"sha256\": <64 hex digits>}}, "
                             f"got {value!r}")
    return data


def lookup(group: str, filename: str) -> WeightFile:
    for entry in entries():
        if entry.group == group and entry.filename == filename:
            return entry
    raise KeyError(f"no weight file {group}/{filename} in the registry")


def is_offline() -> bool:
    return any(os.environ.get(v, "").strip() not in ("", "0", "false") for v in (ENV_OFFLINE, "HF_HUB_OFFLINE"))


def local_candidates(entry: WeightFile, explicit_dir=None) -> list[Path]:
    """Every local path where `entry` may already be, in the order they are tried."""
    paths = []
    root = _explicit_dir(explicit_dir)
    if root is not None:
        paths += [root / entry.group / entry.filename, root / entry.filename]
    if entry.hf_repo:
        cached = _hf_cached(entry)
        paths.append(cached or Path(f"<huggingface cache>/{entry.hf_repo}/{entry.filename}"))
    else:
        paths.append(CACHE_DIR / entry.group / entry.filename)
    return paths


def find_local(entry: WeightFile, explicit_dir=None) -> Path | None:
    for path in local_candidates(entry, explicit_dir):
        if path.is_file():
            return path
    return None


def resolve(group: str, filename: str, weights_dir=None, allow_download: bool | None = None) -> Path:
    entry = lookup(group, filename)
    found = find_local(entry, weights_dir)
    if found is not None:
        _refuse_if_bad(entry, found, verify_file(entry, found, hash_contents=False))
        return found
    if allow_download is None:
        allow_download = not is_offline()
    if allow_download:
        try:
            return download(entry)
        except OSError as exc:
            raise MissingWeightsError(_missing_message(entry, weights_dir, f"download failed: {exc}")) from exc
    raise MissingWeightsError(_missing_message(entry, weights_dir, "offline, so no download was tried"))


def resolve_group(group: str, weights_dir=None, allow_download: bool | None = None) -> dict[str, Path]:
    return {e.filename: resolve(group, e.filename, weights_dir, allow_download) for e in entries() if e.group == group}


def _missing_message(entry: WeightFile, explicit_dir, why: str) -> str:
    searched = "\n".join(f"  - {p}" for p in local_candidates(entry, explicit_dir))
    return (f"weight file {entry.filename!r} ({entry.group}) not found ({why}). Looked in:\n{searched}\n"
            f"Get it with: python -m dalle_flow weights download --only {entry.group}  (source: {entry.source}),\n"
            f"or place it at $DALLE_FLOW_WEIGHTS_DIR/{entry.group}/{entry.filename}.")


def _hf_cached(entry: WeightFile) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(entry.hf_repo, entry.filename, revision=entry.hf_revision)
    return Path(found) if isinstance(found, str) else None


def download(entry: WeightFile, dest_dir: Path | None = None, progress: bool = True) -> Path:
    """Fetch one file, checked. Without `dest_dir`, hub files go to the hub cache through `hf_hub_download`;
    everything else (and hub files with a `dest_dir`) through `fetch_url`, with the same checks for both."""
    if entry.hf_repo and dest_dir is None:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(entry.hf_repo, entry.filename, revision=entry.hf_revision, endpoint=hf_endpoint()))
        status = verify_file(entry, path)
        if status.startswith("BAD"):
            raise OSError(f"{entry.key} from {entry.source}: {status}")
        return path
    target = (dest_dir or CACHE_DIR / entry.group) / entry.filename
    fetch_url(download_url(entry), target, expected_size=entry.size, expected_sha256=entry.sha256, progress=progress)
    return target


def download_url(entry: WeightFile) -> str:
    """Where `entry` is fetched from: the hub (``HF_ENDPOINT``) for hub files, else its URL, or the same path on
    ``DALLE_FLOW_WEIGHTS_MIRROR`` when that is set."""
    if entry.hf_repo:
        return f"{hf_endpoint()}/{entry.hf_repo}/resolve/{entry.hf_revision or 'main'}/{entry.filename}"
    mirror = os.environ.get(ENV_MIRROR, "").strip().rstrip("/")
    if not mirror:
        return entry.url
    if urllib.parse.urlsplit(mirror).scheme not in ("http", "https"):
        raise ValueError(f"{ENV_MIRROR}: must be an http:// or https:// URL, got {mirror!r}")
    return mirror + urllib.parse.urlsplit(entry.url).path


def hf_endpoint() -> str:
    """The hub's address: ``HF_ENDPOINT`` (the hub client's own variable, read when called), else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT", "").strip() or HF_DEFAULT_ENDPOINT).rstrip("/")


# ---- verified, resumable, locked downloads ------------------------------------------------------------------------

class _StatedHeaders(urllib.request.HTTPRedirectHandler):
    """Keeps what the hub states about a file on its redirect response (``X-Linked-Size``, ``X-Linked-Etag`` = the
    LFS SHA-256, ``ETag`` = the git blob SHA-1 of small files): the final (CDN) response does not repeat it."""

    def __init__(self):
        self.stated: dict[str, str] = {}

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self._keep(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)

    def _keep(self, headers):
        for name in ("X-Linked-Size", "X-Linked-Etag", "ETag"):
            value = headers.get(name)
            if value and name not in self.stated:
                self.stated[name] = value.strip().removeprefix("W/").strip('"')


def _stated_expectations(stated: dict[str, str], url: str) -> tuple[int | None, str | None, str | None]:
    """(size, sha256, git blob sha1) the server vouched for, from hub headers only."""
    if "/resolve/" not in url:
        return None, None, None
    size = int(stated["X-Linked-Size"]) if stated.get("X-Linked-Size", "").isdigit() else None
    linked = stated.get("X-Linked-Etag", "").lower()
    sha256 = linked if _is_hex(linked, 64) else None
    etag = stated.get("ETag", "").lower()
    git_sha1 = etag if sha256 is None and _is_hex(etag, 40) else None
    return size, sha256, git_sha1


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


@contextlib.contextmanager
def _download_lock(target: Path):
    """One download per file across processes (replicas starting together): an exclusive `flock` on
    ``<file>.lock``. The lock file stays: removing it would let a third process lock a different inode."""
    lock_path = target.with_name(target.name + ".lock")
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{target.name}: another process is downloading it; waiting", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch_url(url: str, target: Path, expected_size: int | None = None, expected_sha256: str | None = None,
              progress: bool = True) -> Path:
    """Download `url` to `target`, checked, resumable and locked.

    Bytes go to ``<file>.part``; its validator (the server's strong ETag or Last-Modified) goes to
    ``<file>.part.json``. A later call resumes with ``Range`` + ``If-Range`` and keeps the bytes only when the
    server answers 206 with a ``Content-Range`` starting where the part ends; a 200 starts over, a 416 on a complete
    part is accepted. The total must equal ``Content-Length`` (a cut-short transfer raises and stays resumable), the
    expected size, and the size and hash the hub states; the file is moved into place only then, with a
    ``<file>.verified.json`` record that ``weights verify`` re-checks.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _download_lock(target):
        if target.is_file():  # another process finished it while this one waited for the lock
            status = _check(target, expected_size, expected_sha256, read_record(target))
            if not status.startswith("BAD"):
                return target
            raise OSError(f"{target}: {status}; delete it and download again")
        partial = target.with_name(target.name + ".part")
        state_path = partial.with_name(partial.name + ".json")
        total, stated = _transfer(url, partial, state_path, expected_size, progress)
        stated_size, stated_sha256, git_sha1 = _stated_expectations(stated, url)
        problems = []
        for label, expected in (("expected", expected_size), ("stated by the hub", stated_size)):
            if expected is not None and total != expected:
                problems.append(f"size {total} != {expected} ({label})")
        digest = sha256_of(partial)
        for label, expected in (("expected", expected_sha256), ("stated by the hub", stated_sha256)):
            if expected is not None and digest != expected.lower():
                problems.append(f"SHA-256 {digest} != {expected} ({label})")
        if git_sha1 is not None and git_blob_sha1(partial) != git_sha1:
            problems.append(f"git blob SHA-1 != {git_sha1} (stated by the hub)")
        if problems:
            _discard(partial, state_path)
            raise OSError(f"{target.name} from {url}: {'; '.join(problems)}; the partial file was removed")
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
        state_path.unlink(missing_ok=True)
        checked = "expected" if expected_sha256 else "hub" if stated_sha256 or git_sha1 else "size only"
        _write_record(target, {"size": total, "sha256": digest, "checked_against": checked, "url": url})
        return target


def _transfer(url: str, partial: Path, state_path: Path, expected_size: int | None, progress: bool,
              restarted: bool = False) -> tuple[int, dict[str, str]]:
    """Bring `partial` to the whole file; (its size, the hub's statements)."""
    from tqdm import tqdm

    have = partial.stat().st_size if partial.exists() else 0
    validator = _read_json(state_path).get("validator") if have else None
    if have and (validator is None or (expected_size is not None and have > expected_size)):
        _discard(partial, state_path)  # bytes nobody can vouch for belong to this file: start over
        have = 0
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers.update({"Range": f"bytes={have}-", "If-Range": validator})
    stated_headers = _StatedHeaders()
    opener = urllib.request.build_opener(stated_headers)
    try:
        response = opener.open(urllib.request.Request(url, headers=headers), timeout=DOWNLOAD_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        stated_headers._keep(err.headers)
        content_range = err.headers.get("Content-Range", "")
        err.close()
        if err.code == 416 and have:
            if content_range == f"bytes */{have}":  # the part was already complete
                return have, stated_headers.stated
            if not restarted:
                _discard(partial, state_path)
                return _transfer(url, partial, state_path, expected_size, progress, restarted=True)
        raise OSError(f"{url}: HTTP {err.code} {err.reason}") from None
    with response:
        stated_headers._keep(response.headers)
        length = response.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise OSError(f"{url}: no Content-Length, so a cut-short download could not be told from a whole one")
        if response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range", ""))
            if start != have or int(length) != total - have:
                if restarted:
                    raise OSError(f"{url}: Content-Range {response.headers.get('Content-Range')!r} does not continue "
                                  f"the {have} bytes already here")
                response.close()
                _discard(partial, state_path)
                return _transfer(url, partial, state_path, expected_size, progress, restarted=True)
        else:  # 200: the whole file (no range asked, the server ignores ranges, or the file changed since)
            have, total = 0, int(length)
        if expected_size is not None and total != expected_size:
            raise OSError(f"{url}: the server offers {total} bytes, expected {expected_size}: a different file")
        _write_json(state_path, {"url": url, "validator": _validator(response.headers), "size": total})
        with open(partial, "ab" if have else "wb") as out, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=partial.name[:-5], disable=not progress,
                file=sys.stderr) as bar:
            try:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
            except http.client.IncompleteRead:
                pass  # the size check below reports it
    got = partial.stat().st_size
    if got != total:
        raise OSError(f"{url}: download cut short at {got} of {total} bytes; run the download again to resume")
    return total, stated_headers.stated


def _validator(headers) -> str | None:
    """What ``If-Range`` may carry: a strong ETag (weak ones are not allowed there), else Last-Modified."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _parse_content_range(value: str) -> tuple[int, int]:
    """``bytes START-END/TOTAL`` -> (START, TOTAL)."""
    try:
        unit, rest = value.split(" ", 1)
        span, total = rest.split("/")
        if unit != "bytes":
            raise ValueError
        return int(span.split("-")[0]), int(total)
    except ValueError:
        raise OSError(f"unreadable Content-Range {value!r}") from None


def _discard(*paths: Path):
    for path in paths:
        path.unlink(missing_ok=True)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict):
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


def record_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def read_record(path: Path) -> dict:
    """What `fetch_url` recorded about a file it downloaded (size, SHA-256), or {}."""
    return _read_json(record_path(path))


def _write_record(path: Path, record: dict):
    _write_json(record_path(path), record)


def verify_file(entry: WeightFile, path: Path, hash_contents: bool = True) -> str:
    """``ok ...``, ``BAD ...`` or ``unverified ...`` for a local copy of `entry`. Compared with, in this order: the
    registry's size/SHA-256 (or ``DALLE_FLOW_WEIGHTS_MANIFEST``'s), the record `fetch_url` wrote, and the hub
    cache's own blob name (the LFS SHA-256 or git blob SHA-1 the file was stored under). Without `hash_contents`
    nothing is read (cheap enough for every start-up): the size, and the registry's SHA-256 against the hash the
    download record or the hub cache's blob name already holds."""
    record = read_record(path)
    blob = _hub_blob_name(path)
    if not hash_contents:
        size, expected = path.stat().st_size, entry.size or record.get("size")
        if expected is not None and size != expected:
            return f"BAD size {size} != {expected}"
        known = record.get("sha256") or (blob if blob and _is_hex(blob, 64) else None)
        if entry.sha256 and known and known != entry.sha256.lower():
            return f"BAD sha256 {known} != {entry.sha256} (registry)"
        return "ok (size)"
    return _check(path, entry.size, entry.sha256, record, blob)


def _check(path: Path, size: int | None, sha256: str | None, record: dict, blob: str | None = None) -> str:
    actual = path.stat().st_size
    for expected, what in ((size, "registry"), (record.get("size"), "download record")):
        if expected is not None and actual != expected:
            return f"BAD size {actual} != {expected} ({what})"
    if sha256 is None and record.get("sha256") is None and blob is None:
        if size is not None:
            return "ok (size)"
        return "unverified: no size or hash known for it"
    digest = sha256_of(path)
    for expected, what in ((sha256, "registry"), (record.get("sha256"), "download record")):
        if expected is not None and digest != expected.lower():
            return f"BAD sha256 {digest} != {expected} ({what})"
    if blob is not None and digest != blob and git_blob_sha1(path) != blob:
        return f"BAD hash: does not match the hub cache blob {blob}"
    return "ok (sha256)"


def _hub_blob_name(path: Path) -> str | None:
    """A hub-cache snapshot file links to ``blobs/<LFS sha256 or git sha1>``: that name is the expected hash."""
    real = Path(os.path.realpath(path))
    if real.parent.name != "blobs" or not (_is_hex(real.name, 64) or _is_hex(real.name, 40)):
        return None
    return real.name


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The SHA-1 git (and the hub's ETag of a small file) gives a file: sha1(b"blob <size>\\0" + contents)."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def resolve_hf_model(group: str, repo_id: str, weights_dir=None, allow_download: bool | None = None) -> str:
    """A local folder holding a whole Hugging Face model (CLIP, CLIPSeg), found like single files above.

    `repo_id` may itself be a local folder. Otherwise: ``<weights dir>/<group>/`` when it holds a config.json, then the
    hub cache (at the registry's revision), then a download unless offline. The registry's files found in the folder
    are checked as `resolve` checks single files (a fresh download is hashed).
    """
    if Path(repo_id).expanduser().is_dir():
        return str(Path(repo_id).expanduser())
    root = _explicit_dir(weights_dir)
    searched = []
    if root is not None:
        for candidate in (root / group / repo_id.replace("/", "--"), root / group):
            searched.append(candidate)
            if (candidate / "config.json").is_file():
                return _checked_folder(repo_id, candidate, hash_contents=False)
    from huggingface_hub import snapshot_download

    files = [e for e in entries() if e.hf_repo == repo_id]
    hub = dict(allow_patterns=[e.filename for e in files] or None, endpoint=hf_endpoint(),
               revision=next((e.hf_revision for e in files if e.hf_revision), None))
    searched.append(Path(f"<huggingface cache>/{repo_id}"))
    try:
        return _checked_folder(repo_id, snapshot_download(repo_id, local_files_only=True, **hub),
                               hash_contents=False)
    except MissingWeightsError:
        raise
    except Exception:  # not cached (the hub raises several types for that)
        pass
    if allow_download is None:
        allow_download = not is_offline()
    why = "offline, so no download was tried"
    if allow_download:
        try:
            folder = snapshot_download(repo_id, **hub)
        except Exception as exc:
            why = f"download failed: {exc}"
        else:
            return _checked_folder(repo_id, folder, hash_contents=True)
    places = "\n".join(f"  - {p}" for p in searched)
    raise MissingWeightsError(f"model {repo_id!r} ({group}) not found ({why}). Looked in:\n{places}\n"
                              f"Get it with: python -m dalle_flow weights download --only {group},\n"
                              f"or place the model folder at $DALLE_FLOW_WEIGHTS_DIR/{group}/.")


def _checked_folder(repo_id: str, folder, hash_contents: bool) -> str:
    """`folder`, once every registry file of `repo_id` in it passes `verify_file`."""
    for entry in entries():
        path = Path(folder) / entry.filename
        if entry.hf_repo != repo_id or not path.is_file():
            continue
        _refuse_if_bad(entry, path, verify_file(entry, path, hash_contents=hash_contents))
    return str(folder)


def _refuse_if_bad(entry: WeightFile, path: Path, status: str):
    if status.startswith("BAD"):
        raise MissingWeightsError(f"weight file {path} ({entry.group}) is not the expected file: {status}. "
                                  f"Delete it and run: python -m dalle_flow weights download --only {entry.group}")


def _explicit_dir(explicit) -> Path | None:
    value = explicit or os.environ.get(ENV_WEIGHTS_DIR)
    return Path(value).expanduser() if value else None
