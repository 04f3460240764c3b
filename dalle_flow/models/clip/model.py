"""CLIP text and image embeddings around transformers' CLIPModel (built by loader.py: real checkpoint or tiny)."""
from __future__ import annotations

import numpy as np
import torch


class ClipEmbedder:
    def __init__(self, model, tokenizer, image_processor, device: torch.device, dtype: torch.dtype, name: str):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.device = device
        self.dtype = dtype
        self.name = name

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
