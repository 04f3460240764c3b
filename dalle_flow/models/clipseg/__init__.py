"""CLIPSeg text-prompted segmentation for /segment (transformers' CLIPSegForImageSegmentation)."""
from dalle_flow.models.clipseg.model import DEFAULT_CHECKPOINT, load_clipseg, tiny_clipseg
from dalle_flow.models.clipseg.segment import THRESHOLDING_TYPES, apply_threshold, rgba, segment

__all__ = ["DEFAULT_CHECKPOINT", "THRESHOLDING_TYPES", "apply_threshold", "load_clipseg", "rgba", "segment",
           "tiny_clipseg"]
