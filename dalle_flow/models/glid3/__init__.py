"""GLID-3 XL: latent diffusion UNet, PLMS sampler, the LDM KL-f8 autoencoder and the LDM BERT text embedder."""
from dalle_flow.models.glid3.bert import BertEmbedder
from dalle_flow.models.glid3.config import BertConfig, KLConfig, UNetConfig
from dalle_flow.models.glid3.kl_vae import SCALE_FACTOR, AutoencoderKL, image_to_latent, latent_to_image
from dalle_flow.models.glid3.loader import (load_bert_embedder, load_kl_vae, load_unet, tiny_bert_embedder,
                                            tiny_kl_vae, tiny_unet)
from dalle_flow.models.glid3.unet import UNet

__all__ = ["AutoencoderKL", "BertConfig", "BertEmbedder", "KLConfig", "SCALE_FACTOR", "UNet", "UNetConfig",
           "image_to_latent", "latent_to_image", "load_bert_embedder", "load_kl_vae", "load_unet",
           "tiny_bert_embedder", "tiny_kl_vae", "tiny_unet"]
