"""VQGAN f16 image detokenizer (taming-transformers architecture, weights from the vqgan-jax Flax checkpoint)."""
from dalle_flow.models.vqgan.config import VQGANConfig
from dalle_flow.models.vqgan.loader import CheckpointMismatch, load_vqgan, load_vqgan_files, save_vqgan
from dalle_flow.models.vqgan.model import VQGAN, postprocess, tiny_config, tiny_vqgan

__all__ = ["CheckpointMismatch", "VQGAN", "VQGANConfig", "load_vqgan", "load_vqgan_files", "postprocess",
           "save_vqgan", "tiny_config", "tiny_vqgan"]
