"""CLIP text and image embeddings (transformers' CLIPModel), real checkpoint or tiny random preset."""
from __future__ import annotations

import numpy as np
import torch

from dalle_flow.runtime.device import pick_device, pick_dtype

DEFAULT_CLIP = "openai/clip-vit-large-patch14-336"  # ViT-L/14@336px, what DALL·E Flow ranked with
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TINY_SEED = 1234


class ClipEmbedder:
    def __init__(self, model, tokenizer, image_processor, device: torch.device, dtype: torch.dtype, name: str):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.device = device
        self.dtype = dtype
        self.name = name

    @classmethod
    def from_pretrained(cls, name_or_path: str = DEFAULT_CLIP, device: str | None = None, dtype: str | None = None,
                        local_files_only: bool = False):
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

        device_ = pick_device(device)
        kwargs = {"local_files_only": local_files_only}
        model = CLIPModel.from_pretrained(name_or_path, **kwargs)
        tokenizer = CLIPTokenizerFast.from_pretrained(name_or_path, **kwargs)
        processor = CLIPImageProcessor.from_pretrained(name_or_path, **kwargs)
        return cls(model, tokenizer, processor, device_, pick_dtype(device_, dtype), name_or_path)

    @classmethod
    def tiny(cls, device: str | None = "cpu"):
        """Random, deterministic, 32-dim embeddings of 32×32 crops: for tests and smoke demos only."""
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

        from dalle_flow.runtime.tiny_tokenizer import tiny_clip_tokenizer

        tokenizer = tiny_clip_tokenizer(77)
        text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      image_size=32, patch_size=8)
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            model = CLIPModel(config)
        processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                       image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD))
        device_ = pick_device(device)
        return cls(model, tokenizer, processor, device_, torch.float32, "tiny-clip")

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().item())

    @torch.inference_mode()
    def encode_text(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """(N, D) float32 projected text embeddings (not normalised, as CLIP-as-service returns them)."""
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[i:i + batch_size]), padding="max_length", truncation=True,
                                    max_length=self.model.config.text_config.max_position_embeddings,
                                    return_tensors="pt").to(self.device)
            features = self.model.get_text_features(input_ids=tokens["input_ids"],
                                                    attention_mask=tokens["attention_mask"])
            out.append(_features(features))
        return np.concatenate(out) if out else np.zeros((0, self.embedding_dim), np.float32)

    @torch.inference_mode()
    def encode_images(self, images: list[np.ndarray], batch_size: int = 16) -> np.ndarray:
        """(N, D) float32 projected image embeddings of uint8 H×W×3 images."""
        out = []
        for i in range(0, len(images), batch_size):
            pixels = self.image_processor(images=list(images[i:i + batch_size]), return_tensors="pt")["pixel_values"]
            features = self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))
            out.append(_features(features))
        return np.concatenate(out) if out else np.zeros((0, self.embedding_dim), np.float32)

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.projection_dim)


def _features(output) -> np.ndarray:
    # transformers 5 may return a model output object instead of a bare tensor
    tensor = output if isinstance(output, torch.Tensor) else getattr(output, "pooler_output", output[0])
    return tensor.float().cpu().numpy()
