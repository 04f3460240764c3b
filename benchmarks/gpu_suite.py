"""One command for a GPU: speed, memory and fp16-vs-fp32 precision of every model of the Flow at the real size.

    python benchmarks/gpu_suite.py --out results.json          # CUDA, real sizes, random weights (no downloads)
    python benchmarks/gpu_suite.py --out results.json --tiny   # the same code paths, tiny models, CPU, seconds

Models are built straight on the device with the released architectures (configs from
tests/fixtures/parity/*/manifest_full.json and the model packages: DALL·E Mega + VQGAN f16/16384, GLID-3 XL UNet +
KL-f8 + LDM BERT, SwinIR-L x4, CLIP ViT-L/14@336px, CLIPSeg rd64-refined) and the modules' own random
initialisation: nothing measured depends on trained values. Each request runs through the same function the
executor calls (generate_tokens + VQGAN decode, Glid3Pipeline.generate/refine, pipelines.swinir.upscale,
ClipEmbedder + rank_scores, pipelines.clipseg.segment). Tokenizers are the tiny presets' (only token ids differ).

Rows: DALL·E Mega fp16, 9 and 16 images (super-conditioned, 256 tokens; decode loop eager and CUDA-graph replayed,
then VQGAN); GLID-3 XL 1 and 8 images at 100 PLMS steps in fp16 and fp32, /diffuse at skip_rate 0.5; SwinIR-L x4
256² -> 1024² fp16 and fp32; CLIP ranking 16 candidates; CLIPSeg one mask. Each row: seconds (one warm-up call
first, except with --tiny, then the best of --repeats), a throughput, and peak GPU memory of that model (weights + activations, from
torch.cuda.max_memory_allocated). Then every model loaded together in its served dtype, one request each, as the
whole Flow would hold them in one process, plus the CUDA context. Precision: the same random weights and inputs in
fp16 and fp32, max abs and relative deviation (DALL·E: first-step logits and token agreement; GLID-3: final latent;
SwinIR: uint8 pixels; CLIP: embeddings; CLIPSeg: mask probabilities), and whether fp16 is within HALF_TOLERANCE.
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

MANIFESTS = ROOT / "tests" / "fixtures" / "parity"
PROMPT = "an oil painting of a humanoid robot playing chess in the style of Matisse"
DALLE_COUNTS = (9, 16)  # one batch each at the dalle executor's default batch_size (16)
GLID3_COUNTS, TINY_GLID3_COUNTS = (1, 8), (1, 2)  # tiny: the same code paths with fewer images
GLID3_STEPS, TINY_GLID3_STEPS = 100, 8  # tiny: skip_rate 0.5 leaves the 4 steps PLMS needs
SKIP_RATE = 0.5
RANK_CANDIDATES = 16
# fp16 counts as "within tolerance" of fp32 when it stays under these (else the reference's fp32 remains the default)
HALF_TOLERANCE = {"glid3_latent_rel": 1e-2, "swinir_uint8_max_abs": 2, "clip_cosine_min": 0.999,
                  "dalle_first_logits_rel": 1e-2, "clipseg_mask_max_abs": 1e-2}
MIB = 2 ** 20


# ------------------------------------------------------------------------------------------------------ helpers
class Device:
    """Timing and peak memory on one device (CPU rows get no memory figure)."""

    def __init__(self, device: torch.device, repeats: int, warmup: bool):
        self.device, self.repeats, self.warmup, self.cuda = device, repeats, warmup, device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset_peak(self):
        if self.cuda:
            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / MIB if self.cuda else None

    def allocated_mib(self) -> float | None:
        return torch.cuda.memory_allocated(self.device) / MIB if self.cuda else None

    def time(self, fn):
        """(best seconds of `repeats` calls after one warm-up call, last result)."""
        if self.warmup:
            fn()
        best = math.inf
        for _ in range(self.repeats):
            self.sync()
            start = time.perf_counter()
            result = fn()
            self.sync()
            best = min(best, time.perf_counter() - start)
        return best, result

    def free(self):
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def manifest_config(name: str) -> dict:
    return json.loads((MANIFESTS / name / "manifest_full.json").read_text())["config"]


def params_mib(*modules) -> float:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters()) / MIB


def deviation(half, full) -> dict:
    """max abs and relative (max abs / max |fp32|) deviation of fp16 results from fp32 ones."""
    half = torch.as_tensor(np.asarray(half, dtype=np.float64) if not torch.is_tensor(half) else half).double().cpu()
    full = torch.as_tensor(np.asarray(full, dtype=np.float64) if not torch.is_tensor(full) else full).double().cpu()
    finite = torch.isfinite(full) & torch.isfinite(half)
    diff = (half - full)[finite].abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    scale = float(full[finite].abs().max()) if diff.numel() else 0.0
    return {"max_abs": max_abs, "rel": max_abs / scale if scale else 0.0,
            "nonfinite_mismatch": int((torch.isfinite(full) != torch.isfinite(half)).sum())}


def half_copy(module):
    return copy.deepcopy(module).half()


# ----------------------------------------------------------------------------------------------------- builders
def build_dalle(tiny: bool, device):
    """(DalleBart fp32, VQGAN fp32, text ids, uncond ids)."""
    from dalle_flow.models.dallebart import DalleBart, DalleBartConfig, tiny_dallebart
    from dalle_flow.models.vqgan import VQGAN, VQGANConfig, tiny_vqgan

    torch.manual_seed(0)
    if tiny:
        vqgan = tiny_vqgan(device)
        model = tiny_dallebart(device, image_codebook_size=vqgan.config.n_embed)
    else:
        with torch.device(device):
            model = DalleBart(DalleBartConfig.from_dict(manifest_config("dallebart"))).eval().requires_grad_(False)
            vqgan = VQGAN(VQGANConfig.from_dict(manifest_config("vqgan"))).eval().requires_grad_(False)
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    text = torch.ones(1, cfg.max_text_length, dtype=torch.long)  # <s> 20 tokens </s> <pad>..., as the processor pads
    text[0, 0], text[0, 21] = 0, 2
    text[0, 1:21] = torch.randint(4, cfg.encoder_vocab_size, (20,), generator=g)
    uncond = torch.ones(1, cfg.max_text_length, dtype=torch.long)
    uncond[0, :2] = torch.tensor([0, 2])
    return model, vqgan, text, uncond


def glid3_models(device, unet_dtype):
    """(UNet of finetune.pt, KL-f8, LDM BERT) at the real size; the VAE and BERT in float32, as the pipeline runs
    them."""
    from dalle_flow.models.glid3 import AutoencoderKL, BertConfig, BertEmbedder, KLConfig, UNetConfig
    from dalle_flow.models.glid3.loader import build_unet
    from dalle_flow.models.glid3.tokenizer import make_tokenizer, tiny_vocab

    torch.manual_seed(0)
    unet = build_unet(UNetConfig.from_reference(manifest_config("glid3")), device=device, dtype=unet_dtype)
    kl_raw = manifest_config("ldm/kl_vae")
    bert_raw = manifest_config("ldm/bert")
    with torch.device(device):
        kl = AutoencoderKL(KLConfig.from_reference(kl_raw["ddconfig"], kl_raw["embed_dim"]))
        bert = BertEmbedder(BertConfig(n_embed=bert_raw["n_embed"], n_layer=bert_raw["n_layer"],
                                       vocab_size=bert_raw["vocab_size"], max_seq_len=bert_raw["max_seq_len"]),
                            make_tokenizer(tiny_vocab()))
    return unet, kl.eval().requires_grad_(False), bert.eval().requires_grad_(False)


def build_glid3(tiny: bool, device, unet_dtype):
    from dalle_flow.pipelines.glid3 import Glid3Pipeline

    if tiny:
        torch.manual_seed(0)
        return Glid3Pipeline.tiny(device, unet_dtype)
    return Glid3Pipeline(*glid3_models(device, unet_dtype), device)


def build_swinir(tiny: bool, device):
    from dalle_flow.models.swinir import SwinIR, SwinIRConfig, tiny_swinir

    torch.manual_seed(0)
    if tiny:
        return tiny_swinir(device, torch.float32)
    with torch.device(device):
        model = SwinIR(SwinIRConfig.from_dict(manifest_config("swinir")))
        model.reset_parameters()
    return model.eval().requires_grad_(False)


def build_clip(tiny: bool, device):
    """ClipEmbedder fp32: ViT-L/14@336px (openai/clip-vit-large-patch14-336's config.json numbers)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from dalle_flow.models.clip import ClipEmbedder, tiny_clip
    from dalle_flow.models.clip.config import OPENAI_MEAN, OPENAI_STD
    from dalle_flow.runtime.tiny_tokenizer import tiny_clip_tokenizer

    if tiny:
        return tiny_clip(device)
    tokenizer = tiny_clip_tokenizer(77)
    text = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=336, patch_size=14)
    torch.manual_seed(0)
    with torch.device(device):
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=768))
    processor = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                   image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD))
    return ClipEmbedder(model, tokenizer, processor, torch.device(device), torch.float32, "ViT-L/14@336px (random)")


