"""Every executor at its real size, through the path a user takes: download -> resolve -> load -> serve, on CPU.

    python benchmarks/real_size.py            # real sizes: ~14 GB written, two Flow groups (see below); ≤ 45 min
    python benchmarks/real_size.py --tiny     # the same steps with tiny configs, in seconds (run by the test suite)

1. Writes every checkpoint in its real format with random weights into a scratch "origin" folder laid out like the
   real URLs (``<repo>/resolve/<revision>/<file>`` for hub files, ``/models/glid-3-xl/...`` and
   ``/JingyunLiang/SwinIR/releases/download/v0.0/...`` for the others): DALL·E Mega (fp16 Flax msgpack + its real
   config), VQGAN (msgpack), ``finetune.pt`` (state_dict), ``kl-f8.pt`` (a pickled module under the real ``ldm``
   class names), ``bert.pt``, the SwinIR-L ``.pth`` and CLIP ViT-L/14@336 and CLIPSeg rd64-refined in their HF
   layouts. Keys and shapes are checked against ``tests/fixtures/parity/**/manifest_full.json`` (CLIP and CLIPSeg,
   which have none, against the transformers model of the real config). Tokenizers, vocabularies and the word list
   are the small ones of the tiny preset in the real file formats: they do not change memory or time.
2. Serves that folder on a loopback port (ranges, ETags) and runs ``python -m dalle_flow weights download --dir``
   with ``HF_ENDPOINT`` and ``DALLE_FLOW_WEIGHTS_MIRROR`` pointed at it; ``DALLE_FLOW_WEIGHTS_MANIFEST`` gives the
   sizes of these stand-ins and clears the registry's pinned SHA-256s (those of the released files: see
   ``weights.PINNED``); executors check sizes at start-up, so the Flow gets the same variable.
3. Starts the Flow (``python -m dalle_flow flow-yaml`` with the toggles, then ``jina flow``) with the real preset on
   CPU and the downloaded folder as ``DALLE_FLOW_WEIGHTS_DIR``,
   in groups (toggles) so that no group needs much more than 14 GiB, and posts requests:
   group ``dalle``: DALL·E Mega (bfloat16) + SwinIR + CLIPSeg + CLIP: ``/`` (1 image), ``/upscale``,
   ``/segment``; group ``glid3``: GLID-3 XL + CLIP: ``/`` (1 image, 4 steps), ``/diffuse``. ``--tiny`` runs the
   first group only: the GLID-3 executor always builds finetune.pt's full architecture, so its tiny files are
   written, downloaded and checked but not served.
4. Prints one table row per executor: parameters, file size, ready after (Flow start to the executor's "start server"
   line), peak RSS (the kernel's high-water mark of its process), request time; then the peak total RSS of each group.
   Any error fails the run. Everything written is removed at the end (``--keep`` keeps it).
"""
from __future__ import annotations

import argparse
import contextlib
import email.utils
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dalle_flow.serving import weights  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "parity"
PROMPT = "an oil painting of a humanoid robot playing chess in the style of Matisse"
READY_TIMEOUT_S = {"real": 1800, "tiny": 300}
REQUEST_TIMEOUT_S = 1800
GLID3_STEPS = 4  # the executor's lowest; /diffuse runs 8 with skip_rate 0.5, i.e. 4 sampled steps too
INIT_STD = 0.02  # random weights: small enough that activations stay finite through every layer


# ---------------------------------------------------------------------------------------------- writing checkpoints

