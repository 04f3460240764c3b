"""VQGAN f16 image detokenizer (taming-transformers architecture, weights from the vqgan-jax Flax checkpoint)."""
from dalle_flow.models.vqgan.config import VQGANConfig, tiny_config
from dalle_flow.models.vqgan.loader import load_vqgan, save_vqgan, tiny_vqgan
from dalle_flow.models.vqgan.model import VQGAN, postprocess

__all__ = ["VQGAN", "VQGANConfig", "load_vqgan", "postprocess", "save_vqgan", "tiny_config", "tiny_vqgan"]
