"""DALL·E Flow: human-in-the-loop text-to-image models in plain PyTorch, importable without Jina."""

__version__ = "0.1.0"