def _rng_array(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    return (rng.standard_normal(shape, dtype=np.float32) * INIT_STD).astype(dtype)


def _manifest(name: str) -> dict:
    return json.loads((FIXTURES / name / "manifest_full.json").read_text())


def _check_shapes(what: str, got: dict[str, tuple], manifest: dict | None):
    """Keys and shapes of a written file against the real file's manifest (skipped for tiny configs)."""
    if manifest is None:
        return
    from dalle_flow.runtime.state_dict import shape_mismatch

    problems = shape_mismatch(got, {k: tuple(v) for k, v in manifest["tensors"].items()})
    if problems:
        raise SystemExit(f"{what}: written file does not match manifest_full.json: {problems}")


def _state_shapes(state) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _count(state) -> int:
    return sum(int(np.prod(v.shape)) for v in state.values())


def write_dalle(folder: Path, vqgan_folder: Path, tiny: bool) -> dict[str, int]:
    from dalle_flow.runtime import flax_msgpack
    from dalle_flow.runtime.flax_msgpack_writer import write_flax_msgpack

    folder.mkdir(parents=True, exist_ok=True)
    vqgan_folder.mkdir(parents=True, exist_ok=True)
    source = FIXTURES / "dallebart"
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, folder / name)
    shutil.copy(source / "words-frequency-standin.txt", folder / "enwiki-words-frequency.txt")
    if tiny:
        from dalle_flow.models.dallebart.loader import save_dallebart, tiny_dallebart
        from dalle_flow.models.vqgan.loader import save_vqgan, tiny_vqgan

        vqgan = tiny_vqgan()
        save_vqgan(vqgan, vqgan_folder)
        save_dallebart(tiny_dallebart(image_codebook_size=vqgan.config.n_embed), folder, np.float16)
        dalle_manifest = vqgan_manifest = None
    else:
        rng = np.random.default_rng(0)
        for manifest, target, dtype in ((_manifest("dallebart"), folder, np.float16),
                                        (_manifest("vqgan"), vqgan_folder, np.float32)):
            (target / "config.json").write_text(json.dumps(manifest["config"], indent=2, sort_keys=True))
            items = [(tuple(key.split("/")), lambda shape=tuple(shape): _rng_array(rng, shape, dtype))
                     for key, shape in manifest["tensors"].items()]
            write_flax_msgpack(target / "flax_model.msgpack", items)
        dalle_manifest, vqgan_manifest = _manifest("dallebart"), _manifest("vqgan")
    params = {}
    for what, path, manifest in (("dalle", folder, dalle_manifest), ("vqgan", vqgan_folder, vqgan_manifest)):
        shapes = {"/".join(key): tuple(array.shape)
                  for key, array in flax_msgpack.iter_leaves(path / "flax_model.msgpack")}
        _check_shapes(f"{what}/flax_model.msgpack", shapes, manifest)
        params[what] = sum(int(np.prod(s)) for s in shapes.values())
    return params


@contextlib.contextmanager
def _ldm_classes():
    """Importable ``ldm`` stand-ins, so that torch.save writes the globals the real kl-f8.pt holds
    (``ldm.models.autoencoder.AutoencoderKL``, ``ldm.models.diffusion.ddpm.disabled_train``)."""
    import types

    from torch import nn

    names = ("ldm", "ldm.models", "ldm.models.diffusion", "ldm.models.autoencoder", "ldm.models.diffusion.ddpm")
    saved = {name: sys.modules.get(name) for name in names}
    modules = {name: types.ModuleType(name) for name in names}

    class AutoencoderKL(nn.Module):
        pass

    def disabled_train(self, mode=True):
        return self

    AutoencoderKL.__module__, AutoencoderKL.__qualname__ = "ldm.models.autoencoder", "AutoencoderKL"
    disabled_train.__module__, disabled_train.__qualname__ = "ldm.models.diffusion.ddpm", "disabled_train"
    modules["ldm.models.autoencoder"].AutoencoderKL = AutoencoderKL
    modules["ldm.models.diffusion.ddpm"].disabled_train = disabled_train
    sys.modules.update(modules)
    try:
        yield AutoencoderKL, disabled_train
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _as_ldm_tree(module, root_cls):
    """Same parameters and names with every container of ours a plain module (ldm's `down`, `mid`, ... are)."""
    from torch import nn

    if isinstance(module, nn.ModuleList):
        return nn.ModuleList([_as_ldm_tree(m, nn.Module) for m in module])
    if type(module).__module__.startswith("torch.nn"):
        return module
    out = root_cls()
    for name, parameter in module.named_parameters(recurse=False):
        out.register_parameter(name, parameter)
    for name, child in module.named_children():
        out.add_module(name, _as_ldm_tree(child, nn.Module))
    return out


