"""Where every real checkpoint comes from, and how a running server finds it.

One registry (`REGISTRY`) lists every file the Flow needs. `resolve()` looks for a file in this order:

1. an explicit directory: the ``weights_dir`` argument, else ``DALLE_FLOW_WEIGHTS_DIR``; inside it
   ``<group>/<filename>`` and then ``<filename>``;
2. the cache: the Hugging Face hub cache for files hosted there, else ``~/.cache/dalle_flow/<group>/``;
3. a download with a progress bar, unless offline (``HF_HUB_OFFLINE=1`` or ``DALLE_FLOW_OFFLINE=1``).

A file that cannot be found raises `MissingWeightsError` naming the file, every place searched, and the command
that fetches it. Executors resolve at start-up so that a missing file stops the server before the first request.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ENV_WEIGHTS_DIR = "DALLE_FLOW_WEIGHTS_DIR"
ENV_OFFLINE = "DALLE_FLOW_OFFLINE"
CACHE_DIR = Path(os.environ.get("DALLE_FLOW_CACHE", Path.home() / ".cache" / "dalle_flow"))


@dataclass(frozen=True)
class WeightFile:
    group: str  # which model needs it: dalle, vqgan, glid3, swinir, clip, clipseg
    filename: str
    hf_repo: str | None = None
    hf_revision: str | None = None
    url: str | None = None
    size: int | None = None  # exact bytes, where known (checked after download)
    sha256: str | None = None
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


def _hf(group, repo, names, revision=None, approx=None):
    approx = approx or {}
    return [WeightFile(group, name, hf_repo=repo, hf_revision=revision, approx_size=approx.get(name)) for name in names]


GB, MB = 10**9, 10**6


DALLE_MEGA_REPO = "dalle-mini/dalle-mega"
VQGAN_REPO = "dalle-mini/vqgan_imagenet_f16_16384"
VQGAN_REVISION = "e93a26e7707683d349bf5d5c41c5b0ef69b677a9"  # the revision DALL·E Flow pinned
GLID3_BASE_URL = "https://dall-3.com/models/glid-3-xl"
SWINIR_URL = ("https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
              "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth")
CLIP_REPO = "openai/clip-vit-large-patch14-336"
CLIPSEG_REPO = "CIDAS/clipseg-rd64-refined"

REGISTRY: list[WeightFile] = [
    *_hf("dalle", DALLE_MEGA_REPO, ["config.json", "flax_model.msgpack", "vocab.json", "merges.txt",
                                    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"],
         approx={"flax_model.msgpack": int(10.5 * GB)}),
    WeightFile("dalle", "enwiki-words-frequency.txt", hf_repo="dalle-mini/dalle-mini"),
    *_hf("vqgan", VQGAN_REPO, ["config.json", "flax_model.msgpack"], revision=VQGAN_REVISION,
         approx={"flax_model.msgpack": 305 * MB}),
    WeightFile("glid3", "finetune.pt", url=f"{GLID3_BASE_URL}/finetune.pt", approx_size=int(3.49 * GB)),
    WeightFile("glid3", "kl-f8.pt", url=f"{GLID3_BASE_URL}/kl-f8.pt", approx_size=335 * MB),
    WeightFile("glid3", "bert.pt", url=f"{GLID3_BASE_URL}/bert.pt", approx_size=int(2.33 * GB)),
    WeightFile("glid3", "vocab.txt", hf_repo="bert-base-uncased"),
    WeightFile("swinir", "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth", url=SWINIR_URL,
               approx_size=136 * MB),
    *_hf("clip", CLIP_REPO, ["config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json",
                             "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"],
         approx={"model.safetensors": int(1.71 * GB)}),
    *_hf("clipseg", CLIPSEG_REPO, ["config.json", "pytorch_model.bin", "preprocessor_config.json", "tokenizer.json",
                                   "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"],
         approx={"pytorch_model.bin": 603 * MB}),
]
GROUPS = tuple(dict.fromkeys(f.group for f in REGISTRY))


class MissingWeightsError(FileNotFoundError):
    pass


def lookup(group: str, filename: str) -> WeightFile:
    for entry in REGISTRY:
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
    return {e.filename: resolve(group, e.filename, weights_dir, allow_download) for e in REGISTRY if e.group == group}


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


def download(entry: WeightFile, dest_dir: Path | None = None) -> Path:
    """Fetch one file with a progress bar; URL downloads resume from a partial file and check SHA-256 when known."""
    if entry.hf_repo and dest_dir is None:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(entry.hf_repo, entry.filename, revision=entry.hf_revision))
    url = entry.url or f"https://huggingface.co/{entry.hf_repo}/resolve/{entry.hf_revision or 'main'}/{entry.filename}"
    target = (dest_dir or CACHE_DIR / entry.group) / entry.filename
    fetch_url(url, target, expected_size=entry.size, expected_sha256=entry.sha256)
    return target


def fetch_url(url: str, target: Path, expected_size: int | None = None, expected_sha256: str | None = None,
              progress: bool = True) -> Path:
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        if have and response.status != 206:  # server ignored the range: start over
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else expected_size
        with open(partial, "ab" if have else "wb") as out, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=target.name, disable=not progress
        ) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
    if expected_size is not None and partial.stat().st_size != expected_size:
        raise OSError(f"{target.name}: size {partial.stat().st_size} != expected {expected_size}")
    if expected_sha256 is not None:
        digest = sha256_of(partial)
        if digest != expected_sha256:
            partial.unlink()
            raise OSError(f"{target.name}: SHA-256 {digest} != expected {expected_sha256}; the partial file was removed")
    shutil.move(partial, target)
    return target


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def resolve_hf_model(group: str, repo_id: str, weights_dir=None, allow_download: bool | None = None) -> str:
    """A local folder holding a whole Hugging Face model (CLIP, CLIPSeg), found like single files above.

    `repo_id` may itself be a local folder. Otherwise: ``<weights dir>/<group>/`` when it holds a config.json, then the
    hub cache, then a download unless offline.
    """
    if Path(repo_id).expanduser().is_dir():
        return str(Path(repo_id).expanduser())
    root = _explicit_dir(weights_dir)
    searched = []
    if root is not None:
        for candidate in (root / group / repo_id.replace("/", "--"), root / group):
            searched.append(candidate)
            if (candidate / "config.json").is_file():
                return str(candidate)
    from huggingface_hub import snapshot_download

    patterns = [e.filename for e in REGISTRY if e.hf_repo == repo_id] or None
    searched.append(Path(f"<huggingface cache>/{repo_id}"))
    try:
        return snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True)
    except Exception:  # not cached (the hub raises several types for that)
        pass
    if allow_download is None:
        allow_download = not is_offline()
    why = "offline, so no download was tried"
    if allow_download:
        try:
            return snapshot_download(repo_id, allow_patterns=patterns)
        except Exception as exc:
            why = f"download failed: {exc}"
    places = "\n".join(f"  - {p}" for p in searched)
    raise MissingWeightsError(f"model {repo_id!r} ({group}) not found ({why}). Looked in:\n{places}\n"
                              f"Get it with: python -m dalle_flow weights download --only {group},\n"
                              f"or place the model folder at $DALLE_FLOW_WEIGHTS_DIR/{group}/.")


def _explicit_dir(explicit) -> Path | None:
    value = explicit or os.environ.get(ENV_WEIGHTS_DIR)
    return Path(value).expanduser() if value else None
