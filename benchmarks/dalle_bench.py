"""DalleBart benchmarks on the CPU: decoding speed against min-dalle, and host memory while loading a checkpoint.

    python benchmarks/dalle_bench.py            # mid-size decoders, 256 steps; full-size (DALL·E Mega) fp16 file
    python benchmarks/dalle_bench.py --quick    # 64 steps; a ~0.8 GB synthetic file instead of the 5.2 GB one
    python benchmarks/dalle_bench.py --compiled-step   # only: our loop eager vs its step under torch.compile

1. Decoding: our decoder and min-dalle's `DalleBartDecoder` (kuprel/min-dalle, the PyPI release 0.4.11) built with the
   same mid-size dims and the SAME random weights (copied from ours; the first step's logits are checked to agree),
   each sampling image tokens with super-conditioning (conditional + unconditional rows in one batch, top-k 50) from
   the same random encoder output. Encoders are not timed. Reports image tokens per second at batch 4 and 16, the
   best of --repeats runs, ours and min-dalle's runs interleaved so that both see the same load on a shared machine.
   min-dalle is a benchmark-only dependency, not in requirements:  pip install --no-deps min-dalle==0.4.11
2. Loading: a synthetic float16 checkpoint with every tensor of the full-size model is written to /tmp with our own
   Flax msgpack writer, loaded by `load_dallebart(dtype=float16)` in a fresh process, and that process's peak
   resident memory (VmHWM) is compared to the file size. The file is deleted afterwards.

Run with OMP_NUM_THREADS=1 for comparable numbers on a shared machine (the table prints the thread count).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dalle_flow.runtime.flax_msgpack_writer import write_flax_msgpack  # noqa: E402
from dalle_flow.models.dallebart.config import DalleBartConfig  # noqa: E402
from dalle_flow.models.dallebart.loader import build_empty, flax_shapes, randomize_  # noqa: E402
from dalle_flow.models.dallebart.model import DalleBart  # noqa: E402
from dalle_flow.models.dallebart.decode_loop import TokenLoop  # noqa: E402
from dalle_flow.models.dallebart.sampling import SamplingSettings  # noqa: E402

MEGA = dict(d_model=2048, encoder_layers=24, decoder_layers=24, encoder_attention_heads=32, decoder_attention_heads=32,
            encoder_ffn_dim=4096, decoder_ffn_dim=4096, encoder_vocab_size=50272)
QUICK_FILE = dict(d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                  decoder_attention_heads=16, encoder_ffn_dim=2048, decoder_ffn_dim=2048, encoder_vocab_size=50272)
# mid-size decoder for the speed comparison: a quarter of mega's width, half its depth, its proportions (GLU = 2 x
# d_model, head dim 64) and its vocabularies (64 text positions, 16416 image logits)
MID = dict(d_model=512, encoder_layers=1, decoder_layers=12, encoder_attention_heads=8, decoder_attention_heads=8,
           encoder_ffn_dim=1024, decoder_ffn_dim=1024, encoder_vocab_size=1000)
TEXT_LENGTH, TOP_K = 64, 50


def mega_like(dims: dict) -> DalleBartConfig:
    return DalleBartConfig(**dims, image_vocab_size=16415, max_text_length=TEXT_LENGTH, image_length=256,
                           decoder_start_token_id=16384, bos_token_id=16385, eos_token_id=16385, pad_token_id=16385)


# ---------------------------------------------------------------------------------------------------- decoding speed
def min_dalle_decoder(model: DalleBart):
    """min-dalle's decoder with our weights (its bias-free-in-the-file layer norms get scale 1, like ours)."""
    threads = torch.get_num_threads()
    from min_dalle.models.dalle_bart_decoder import DalleBartDecoder

    torch.set_num_threads(threads)  # importing min_dalle calls torch.set_num_threads(os.cpu_count()): undo it
    cfg = model.config
    theirs = DalleBartDecoder(image_vocab_count=cfg.image_vocab_size, embed_count=cfg.d_model,
                              attention_head_count=cfg.decoder_attention_heads, glu_embed_count=cfg.decoder_ffn_dim,
                              layer_count=cfg.decoder_layers, device="cpu").eval()
    ours = model.decoder

    def norm(dst, src):
        dst.weight.copy_(src.weight if src.weight is not None else torch.ones_like(src.bias))
        dst.bias.copy_(src.bias)

    with torch.no_grad():
        theirs.embed_tokens.weight.copy_(ours.embed_tokens.weight)
        theirs.embed_positions.weight.copy_(ours.embed_positions.weight)
        norm(theirs.layernorm_embedding, ours.layernorm_embedding)
        norm(theirs.final_ln, ours.final_ln)
        theirs.lm_head.weight.copy_(model.lm_head.kernel.T)
        for t, o in zip(theirs.layers, ours.layers):
            for t_norm, o_norm in ((t.pre_self_attn_layer_norm, o.pre_self_attn_ln),
                                   (t.self_attn_layer_norm, o.self_attn_ln),
                                   (t.pre_encoder_attn_layer_norm, o.pre_cross_attn_ln),
                                   (t.encoder_attn_layer_norm, o.cross_attn_ln), (t.glu.ln0, o.glu.ln_in),
                                   (t.glu.ln1, o.glu.ln_mid)):
                norm(t_norm, o_norm)
            for t_attn, o_attn in ((t.self_attn, o.self_attn), (t.encoder_attn, o.cross_attn)):
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    getattr(t_attn, proj).weight.copy_(getattr(o_attn, proj).kernel.T)
            for t_fc, o_fc in ((t.glu.fc0, o.glu.fc_gelu), (t.glu.fc1, o.glu.fc_gate), (t.glu.fc2, o.glu.fc_out)):
                t_fc.weight.copy_(o_fc.kernel.T)
    return theirs


