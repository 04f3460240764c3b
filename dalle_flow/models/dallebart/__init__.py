"""DalleBart, DALL·E Mega's text-to-image-token transformer: config, network, loader, text processor, sampling."""
from dalle_flow.models.dallebart.config import DalleBartConfig, tiny_config
from dalle_flow.models.dallebart.loader import load_dallebart, save_dallebart, tiny_dallebart
from dalle_flow.models.dallebart.model import DalleBart
from dalle_flow.models.dallebart.processor import DalleProcessor
from dalle_flow.models.dallebart.sampling import generate_tokens

__all__ = ["DalleBart", "DalleBartConfig", "DalleProcessor", "generate_tokens", "load_dallebart", "save_dallebart",
           "tiny_config", "tiny_dallebart"]