def build_clipseg(tiny: bool, device):
    """(model fp32, processor): CIDAS/clipseg-rd64-refined's config numbers (ViT-B/16 at 352 px, reduce_dim 64)."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor

    from dalle_flow.models.clipseg.loader import tiny_clipseg, tiny_image_processor
    from dalle_flow.runtime.tiny_tokenizer import tiny_clip_tokenizer

    if tiny:
        return tiny_clipseg(device, torch.float32)
    tokenizer = tiny_clip_tokenizer(max_length=77)
    text = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                num_attention_heads=8, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=224, patch_size=16)
    config = CLIPSegConfig(text_config=text, vision_config=vision, projection_dim=512, extract_layers=[3, 6, 9],
                           reduce_dim=64, decoder_num_attention_heads=4, decoder_intermediate_size=2048,
                           conditional_layer=0, use_complex_transposed_convolution=True)
    torch.manual_seed(0)
    with torch.device(device):
        model = CLIPSegForImageSegmentation(config)
    processor = CLIPSegProcessor(image_processor=tiny_image_processor(352), tokenizer=tokenizer)
    return model.eval().requires_grad_(False), processor


def sample_served(model, text, uncond, n: int, seed: int, codebook: int, capture: bool | None = None):
    """generate_tokens with the dalle executor's defaults (sampling settings and batch size)."""
    from dalle_flow.models.dallebart.sampling import generate_tokens
    from dalle_flow.pipelines.dalle_mega import BATCH_SIZE, DALLE_PARAMS

    settings = {name: DALLE_PARAMS.default(name) for name in ("cond_scale", "top_k", "top_p", "temperature")}
    return generate_tokens(model, text, uncond, n, seed, batch_size=BATCH_SIZE.default, codebook_size=codebook,
                           capture=capture, **settings)