def _min_dalle_inputs(decoder, encoder_state, text_mask, images: int):
    length = decoder.embed_positions.weight.shape[0]
    state = encoder_state[[0] * images + [1] * images]  # its order: unconditional rows first
    mask = text_mask[[0] * images + [1] * images][:, None, None, :].bool()
    attention_state = torch.zeros(decoder.layer_count, images * 4, length, decoder.embed_count)
    tokens = torch.full((images, length + 1), 2 ** 14 - 1, dtype=torch.long)
    # min-dalle starts from id 16383 (a real code); feed the checkpoint's decoder start id 16384 like ours, so both
    # decoders compute the same thing
    tokens[:, 0] = 2 ** 14
    return state, mask, attention_state, tokens, torch.arange(length)


@torch.no_grad()
def run_min_dalle(decoder, encoder_state, text_mask, images: int, steps: int, cond_scale: float, seed: int):
    """min-dalle's own generation loop (min_dalle.py generate_raw_image_stream), decoder part only."""
    state, mask, attention_state, tokens, token_indices = _min_dalle_inputs(decoder, encoder_state, text_mask, images)
    torch.manual_seed(seed)
    settings = torch.tensor([1.0, TOP_K, cond_scale], dtype=torch.float32)
    for i in range(steps):
        tokens[:, i + 1], attention_state = decoder.sample_tokens(
            settings=settings, attention_mask=mask, encoder_state=state, attention_state=attention_state,
            prev_tokens=tokens[:, [i]], token_index=token_indices[[i]])
    return tokens[:, 1:]


@torch.no_grad()
def first_step_logits_min_dalle(decoder, encoder_state, text_mask, images: int):
    state, mask, attention_state, tokens, token_indices = _min_dalle_inputs(decoder, encoder_state, text_mask, images)
    logits, _ = decoder.forward(attention_mask=mask, encoder_state=state, attention_state=attention_state,
                                prev_tokens=tokens[:, [0]], token_index=token_indices[[0]])
    return logits[:, -1]


def ours_loop(model: DalleBart, encoder_state, text_mask, images: int, steps: int, cond_scale: float) -> TokenLoop:
    hidden = encoder_state[[1, 0]]  # our order: conditional prompt first
    cache = model.init_cache(hidden, text_mask[[1, 0]], 2 * images)
    settings = SamplingSettings(cond_scale=cond_scale, top_k=TOP_K, top_p=0.9, temperature=1.0)
    return TokenLoop(model, cache, images, images, True, settings, model.config.image_codebook_size, steps)


