"""CLIPSeg text-prompted segmentation for /segment (transformers' CLIPSegForImageSegmentation)."""
from dalle_flow.models.clipseg.model import DEFAULT_CHECKPOINT, load_clipseg, tiny_clipseg

__all__ = ["DEFAULT_CHECKPOINT", "load_clipseg", "tiny_clipseg"]