# ----------------------------------------------------------------------------------------------------- sections
def dalle_section(tiny: bool, dev: Device, report: dict):
    from dalle_flow.models.vqgan import postprocess
    from dalle_flow.pipelines.dalle_mega import VQGAN_DECODE_BATCH

    dev.reset_peak()
    full, vqgan, text, uncond = build_dalle(tiny, dev.device)
    half = half_copy(full)
    served, served_dtype = (half, "fp16") if dev.cuda else (full, "fp32")  # the executor's dtype: auto
    codebook = vqgan.config.n_embed

    def tokens(model, n, seed=0, capture=False):
        return sample_served(model, text, uncond, n, seed, codebook, capture)

    def decode(codes):
        return np.concatenate([postprocess(vqgan.decode_code(codes[i:i + VQGAN_DECODE_BATCH]))
                               for i in range(0, len(codes), VQGAN_DECODE_BATCH)])

    with torch.inference_mode():
        # precision first, while both copies are held: first-step logits and tokens of the same seed
        from dalle_flow.models.dallebart.sampling import _encode_prompts

        mask_t, mask_u = (text != 1).long().to(dev.device), (uncond != 1).long().to(dev.device)
        logits = {}
        for name, model in (("fp32", full), ("fp16", half)):
            hidden, mask = _encode_prompts(model, text.to(dev.device), mask_t, uncond.to(dev.device), mask_u, True)
            cache = model.init_cache(hidden, mask, 2)
            start = torch.full((2,), model.config.decoder_start_token_id, dtype=torch.long, device=dev.device)
            logits[name] = model.step_logits(start, torch.zeros((), dtype=torch.long, device=dev.device),
                                             cache).float()
        t16, t32 = tokens(half, 9), tokens(full, 9)
        first = deviation(logits["fp16"], logits["fp32"])
        report["precision"]["dalle"] = dict(
            first_step_logits=first, first_token_agreement=float((t16[:, 0] == t32[:, 0]).float().mean()),
            token_agreement=float((t16 == t32).float().mean()),
            within_tolerance=first["rel"] <= HALF_TOLERANCE["dalle_first_logits_rel"])
        del cache
        if dev.cuda:
            del full
        dev.free()
        weights = params_mib(served) + params_mib(vqgan)
        steps = served.config.image_length
        peaks, graph_equal = [], []
        for n in DALLE_COUNTS:
            codes = {}
            for capture in (False, True) if dev.cuda else (False,):
                dev.reset_peak()
                seconds, codes[capture] = dev.time(lambda: tokens(served, n, capture=capture))
                peaks.append(dev.peak_mib())
                report["rows"].append(dict(model="DALL·E Mega", setting=f"{n} images, decode loop "
                                           f"{'CUDA graph' if capture else 'eager'}", dtype=served_dtype,
                                           seconds=seconds, throughput=n * steps / seconds, unit="tokens/s",
                                           peak_mib=peaks[-1]))
            if True in codes:  # same seed, same tokens: the replayed graph computes the eager step
                graph_equal.append(bool(torch.equal(codes[True], codes[False])))
            dev.reset_peak()
            decode_seconds, images = dev.time(lambda: decode(codes[False]))
            peaks.append(dev.peak_mib())
            assert images.shape == (n, 256, 256, 3)
            report["rows"].append(dict(model="VQGAN f16", setting=f"decode {n} images", dtype="fp32",
                                       seconds=decode_seconds, throughput=n / decode_seconds, unit="images/s",
                                       peak_mib=peaks[-1]))
        report["precision"]["dalle"]["cuda_graph_tokens_equal_eager"] = all(graph_equal) if graph_equal else None
        report["memory"]["dalle"] = dict(weights_mib=weights, peak_mib=None if None in peaks else max(peaks))
    del half, served, vqgan
    dev.free()


