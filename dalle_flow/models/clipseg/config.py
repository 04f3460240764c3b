"""CLIPSeg settings: the ImageNet normalisation the original used, and the tiny preset's structure.

DALL·E Flow's original executor ran the authors' `CLIPDensePredT` (ViT-B/16, reduce_dim 64) on 512x512 inputs. This
project uses the same family's Hugging Face port `CIDAS/clipseg-rd64-refined` (ViT-B/16, reduce_dim 64, the refined
decoder), whose processor resizes to 352x352 and normalises with the ImageNet mean/std the original used.
"""
from __future__ import annotations

from transformers import CLIPSegConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what both the original executor and the CIDAS processor normalise with
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_IMAGE_SIZE = 64


def tiny_config(tokenizer) -> CLIPSegConfig:
    """The rd64-refined structure (refined transposed-conv decoder, FiLM at layer 0, three extracted layers),
    scaled down. patch_size stays 16: the refined decoder upsamples by (patch_size // 4) ** 2."""
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                  image_size=TINY_IMAGE_SIZE, patch_size=16)
    return CLIPSegConfig(text_config=text, vision_config=vision, projection_dim=16, extract_layers=[1, 2, 3],
                         reduce_dim=16, decoder_num_attention_heads=2, decoder_intermediate_size=32,
                         conditional_layer=0, use_complex_transposed_convolution=True)