@torch.no_grad()
def run_ours(model: DalleBart, encoder_state, text_mask, images: int, steps: int, cond_scale: float, seed: int):
    return ours_loop(model, encoder_state, text_mask, images, steps, cond_scale).run(torch.Generator().manual_seed(seed))


def first_step_logits_ours(model: DalleBart, encoder_state, text_mask, images: int):
    with torch.no_grad():
        cache = model.init_cache(encoder_state[[1, 0]], text_mask[[1, 0]], 2 * images)
        start = torch.full((2 * images,), model.config.decoder_start_token_id, dtype=torch.long)
        return model.step_logits(start, torch.tensor(0), cache)


def products_floor_seconds(model: DalleBart, images: int, repeats: int) -> float:
    """The best time of the matrix products one decode step must do (every decoder kernel but the cross-attention
    keys/values, computed once per prompt, and the codebook's logits) for 2 x `images` rows, and nothing else: what
    the weights alone cost to stream through the CPU. A step cannot be faster than this in float32."""
    kernels = [p for name, p in model.decoder.named_parameters() if name.endswith(".kernel")
               and not any(f".cross_attn.{part}_proj." in name for part in ("k", "v"))]
    kernels.append(model.lm_head.kernel[:, :model.config.image_codebook_size])
    inputs = {k.shape[0]: torch.randn(2 * images, k.shape[0]) for k in kernels}
    best = float("inf")
    for _ in range(repeats + 2):
        start = time.perf_counter()
        for kernel in kernels:
            inputs[kernel.shape[0]] @ kernel
        best = min(best, time.perf_counter() - start)
    return best