def write_glid3(folder: Path, tiny: bool) -> dict[str, int]:
    import torch
    from torch import nn

    from dalle_flow.models.glid3 import AutoencoderKL, KLConfig, tiny_bert_embedder, tiny_kl_vae, tiny_unet
    from dalle_flow.models.glid3.tokenizer import tiny_vocab

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    params = {}
    if tiny:
        states = {"finetune.pt": lambda: tiny_unet().state_dict(),
                  "bert.pt": lambda: tiny_bert_embedder().state_dict()}
        kl = tiny_kl_vae()
    else:
        def random_state(manifest):
            return lambda: {k: torch.from_numpy(_rng_array(rng, v, np.float32))
                            for k, v in _manifest(manifest)["tensors"].items()}

        states = {"finetune.pt": random_state("glid3"), "bert.pt": random_state("ldm/bert")}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            kl = AutoencoderKL(KLConfig())
    for name, manifest in (("finetune.pt", "glid3"), ("bert.pt", "ldm/bert")):
        state = states[name]()  # one at a time: the UNet alone is 3.5 GB
        _check_shapes(f"glid3/{name}", _state_shapes(state), None if tiny else _manifest(manifest))
        torch.save(state, folder / name)
        params[name] = _count(state)
        del state
    _check_shapes("glid3/kl-f8.pt", _state_shapes(kl.state_dict()), None if tiny else _manifest("ldm/kl_vae"))
    params["kl-f8.pt"] = _count(kl.state_dict())
    with _ldm_classes() as (autoencoder_cls, disabled_train):
        pickled = _as_ldm_tree(kl, autoencoder_cls)
        pickled.loss = nn.Identity()
        pickled.embed_dim = kl.config.embed_dim
        pickled.eval().requires_grad_(False)
        pickled.train = disabled_train  # what LatentDiffusion does to its first stage
        torch.save(pickled, folder / "kl-f8.pt")
    vocab = tiny_vocab()
    (folder / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])))
    return params


def write_swinir(path: Path, tiny: bool) -> int:
    import torch

    from dalle_flow.models.swinir.loader import save_swinir, tiny_swinir
    from dalle_flow.models.swinir.config import SwinIRConfig
    from dalle_flow.models.swinir.network import SwinIR

    path.parent.mkdir(parents=True, exist_ok=True)
    if tiny:
        model = tiny_swinir()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = SwinIR(SwinIRConfig())
            model.reset_parameters()
    save_swinir(model, path)
    state = model.state_dict()
    _check_shapes(path.name, _state_shapes(state), None if tiny else _manifest("swinir"))
    return sum(p.numel() for p in model.parameters())


def _save_tokenizer_files(tokenizer, folder: Path):
    """The registry lists the slow-tokenizer files too (vocab.json, merges.txt): write them from the same vocabulary."""
    from dalle_flow.runtime.tiny_tokenizer import tiny_vocabulary

    tokenizer.save_pretrained(folder)
    vocab, merges = tiny_vocabulary()
    if not (folder / "vocab.json").exists():
        (folder / "vocab.json").write_text(json.dumps(vocab))
    if not (folder / "merges.txt").exists():
        (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    if not (folder / "special_tokens_map.json").exists():
        (folder / "special_tokens_map.json").write_text(json.dumps(
            {name: str(getattr(tokenizer, name)) for name in ("bos_token", "eos_token", "pad_token", "unk_token")}))


def write_clip(folder: Path, tiny: bool) -> int:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from dalle_flow.models.clip.loader import tiny_clip
    from dalle_flow.runtime.tiny_tokenizer import tiny_clip_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    if tiny:
        embedder = tiny_clip()
        model, processor = embedder.model, embedder.image_processor
    else:
        tokenizer = tiny_clip_tokenizer(77)
        config = CLIPConfig(  # openai/clip-vit-large-patch14-336
            text_config=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                             num_attention_heads=12, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
            vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                               image_size=336, patch_size=14),
            projection_dim=768)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = CLIPModel(config)
        processor = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # as the released repo's main branch ships it
    processor.save_pretrained(folder)
    _save_tokenizer_files(tiny_clip_tokenizer(77), folder)
    return sum(p.numel() for p in model.parameters())


