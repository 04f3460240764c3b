"""SwinIR-L (real-SR x4, the released model's size, random weights): time and peak memory per image, tiled vs whole.

    python benchmarks/swinir_bench.py            # 256x256 -> 1024x1024, as DALL·E Flow's /upscale runs it
    python benchmarks/swinir_bench.py --quick    # 64x64 input, one repeat: a smoke run of the script itself

Each configuration runs in its own child process so that CPU peak memory (max RSS) belongs to that configuration
alone; "peak extra" is the max RSS during the runs minus the RSS once the model is built (or, on a GPU,
torch.cuda.max_memory_allocated minus the weights). GPU rows appear when CUDA is available. Random weights time the
same as trained ones: nothing in the forward pass depends on the values.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def child(args) -> dict:
    import numpy as np
    import torch

    from dalle_flow.runtime.device import DTYPES
    from dalle_flow.models.swinir import SwinIRConfig, build_swinir
    from dalle_flow.pipelines.swinir import upscale

    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    model = build_swinir(SwinIRConfig())
    model.reset_parameters()
    model = model.to(device=device, dtype=dtype).eval()
    images = np.random.default_rng(0).integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8)
    tile = args.tile or None

    upscale(model, images[:, :16, :16], tile=None)  # warm-up: kernels, allocator
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = upscale(model, images, tile=tile, tile_overlap=args.overlap)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"seconds_per_image": min(times) / args.batch, "peak_extra_mib": peak / 2**20,
            "output": list(out.shape), "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64x64 input, one repeat, small tiles")
    parser.add_argument("--size", type=int, help="input side (default 256, or 64 with --quick)")
    parser.add_argument("--tile", type=int, help="tile size of the tiled rows (default 128, or 32 with --quick)")
    parser.add_argument("--overlap", type=int, default=None, help="tile overlap (default 32, or 8 with --quick)")
    parser.add_argument("--repeats", type=int, help="timed runs per row, best kept (default 2 or 1 with --quick)")
    parser.add_argument("--batch", type=int, default=1, help="images per call (same size)")
    parser.add_argument("--device", action="append", help="cpu and/or cuda (default: cpu, plus cuda if available)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.size = args.size or (64 if args.quick else 256)
    args.overlap = args.overlap if args.overlap is not None else (8 if args.quick else 32)
    args.repeats = args.repeats or (1 if args.quick else 2)

    if args.child:
        args.device = args.device[0]
        print(json.dumps(child(args)))
        return 0

    import torch

    tile = args.tile or (32 if args.quick else 128)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    rows = []
    for device in devices:
        dtypes = ["float32"] + (["float16"] if device == "cuda" else [])
        for dtype in dtypes:
            for row_tile in (0, tile):
                rows.append((device, dtype, row_tile))

    print(f"SwinIR-L x4, random weights, input {args.size}x{args.size} (runs as {args.size // 8 * 8 + 8}² after "
          f"the pipeline's padding), batch {args.batch}, best of {args.repeats}")
    header = f"{'device':<6} {'dtype':<8} {'tiling':<16} {'s / image':>10} {'peak extra MiB':>15} {'threads':>7}"
    print(header)
    print("-" * len(header))
    failures = 0
    for device, dtype, row_tile in rows:
        command = [sys.executable, __file__, "--child", "--device", device, "--dtype", dtype, "--size", str(args.size),
                   "--tile", str(row_tile), "--overlap", str(args.overlap), "--repeats", str(args.repeats),
                   "--batch", str(args.batch)]
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        tiling = f"tile {row_tile}/{args.overlap}" if row_tile else "whole image"
        if done.returncode != 0:
            failures += 1
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{device:<6} {dtype:<8} {tiling:<16} failed: {last}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{device:<6} {dtype:<8} {tiling:<16} {r['seconds_per_image']:>10.2f} {r['peak_extra_mib']:>15.0f} "
              f"{r['threads']:>7}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
