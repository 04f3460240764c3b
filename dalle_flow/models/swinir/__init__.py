"""SwinIR-L real-world x4 upscaler (JingyunLiang/SwinIR, as DALL·E Flow ran it through jina-ai/SwinIR)."""
from dalle_flow.models.swinir.config import SwinIRConfig, tiny_config
from dalle_flow.models.swinir.loader import (build_swinir, derive_config, load_swinir, read_state_dict, save_swinir,
                                             tiny_swinir)
from dalle_flow.models.swinir.network import SwinIR

__all__ = ["SwinIR", "SwinIRConfig", "build_swinir", "derive_config", "load_swinir", "read_state_dict", "save_swinir",
           "tiny_config", "tiny_swinir"]