def decoding_inputs(config: DalleBartConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A random encoder output and its text mask, min-dalle's order: row 0 unconditional, row 1 the text."""
    g = torch.Generator().manual_seed(1)
    encoder_state = torch.randn(2, TEXT_LENGTH, config.d_model, generator=g)
    text_mask = torch.zeros(2, TEXT_LENGTH, dtype=torch.long)
    text_mask[0, :2] = 1
    text_mask[1, :20] = 1
    return encoder_state, text_mask


def bench_decoding(steps: int, batches: list[int], repeats: int, dims: dict) -> list[dict]:
    config = mega_like(dims)
    model = randomize_(DalleBart(config), seed=0).eval()
    theirs = min_dalle_decoder(model)
    encoder_state, text_mask = decoding_inputs(config)
    rows = []
    for images in batches:
        # same weights, same inputs: the first step's logits must agree (theirs: uncond rows first)
        ours_first = first_step_logits_ours(model, encoder_state, text_mask, images)
        theirs_first = first_step_logits_min_dalle(theirs, encoder_state, text_mask, images)
        agree = (ours_first - torch.cat([theirs_first[images:], theirs_first[:images]])).abs().max().item()
        runners = (("ours", run_ours, model), ("min-dalle", run_min_dalle, theirs))
        for _, fn, target in runners:
            fn(target, encoder_state, text_mask, images, 2, 10.0, 0)  # warm-up: first-call kernel set-up
        wall = {name: float("inf") for name, _, _ in runners}
        cpu = dict(wall)
        # interleaved (ours, theirs, ours, theirs, ...): on a shared machine both see the same load
        for r in range(repeats):
            for name, fn, target in runners:
                start_wall, start_cpu = time.perf_counter(), time.thread_time()
                fn(target, encoder_state, text_mask, images, steps, 10.0, r)
                cpu[name] = min(cpu[name], time.thread_time() - start_cpu)
                wall[name] = min(wall[name], time.perf_counter() - start_wall)
        rate = {name: images * steps / seconds for name, seconds in wall.items()}
        cpu_rate = {name: images * steps / seconds for name, seconds in cpu.items()}
        rows.append(dict(batch=images, ours=rate["ours"], min_dalle=rate["min-dalle"],
                         speedup=rate["ours"] / rate["min-dalle"], ours_cpu=cpu_rate["ours"],
                         min_dalle_cpu=cpu_rate["min-dalle"], speedup_cpu=cpu_rate["ours"] / cpu_rate["min-dalle"],
                         first_step_max_diff=agree,
                         floor=images / products_floor_seconds(model, images, repeats)))
    return rows


def bench_compiled_step(steps: int, images: int, repeats: int, dims: dict) -> list[dict]:
    """Our decode loop eager, and with its step compiled by `torch.compile` (Inductor): the static-shape step (whole
    cache, later slots masked: what a GPU captures) and the eager step with the attended length dynamic. Same tokens
    are checked; compile time is the first run's."""
    model = randomize_(DalleBart(mega_like(dims)), seed=0).eval()
    inputs = decoding_inputs(model.config)
    rows, reference = [], None
    for name, compiled, static in (("eager", False, False), ("compiled, static shapes", True, True),
                                   ("compiled, dynamic length", True, False)):
        loop = ours_loop(model, *inputs, images, steps, 10.0)
        if static:  # `run` passes the attended length; the static step attends the whole cache instead
            static_step = torch.compile(loop.step)
            loop.step = lambda length: static_step()
        elif compiled:
            loop.step = torch.compile(loop.step, dynamic=True)
        timings = []
        for _ in range(repeats + 1):  # the first run includes compiling
            start = time.perf_counter()
            codes = loop.run(torch.Generator().manual_seed(0)).clone()
            timings.append(time.perf_counter() - start)
        reference = codes if reference is None else reference
        rows.append(dict(name=name, tokens_per_s=images * steps / min(timings[1:]), first_run_s=timings[0],
                         same_tokens=bool(torch.equal(codes, reference))))
    return rows


# ----------------------------------------------------------------------------------------------------- load memory
def write_synthetic(config: DalleBartConfig, folder: Path) -> Path:
    """Every tensor of the model's file layout, float16, random values in [0.125, 1), written one tensor at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    model = build_empty(config, "meta", torch.float16)
    rng = np.random.default_rng(0)

    def producer(shape):
        return lambda: rng.integers(0x3000, 0x3C00, size=shape, dtype=np.uint16).view(np.float16)

    items = [(tuple(key.split("/")), producer(shape)) for key, shape in flax_shapes(model).items()]
    write_flax_msgpack(folder / "flax_model.msgpack", items)
    with open(folder / "config.json", "w") as f:
        json.dump(config.to_dict(), f)
    return folder / "flax_model.msgpack"


def _vm(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def load_child(folder: str):
    """Runs in a fresh process: load, then report peak and baseline resident memory as JSON."""
    from dalle_flow.models.dallebart.loader import load_dallebart

    baseline = _vm("VmRSS")
    start = time.perf_counter()
    model = load_dallebart(folder, device="cpu", dtype=torch.float16)
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps(dict(baseline=baseline, peak=_vm("VmHWM"), after=_vm("VmRSS"), seconds=seconds, params=params)))


def bench_loading(quick: bool) -> dict:
    config = mega_like(QUICK_FILE if quick else MEGA)
    need = sum(np.prod(s) for s in flax_shapes(build_empty(config, "meta", torch.float16)).values()) * 2
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    if available < 1.6 * need:
        return dict(skipped=f"needs ~{1.6 * need / 2**30:.1f} GiB free, {available / 2**30:.1f} GiB available")
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="dallebart_bench_") as tmp:
        start = time.perf_counter()
        path = write_synthetic(config, Path(tmp))
        write_seconds = time.perf_counter() - start
        size = path.stat().st_size
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        out = subprocess.run([sys.executable, __file__, "--load-child", tmp], capture_output=True, text=True, env=env,
                             check=True)
        child = json.loads(out.stdout.strip().splitlines()[-1])
    child.update(file_size=size, write_seconds=write_seconds, label="full-size (mega)" if not quick else "quick")
    return child


# ----------------------------------------------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 decoding steps and a ~0.8 GB synthetic file")
    parser.add_argument("--steps", type=int, default=None, help="decoding steps (default 256, quick 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting (the best is reported)")
    parser.add_argument("--d-model", type=int, default=MID["d_model"], help="decoder width (head dim stays 64)")
    parser.add_argument("--layers", type=int, default=MID["decoder_layers"], help="decoder layers")
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--compiled-step", action="store_true",
                        help="only: our loop at batch 4, eager vs its step under torch.compile (needs a C++ compiler)")
    parser.add_argument("--load-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_child:
        return load_child(args.load_child)
    if args.compiled_step:
        torch.set_grad_enabled(False)
        steps = args.steps or (64 if args.quick else 256)
        print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}; our decode loop, batch 4, {steps} "
              f"steps, best of {args.repeats} after a first run (which includes compiling)")
        print(f"{'step':>26} | {'tok/s':>7} | {'first run s':>11} | same tokens as eager")
        for row in bench_compiled_step(steps, 4, args.repeats, MID):
            print(f"{row['name']:>26} | {row['tokens_per_s']:>7.1f} | {row['first_run_s']:>11.1f} | "
                  f"{row['same_tokens']}")
        return None
    if not args.skip_decode and importlib.util.find_spec("min_dalle") is None:  # find_spec: importing sets threads
        parser.error("the decoding comparison needs min-dalle (pip install --no-deps min-dalle==0.4.11), or pass "
                     "--skip-decode")
    torch.set_grad_enabled(False)
    steps = args.steps or (64 if args.quick else 256)
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    if not args.skip_decode:
        heads = max(1, args.d_model // 64)
        d = dict(MID, d_model=args.d_model, decoder_layers=args.layers, encoder_attention_heads=heads,
                 decoder_attention_heads=heads, encoder_ffn_dim=2 * args.d_model, decoder_ffn_dim=2 * args.d_model)
        print(f"\nDecoding, super-conditioned, top-k {TOP_K}: d_model {d['d_model']}, {d['decoder_layers']} decoder "
              f"layers, {d['decoder_attention_heads']} heads, GLU {d['decoder_ffn_dim']}, text length {TEXT_LENGTH}, "
              f"16416 logits, {steps} steps, float32")
        print(f"best of {args.repeats} interleaved runs each; wall clock, and the thread's CPU time (less sensitive to "
              "other jobs taking the cores)")
        print("products-only bound: tokens/s if a step did nothing but its matrix products (the weights streamed "
              "once per step)")
        print(f"{'batch':>5} | {'ours tok/s':>10} | {'min-dalle tok/s':>15} | {'speedup':>7} | {'CPU-time speedup':>16} | "
              f"{'products-only bound':>19} | first-step logits max diff")
        for row in bench_decoding(steps, [4, 16], args.repeats, d):
            cpu = f"{row['ours_cpu']:.1f} vs {row['min_dalle_cpu']:.1f} = {row['speedup_cpu']:.2f}x"
            bound = f"{row['floor']:.1f} ({row['floor'] / row['min_dalle']:.2f}x)"
            print(f"{row['batch']:>5} | {row['ours']:>10.1f} | {row['min_dalle']:>15.1f} | {row['speedup']:>6.2f}x | "
                  f"{cpu:>16} | {bound:>19} | {row['first_step_max_diff']:.2e}")
    if not args.skip_load:
        result = bench_loading(args.quick)
        print("\nLoading a synthetic float16 checkpoint into a float16 CPU model (fresh process)")
        if "skipped" in result:
            print(f"skipped: {result['skipped']}")
        else:
            gib = 2 ** 30
            print(f"{'file':>18} | {'params':>13} | {'file GiB':>8} | {'peak RSS GiB':>12} | {'peak/file':>9} | "
                  f"{'(peak-base)/file':>16} | {'load s':>6}")
            print(f"{result['label']:>18} | {result['params']:>13,} | {result['file_size'] / gib:>8.2f} | "
                  f"{result['peak'] / gib:>12.2f} | {result['peak'] / result['file_size']:>9.3f} | "
                  f"{(result['peak'] - result['baseline']) / result['file_size']:>16.3f} | {result['seconds']:>6.1f}")


if __name__ == "__main__":
    main()