def glid3_section(tiny: bool, dev: Device, report: dict):
    steps = TINY_GLID3_STEPS if tiny else GLID3_STEPS
    counts = TINY_GLID3_COUNTS if tiny else GLID3_COUNTS
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    latents: dict[str, torch.Tensor] = {}
    for name in ("fp16", "fp32"):
        pipe = build_glid3(tiny, dev.device, torch.float16 if name == "fp16" else torch.float32)
        dev.free()
        dev.reset_peak()  # not the fp32 UNet the fp16 one was cast from
        decode = pipe._decode
        captured = []

        def probe(batch, decode=decode, captured=captured):  # records the served path's final latent
            captured.append(batch.float().cpu())
            return decode(batch)

        pipe._decode = probe
        common = dict(prompt=PROMPT, seed=0, steps=steps)
        pipe.generate(num_images=1, **common)  # the precision probe's latent (seed 0, one image)
        latents[name] = captured[0]
        for n in counts:
            seconds, out = dev.time(lambda: pipe.generate(num_images=n, batch_size=n, **common))
            assert out.shape == (n, 256, 256, 3)
            report["rows"].append(dict(model="GLID-3 XL", setting=f"{n} image{'s' * (n > 1)}, {steps} PLMS steps",
                                       dtype=name,
                                       seconds=seconds, throughput=n / seconds, unit="images/s",
                                       peak_mib=dev.peak_mib()))
        n = counts[-1]
        seconds, _ = dev.time(lambda: pipe.refine(image, num_images=n, batch_size=n, skip_rate=SKIP_RATE, **common))
        report["rows"].append(dict(model="GLID-3 XL", setting=f"/diffuse {n} images, skip_rate {SKIP_RATE}",
                                   dtype=name, seconds=seconds, throughput=n / seconds, unit="images/s",
                                   peak_mib=dev.peak_mib()))
        report["memory"][f"glid3_{name}"] = dict(weights_mib=params_mib(pipe.unet, pipe.kl_vae, pipe.bert),
                                                 peak_mib=dev.peak_mib())
        del pipe
        dev.free()
    latent = deviation(latents["fp16"], latents["fp32"])
    report["precision"]["glid3"] = dict(final_latent=latent,
                                        within_tolerance=latent["rel"] <= HALF_TOLERANCE["glid3_latent_rel"])


