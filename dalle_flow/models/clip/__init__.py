"""CLIP embeddings and CLIP-as-service style ranking, on top of transformers' CLIPModel."""
from dalle_flow.models.clip.model import ClipEmbedder, DEFAULT_CLIP
from dalle_flow.models.clip.rank import cosine_matrix, rank_scores

__all__ = ["ClipEmbedder", "DEFAULT_CLIP", "cosine_matrix", "rank_scores"]
