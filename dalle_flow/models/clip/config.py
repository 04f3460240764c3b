"""CLIP settings: the checkpoint DALL·E Flow ranked with, OpenAI's pixel normalisation, the tiny preset's sizes."""
from __future__ import annotations

DEFAULT_CLIP = "openai/clip-vit-large-patch14-336"  # ViT-L/14@336px, what DALL·E Flow ranked with
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def tiny_config(tokenizer):
    """A 2-layer CLIP with 32-dim embeddings of 32×32 crops, sized to the tiny tokenizer."""
    from transformers import CLIPConfig

    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=8)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