def swinir_section(tiny: bool, dev: Device, report: dict):
    from dalle_flow.pipelines.swinir import upscale

    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    full = build_swinir(tiny, dev.device)
    outputs = {}
    for name in ("fp16", "fp32"):
        model = half_copy(full) if name == "fp16" else full
        dev.reset_peak()
        seconds, outputs[name] = dev.time(lambda: upscale(model, image))
        assert outputs[name].shape == (1024, 1024, 3)
        report["rows"].append(dict(model="SwinIR-L x4", setting="256² -> 1024²", dtype=name, seconds=seconds,
                                   throughput=1 / seconds, unit="images/s", peak_mib=dev.peak_mib()))
        report["memory"][f"swinir_{name}"] = dict(weights_mib=params_mib(model), peak_mib=dev.peak_mib())
        del model
    diff = np.abs(outputs["fp16"].astype(np.int16) - outputs["fp32"].astype(np.int16))
    report["precision"]["swinir"] = dict(
        uint8_max_abs=int(diff.max()), uint8_mean_abs=float(diff.mean()),
        fraction_differing=float((diff > 0).mean()),
        within_tolerance=int(diff.max()) <= HALF_TOLERANCE["swinir_uint8_max_abs"])
    del full
    dev.free()


def clip_section(tiny: bool, dev: Device, report: dict):
    from dalle_flow.models.clip.rank import rank_scores

    images = list(np.random.default_rng(0).integers(0, 256, (RANK_CANDIDATES, 256, 256, 3), dtype=np.uint8))
    embeddings = {}
    for name in ("fp16", "fp32"):
        clip = build_clip(tiny, dev.device)
        if name == "fp16":
            clip.model.half()
            clip.dtype = torch.float16
        dev.reset_peak()

        def rank():
            query = clip.encode_text([PROMPT])[0]
            candidates = clip.encode_images(images)
            return query, candidates, rank_scores(query, candidates, clip.logit_scale)

        seconds, (query, candidates, _) = dev.time(rank)
        embeddings[name] = np.concatenate([query[None], candidates])
        report["rows"].append(dict(model="CLIP ViT-L/14@336px", setting=f"rank {RANK_CANDIDATES} candidates",
                                   dtype=name, seconds=seconds, throughput=RANK_CANDIDATES / seconds,
                                   unit="images/s", peak_mib=dev.peak_mib()))
        report["memory"][f"clip_{name}"] = dict(weights_mib=params_mib(clip.model), peak_mib=dev.peak_mib())
        del clip
        dev.free()
    a, b = embeddings["fp16"], embeddings["fp32"]
    cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    report["precision"]["clip"] = dict(embeddings=deviation(a, b), cosine_min=float(cosine.min()),
                                       within_tolerance=float(cosine.min()) >= HALF_TOLERANCE["clip_cosine_min"])


