"""CLIPSeg text-prompted segmentation for /segment (transformers' CLIPSegForImageSegmentation): config and loader;
the network is transformers' own, so the package has no model file."""
from dalle_flow.models.clipseg.config import tiny_config
from dalle_flow.models.clipseg.loader import load_clipseg, tiny_clipseg

__all__ = ["load_clipseg", "tiny_clipseg", "tiny_config"]
