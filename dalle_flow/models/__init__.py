"""One sub-package per model family. Each is plain PyTorch and testable without Jina."""