def clipseg_section(tiny: bool, dev: Device, report: dict):
    from dalle_flow.pipelines.clipseg import segment

    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    full, processor = build_clipseg(tiny, dev.device)
    masks = {}
    for name in ("fp16", "fp32"):
        model = half_copy(full) if name == "fp16" else full
        dev.reset_peak()
        seconds, masks[name] = dev.time(lambda: segment(model, processor, image, "the robot"))
        report["rows"].append(dict(model="CLIPSeg rd64-refined", setting="one mask", dtype=name, seconds=seconds,
                                   throughput=1 / seconds, unit="masks/s", peak_mib=dev.peak_mib()))
        report["memory"][f"clipseg_{name}"] = dict(weights_mib=params_mib(model), peak_mib=dev.peak_mib())
        del model
    d = deviation(masks["fp16"], masks["fp32"])
    report["precision"]["clipseg"] = dict(mask=d, within_tolerance=d["max_abs"] <= HALF_TOLERANCE[
        "clipseg_mask_max_abs"])
    del full
    dev.free()


def together_section(tiny: bool, dev: Device, report: dict):
    """Every model in its served dtype (executors' `dtype: auto`) in one process, one request each: the whole Flow's
    weights and the largest activation peak on one device (one CLIP: the Flow holds one, in `rerank`)."""
    from dalle_flow.models.clip.rank import rank_scores
    from dalle_flow.pipelines.clipseg import segment
    from dalle_flow.pipelines.swinir import upscale

    from dalle_flow.pipelines.swinir import GPU_DEFAULT_DTYPE as SWINIR_GPU_DTYPE
    from dalle_flow.pipelines.glid3 import UNET_GPU_DEFAULT_DTYPE

    half = torch.float16 if dev.cuda else torch.float32
    unet_dtype, swinir_dtype = (UNET_GPU_DEFAULT_DTYPE, SWINIR_GPU_DTYPE) if dev.cuda else (torch.float32,) * 2
    dev.free()
    before = dev.allocated_mib()
    dalle, vqgan, text, uncond = build_dalle(tiny, dev.device)
    dalle = dalle.to(half)
    glid3 = build_glid3(tiny, dev.device, unet_dtype)
    swinir = build_swinir(tiny, dev.device).to(swinir_dtype)
    clip = build_clip(tiny, dev.device)
    clip.model.to(half)
    clip.dtype = half
    clipseg, processor = build_clipseg(tiny, dev.device)
    clipseg = clipseg.to(half)
    weights = {"dalle": params_mib(dalle, vqgan), "glid3": params_mib(glid3.unet, glid3.kl_vae, glid3.bert),
               "swinir": params_mib(swinir), "clip": params_mib(clip.model), "clipseg": params_mib(clipseg)}
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    steps = TINY_GLID3_STEPS if tiny else GLID3_STEPS
    dev.free()
    dev.reset_peak()  # building went through fp32 copies; the Flow holds only what is allocated now
    loaded = dev.allocated_mib()
    with torch.inference_mode():
        sample_served(dalle, text, uncond, 9, 0, vqgan.config.n_embed)
        n = (TINY_GLID3_COUNTS if tiny else GLID3_COUNTS)[-1]
        glid3.refine(image, PROMPT, num_images=n, seed=0, steps=steps, batch_size=n)
        rank_scores(clip.encode_text([PROMPT])[0], clip.encode_images([image] * RANK_CANDIDATES), clip.logit_scale)
        upscale(swinir, image)
        segment(clipseg, processor, image, "the robot")
    dev.sync()
    report["memory"]["all_together"] = dict(
        weights_mib=weights, weights_total_mib=sum(weights.values()),
        loaded_mib=None if before is None else loaded - before,
        peak_mib=None if before is None else dev.peak_mib() - before)
    del dalle, vqgan, glid3, swinir, clip, clipseg
    dev.free()


