"""Pipelines compose model packages into what one endpoint runs (diffusers-style): DALL·E Mega (DalleBart + VQGAN),
GLID-3 XL (BERT + UNet + PLMS + KL-f8), SwinIR's test-time procedure, CLIPSeg's thresholded mask. No Jina, no DocArray."""
