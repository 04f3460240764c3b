"""GLID-3 XL at the released model's size (random weights): seconds per image and peak memory, text -> image (`/`)
and refinement (`/diffuse`, skip_rate 0.5), as the `diffusion` executor runs them.

    python benchmarks/glid3_bench.py            # 100 steps (the executor's default); CPU batch 1 and 4, GPU 1 and 8
    python benchmarks/glid3_bench.py --quick    # 8 steps, one image per row, CPU: a few minutes

The models are built in memory with the real architectures (UNet of finetune.pt: 872 M parameters, no clip_proj like
the released file; KL-f8 autoencoder; the 32-layer 1280-wide BERT of bert.pt) and random weights: nothing in the
computation depends on the values, so they time like the released files. The BERT tokenizer is the tiny preset's
WordPiece vocab (only token ids differ). On a GPU the UNet runs in float16 and float32 (the executor's `dtype: auto`);
BERT and the VAE stay float32 as in the executor.

Each row runs in its own child process. "peak extra" is the peak resident memory during the timed call minus the
resident memory once the models are built (the kernel's peak counter is reset before the call), or on a GPU
torch.cuda.max_memory_allocated minus the allocated weights. GPU rows get one untimed warm-up call.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SKIP_RATE = 0.5


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    try:  # Linux >= 4.0: writing 5 resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def build_pipeline(device, unet_dtype):
    import torch

    from dalle_flow.models.glid3.bert import BertEmbedder
    from dalle_flow.models.glid3.config import FINETUNE_CONFIG, BertConfig, KLConfig
    from dalle_flow.models.glid3.kl_vae import AutoencoderKL
    from dalle_flow.models.glid3.loader import build_unet
    from dalle_flow.models.glid3.tokenizer import make_tokenizer, tiny_vocab
    from dalle_flow.pipelines.glid3 import Glid3Pipeline

    torch.manual_seed(0)
    unet = build_unet(FINETUNE_CONFIG, device=device, dtype=unet_dtype)
    with torch.device(device):
        kl = AutoencoderKL(KLConfig()).eval().requires_grad_(False)
        bert = BertEmbedder(BertConfig(), make_tokenizer(tiny_vocab())).eval().requires_grad_(False)
    sizes = {name: sum(p.numel() for p in m.parameters()) for name, m in (("unet", unet), ("kl", kl), ("bert", bert))}
    weight_bytes = sum(p.numel() * p.element_size() for m in (unet, kl, bert) for p in m.parameters())
    return Glid3Pipeline(unet, kl, bert, device), sizes, weight_bytes


def child(args) -> dict:
    import numpy as np
    import torch

    from dalle_flow.runtime.device import DTYPES

    device = torch.device(args.device)
    pipe, sizes, weight_bytes = build_pipeline(device, DTYPES[args.dtype])
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)

    def run(n: int, steps: int, skip_rate: float):
        common = dict(prompt="an oil painting of a humanoid robot playing chess in the style of Matisse",
                      num_images=n, seed=0, steps=steps, batch_size=n)
        if args.mode == "text":
            return pipe.generate(**common)
        return pipe.refine(image, skip_rate=skip_rate, **common)

    cuda = device.type == "cuda"
    if cuda:
        run(1, 4, 0.0)  # kernels, cuDNN autotuning, allocator
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_kib("VmRSS") * 1024
        reset = _reset_peak_rss()
    start = time.perf_counter()
    out = run(args.batch, args.steps, SKIP_RATE)
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = (_rss_kib("VmHWM") * 1024 - base) if reset else float("nan")
    assert out.shape == (args.batch, 256, 256, 3)
    return {"seconds_per_image": elapsed / args.batch, "peak_extra_mib": peak / 2**20,
            "weights_mib": weight_bytes / 2**20, "params": sizes, "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 steps, batch 1, so a CPU run takes a few minutes")
    parser.add_argument("--steps", type=int, help="sampling steps (default 100, or 8 with --quick)")
    parser.add_argument("--batch", type=int, action="append", help="images per call (repeatable)")
    parser.add_argument("--device", action="append", help="cpu and/or cuda (default: cpu, plus cuda if available)")
    parser.add_argument("--mode", action="append", choices=("text", "diffuse"), help="default: both")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.steps = args.steps or (8 if args.quick else 100)

    if args.child:
        args.device, args.mode, args.batch = args.device[0], args.mode[0], args.batch[0]
        print(json.dumps(child(args)))
        return 0

    import torch

    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    rows = []
    for device in devices:
        dtypes = ["float16", "float32"] if device == "cuda" else ["float32"]
        default_batches = [1] if args.quick else ([1, 8] if device == "cuda" else [1, 4])
        for dtype in dtypes:
            for batch in args.batch or default_batches:
                for mode in args.mode or ["text", "diffuse"]:
                    rows.append((device, dtype, batch, mode))

    skipped = int(args.steps * SKIP_RATE)
    print(f"GLID-3 XL full size, random weights, 256x256, {args.steps} steps (diffuse: skip_rate {SKIP_RATE}, "
          f"{args.steps - skipped} steps run), guidance on (2 UNet rows per image)")
    header = (f"{'device':<6} {'UNet dtype':<10} {'mode':<8} {'batch':>5} {'s / image':>10} {'peak extra MiB':>15} "
              f"{'weights MiB':>12} {'threads':>7}")
    print(header)
    print("-" * len(header))
    failures, params = 0, None
    for device, dtype, batch, mode in rows:
        command = [sys.executable, __file__, "--child", "--device", device, "--dtype", dtype, "--mode", mode,
                   "--batch", str(batch), "--steps", str(args.steps)]
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        if done.returncode != 0:
            failures += 1
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{device:<6} {dtype:<10} {mode:<8} {batch:>5} failed: {last}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        params = r["params"]
        print(f"{device:<6} {dtype:<10} {mode:<8} {batch:>5} {r['seconds_per_image']:>10.2f} "
              f"{r['peak_extra_mib']:>15.0f} {r['weights_mib']:>12.0f} {r['threads']:>7}", flush=True)
    if params:
        print("parameters: " + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in params.items()))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