def cuda_context_mib(device: torch.device) -> float | None:
    """Device memory a process holds beyond PyTorch's allocations (CUDA context, cuBLAS/cuDNN handles)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    free, total = torch.cuda.mem_get_info(device)
    return (total - free - torch.cuda.memory_reserved(device)) / MIB


SECTIONS = {"dalle": dalle_section, "glid3": glid3_section, "swinir": swinir_section, "clip": clip_section,
            "clipseg": clipseg_section, "together": together_section}


# --------------------------------------------------------------------------------------------------------- main
def print_table(report: dict):
    header = f"{'model':<22} {'setting':<34} {'dtype':<5} {'seconds':>9} {'throughput':>18} {'peak MiB':>9}"
    print(header)
    print("-" * len(header))
    for r in report["rows"]:
        peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        print(f"{r['model']:<22} {r['setting']:<34} {r['dtype']:<5} {r['seconds']:>9.3f} "
              f"{r['throughput']:>9.1f} {r['unit']:<8} {peak:>9}")
    print("\nprecision, fp16 vs fp32 (same weights, same inputs):")
    for name, p in report["precision"].items():
        print(f"  {name:<8} {json.dumps(p)}")
    print("\nmemory (MiB):")
    for name, m in report["memory"].items():
        print(f"  {name:<14} {json.dumps(m)}")
    print(f"\nCUDA context per process: {report['cuda_context_mib']} MiB at start, "
          f"{report['cuda_context_mib_end']} MiB at the end; total {report['total_seconds']:.1f} s")
    for name, error in report["errors"].items():
        print(f"FAILED {name}: {error}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU: the code paths in seconds")
    parser.add_argument("--device", help="default: cuda (real sizes), cpu with --tiny")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per row after a warm-up (default "
                                                                  "2, 1 with --tiny)")
    parser.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: pass --tiny for the CPU run, or --device cpu for real sizes on the CPU (hours)")
    only = args.only.split(",") if args.only else list(SECTIONS)
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown sections {unknown}; known: {', '.join(SECTIONS)}")
    torch.set_grad_enabled(False)
    dev = Device(device, args.repeats or (1 if args.tiny else 2), warmup=not args.tiny)
    if dev.cuda:
        torch.empty(1, device=device)  # create the context before measuring it
    report = dict(device=torch.cuda.get_device_name(device) if dev.cuda else "cpu", tiny=args.tiny,
                  torch=torch.__version__, repeats=dev.repeats, half_tolerance=HALF_TOLERANCE,
                  cuda_context_mib=cuda_context_mib(device), rows=[], precision={}, memory={}, errors={})
    start = time.perf_counter()
    for name in only:
        section_start = time.perf_counter()
        try:
            SECTIONS[name](args.tiny, dev, report)
        except Exception as exc:  # one failing section must not cost the others' figures on a borrowed GPU
            traceback.print_exc()
            report["errors"][name] = f"{type(exc).__name__}: {exc}"
            dev.free()
        print(f"[{name}: {time.perf_counter() - section_start:.1f} s]", file=sys.stderr, flush=True)
        report["total_seconds"] = time.perf_counter() - start
        report["cuda_context_mib_end"] = cuda_context_mib(device)  # cuBLAS/cuDNN handles join the context lazily
        Path(args.out).write_text(json.dumps(report, indent=1))  # after every section: a cut-short run keeps them
    print_table(report)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