def write_clipseg(folder: Path, tiny: bool) -> int:
    import torch
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, ViTImageProcessor

    from dalle_flow.models.clipseg.config import IMAGENET_MEAN, IMAGENET_STD
    from dalle_flow.models.clipseg.loader import tiny_clipseg
    from dalle_flow.runtime.tiny_tokenizer import tiny_clip_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    if tiny:
        model, processor = tiny_clipseg()
        image_processor, tokenizer = processor.image_processor, processor.tokenizer
    else:
        tokenizer = tiny_clip_tokenizer(77)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # CIDAS/clipseg-rd64-refined: ViT-B/16 CLIP, reduce_dim 64, the refined decoder
            model = CLIPSegForImageSegmentation(CLIPSegConfig(
                extract_layers=[3, 6, 9], reduce_dim=64, conditional_layer=0, use_complex_transposed_convolution=True,
                text_config=dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)))
        image_processor = ViTImageProcessor(do_resize=True, size={"height": 352, "width": 352}, resample=2,
                                            do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                                            image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # the released repo ships pytorch_model.bin
    image_processor.save_pretrained(folder)
    _save_tokenizer_files(tokenizer, folder)
    return sum(p.numel() for p in model.parameters())


def origin_path(origin: Path, entry: weights.WeightFile) -> Path:
    """Where the mirror serves `entry`: the path of its real URL."""
    from urllib.parse import urlsplit

    if entry.hf_repo:
        return origin / entry.hf_repo / "resolve" / (entry.hf_revision or "main") / entry.filename
    return origin / urlsplit(entry.url).path.lstrip("/")


def write_all(scratch: Path, origin: Path, tiny: bool) -> dict[str, int]:
    """Writes every registry file under `origin` at its URL path; returns parameters per executor (`diffusion`
    loads no CLIP of its own: the released finetune.pt, like these files, has no clip_proj)."""
    started = time.monotonic()
    staged = scratch / "staged"
    params = write_dalle(staged / "dalle", staged / "vqgan", tiny)
    params_glid3 = write_glid3(staged / "glid3", tiny)
    swinir_file = next(entry.filename for entry in weights.REGISTRY if entry.group == "swinir")
    params["upscaler"] = write_swinir(staged / "swinir" / swinir_file, tiny)
    clip_params = write_clip(staged / "clip", tiny)
    params["clipseg"] = write_clipseg(staged / "clipseg", tiny)
    for entry in weights.REGISTRY:
        source = staged / entry.group / entry.filename
        if not source.is_file():
            raise SystemExit(f"the writer made no {entry.key}")
        target = origin_path(origin, entry)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    print(f"wrote {len(weights.REGISTRY)} files in {time.monotonic() - started:.0f} s", flush=True)
    return {"dalle": params["dalle"] + params["vqgan"], "rerank": clip_params,
            "diffusion": sum(params_glid3.values()), "upscaler": params["upscaler"],
            "clipseg": params["clipseg"]}


# ------------------------------------------------------------------------------------------------ the local mirror

class MirrorHandler(http.server.BaseHTTPRequestHandler):
    """GET with Range / If-Range (ETag from size and mtime), as a CDN answers; nothing but files under `root`."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        root = self.server.root
        path = (root / self.path.split("?")[0].lstrip("/")).resolve()
        if root not in path.parents or not path.is_file():
            self.send_error(404)
            return
        stat = path.stat()
        size, etag = stat.st_size, f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and self.headers.get("If-Range", etag) == etag:
            start = int(match.group(1))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            shutil.copyfileobj(f, self.wfile, 1 << 20)


@contextlib.contextmanager
def serve_folder(root: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
    server.root = root.resolve()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def download(origin: Path, weights_dir: Path, manifest_path: Path, env: dict) -> float:
    sizes = {entry.key: {"size": origin_path(origin, entry).stat().st_size} for entry in weights.REGISTRY}
    manifest_path.write_text(json.dumps(sizes, indent=1))
    started = time.monotonic()
    with serve_folder(origin) as url:
        run_env = {**env, "HF_ENDPOINT": url, weights.ENV_MIRROR: url, weights.ENV_MANIFEST: str(manifest_path)}
        result = subprocess.run([sys.executable, "-m", "dalle_flow", "weights", "download", "--dir", str(weights_dir)],
                                env=run_env, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    print(result.stdout, flush=True)
    if result.returncode != 0:
        raise SystemExit(f"weights download failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-3000:]}")
    return time.monotonic() - started


# ------------------------------------------------------------------------------------------------- Flow groups

# name, toggles, executor settings (`uses_with`), endpoints. DALL·E Mega runs in bfloat16 (half the 9.6 GiB of
# float32 weights; the same speed on this CPU) so that no group needs more than about 14 GiB; the rest as configured.
GROUPS = {
    "real": [("dalle", {"DISABLE_GLID3XL": "1"}, {"dalle": {"dtype": "bfloat16"}}, ["/", "/upscale", "/segment"]),
             ("glid3", {"DISABLE_DALLE_MEGA": "1", "DISABLE_SWINIR": "1", "ENABLE_CLIPSEG": "0"}, {},
              ["/", "/diffuse"])],
    "tiny": [("dalle", {"DISABLE_GLID3XL": "1"}, {"dalle": {"dtype": "bfloat16"}}, ["/", "/upscale", "/segment"])],
}
ENDPOINT_EXECUTOR = {"/diffuse": "diffusion", "/upscale": "upscaler", "/segment": "clipseg"}


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _descendants(pid: int) -> list[int]:
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Group:
    """One `python -m dalle_flow serve --preset real` process group, watched for memory."""

    def __init__(self, name: str, toggles: dict, settings: dict, weights_dir: Path, manifest_path: Path,
                 workspace: Path, env: dict, timeout_s: int):
        self.name, self.ports = name, _free_ports(3)
        workspace.mkdir(parents=True, exist_ok=True)
        self.log_path = workspace / f"flow-{name}.log"
        run_env = {**env, **toggles, "DALLE_FLOW_PRESET": "real", weights.ENV_WEIGHTS_DIR: str(weights_dir),
                   weights.ENV_MANIFEST: str(manifest_path), weights.ENV_OFFLINE: "1", "HF_HUB_OFFLINE": "1"}
        rendered = subprocess.run([sys.executable, "-m", "dalle_flow", "flow-yaml", "--ports", *map(str, self.ports),
                                   "--workspace", str(workspace)], env=run_env, cwd=ROOT, capture_output=True,
                                  text=True, check=True).stdout
        flow = yaml.safe_load(rendered)
        for executor in flow["executors"]:
            executor.setdefault("uses_with", {}).update(settings.get(executor["name"], {}))
        flow_path = workspace / f"flow-{name}.yml"
        flow_path.write_text(yaml.safe_dump(flow, sort_keys=False))
        args = [str(Path(sys.executable).parent / "jina"), "flow", "--uses", str(flow_path)]
        self.started = time.monotonic()
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=run_env, cwd=ROOT, start_new_session=True)
        self.peak_total_kib, self.executors, self.ready_at = 0, {}, {}  # executor -> pid, seconds to ready
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()
        deadline = self.started + timeout_s
        while "ready to serve" not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-6000:]
                self.close()
                raise SystemExit(f"group {name}: the Flow did not start (exit {self.process.returncode}):\n{tail}")
            time.sleep(1)
        self.ready_s = time.monotonic() - self.started

    def _watch(self):
        while not self._stop.is_set():
            pids = _descendants(self.process.pid)
            self.peak_total_kib = max(self.peak_total_kib, sum(_status_kib(pid, "VmRSS") for pid in pids))
            # Jina logs "<name>/rep-0@<pid> start server bound to ..." once an executor has loaded
            for name, pid in re.findall(r"(\w+)/rep-\d+@(\d+) start server", self.log_path.read_text(errors="replace")):
                if name not in self.executors:
                    self.executors[name] = int(pid)
                    self.ready_at[name] = time.monotonic() - self.started
            time.sleep(0.5)

    def peaks_gib(self) -> dict[str, float]:
        return {name: _status_kib(pid, "VmHWM") / (1 << 20) for name, pid in self.executors.items()}

    def close(self):
        self._stop.set()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _post(url: str, endpoint: str, doc, parameters: dict):
    from jina import Client

    client = Client(host=url)
    started = time.monotonic()
    result = client.post(endpoint, inputs=[doc], parameters=parameters, timeout=REQUEST_TIMEOUT_S * 1000)
    return result, time.monotonic() - started


def run_requests(group: Group, endpoints: list[str]) -> dict[str, float]:
    """Posts each endpoint once; raises on any error or empty answer. Returns seconds per "<executor> <endpoint>"."""
    from docarray import Document

    url = f"grpc://127.0.0.1:{group.ports[0]}"
    seconds, image_doc = {}, None
    for endpoint in endpoints:
        if endpoint == "/":
            parameters = {"num_images": 1, "seed": 1}
            if group.name == "glid3":
                parameters["steps"] = GLID3_STEPS
            result, took = _post(url, "/", Document(text=PROMPT), parameters)
            matches = result[0].matches
            if len(matches) < 1 or not matches[0].uri:
                raise SystemExit(f"group {group.name}: / returned no image")
            image_doc = Document(uri=matches[0].uri, text=PROMPT)
            seconds["dalle /" if group.name == "dalle" else "diffusion /"] = took
        elif endpoint == "/diffuse":
            result, took = _post(url, "/diffuse", image_doc,
                                 {"num_images": 1, "skip_rate": 0.5, "steps": 2 * GLID3_STEPS, "seed": 1})
            if not result[0].matches:
                raise SystemExit(f"group {group.name}: /diffuse returned no image")
            seconds["diffusion /diffuse"] = took
        else:
            doc = Document(uri=image_doc.uri, text="the robot" if endpoint == "/segment" else PROMPT)
            result, took = _post(url, endpoint, doc, {})
            if not result[0].uri or result[0].uri == image_doc.uri:
                raise SystemExit(f"group {group.name}: {endpoint} returned no new image")
            seconds[f"{ENDPOINT_EXECUTOR[endpoint]} {endpoint}"] = took
        print(f"  {endpoint}: {took:.1f} s", flush=True)
    return seconds


# -------------------------------------------------------------------------------------------------------- main

def _file_sizes(weights_dir: Path) -> dict[str, int]:
    by_group = {}
    for entry in weights.REGISTRY:
        size = (weights_dir / entry.group / entry.filename).stat().st_size
        by_group[entry.group] = by_group.get(entry.group, 0) + size
    return {"dalle": by_group["dalle"] + by_group["vqgan"], "rerank": by_group["clip"],
            "diffusion": by_group["glid3"], "upscaler": by_group["swinir"],
            "clipseg": by_group["clipseg"]}


def _size(n: float, unit: str = "B") -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {suffix}{unit}" if suffix == "G" else f"{n / scale:.0f} {suffix}{unit}"
    return f"{n:.0f} {unit}"


def print_table(rows: list[dict]):
    header = ["group", "executor", "parameters", "file size", "ready after", "peak RSS", "request"]
    table = [header] + [[r["group"], r["executor"], _size(r["params"], ""), _size(r["bytes"]), f"{r['ready_s']:.0f} s",
                         f"{r['peak_gib']:.2f} GiB", r["request"]] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in table]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print("\n".join(lines), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configs: the same steps in seconds")
    parser.add_argument("--scratch", help="folder for the written files (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the written files")
    args = parser.parse_args(argv)
    mode = "tiny" if args.tiny else "real"
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="dalle-flow-real-size-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for variable in (weights.ENV_WEIGHTS_DIR, weights.ENV_MANIFEST, weights.ENV_MIRROR, "HF_ENDPOINT"):
        env.pop(variable, None)
    started, rows, totals = time.monotonic(), [], []
    try:
        params = write_all(scratch, scratch / "origin", args.tiny)
        weights_dir = scratch / "weights"
        download_s = download(scratch / "origin", weights_dir, scratch / "sizes.json", env)
        print(f"downloaded through the mirror in {download_s:.0f} s", flush=True)
        shutil.rmtree(scratch / "origin")  # halves the disk in use before the Flows start
        sizes = _file_sizes(weights_dir)
        for name, toggles, settings, endpoints in GROUPS[mode]:
            print(f"group {name}: starting ({', '.join(f'{k}={v}' for k, v in toggles.items())})", flush=True)
            group = Group(name, toggles, settings, weights_dir, scratch / "sizes.json", scratch / "workspace", env,
                          READY_TIMEOUT_S[mode])
            try:
                print(f"  ready after {group.ready_s:.0f} s", flush=True)
                seconds = run_requests(group, endpoints)
                peaks = group.peaks_gib()
            finally:
                group.close()
            totals.append((name, group.peak_total_kib / (1 << 20)))
            for executor, peak in sorted(peaks.items()):
                if executor in ("store", "gateway"):
                    continue
                timed = {k: v for k, v in seconds.items() if k.split()[0] == executor}
                rows.append({"group": name, "executor": executor, "params": params.get(executor, 0),
                             "bytes": sizes.get(executor, 0), "ready_s": group.ready_at.get(executor, group.ready_s),
                             "peak_gib": peak,
                             "request": ", ".join(f"`{k.partition(' ')[2]}` {v:.0f} s"
                                                  for k, v in timed.items()) or "—"})
        print_table(rows)
        for name, peak in totals:
            print(f"group {name}: peak RSS of the whole Flow {peak:.2f} GiB")
        print(f"total {time.monotonic() - started:.0f} s ({mode})")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
