"""CLIP embeddings and CLIP-as-service style ranking, on top of transformers' CLIPModel."""
from dalle_flow.models.clip.config import DEFAULT_CLIP
from dalle_flow.models.clip.loader import load_clip, tiny_clip
from dalle_flow.models.clip.model import ClipEmbedder
from dalle_flow.models.clip.rank import cosine_matrix, rank_scores

__all__ = ["ClipEmbedder", "DEFAULT_CLIP", "cosine_matrix", "load_clip", "rank_scores", "tiny_clip"]
