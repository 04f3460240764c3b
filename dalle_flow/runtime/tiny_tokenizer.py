"""A tiny CLIP-style BPE tokenizer built in memory (no files, no downloads) for the tiny preset of CLIP and CLIPSeg.

Random tiny models only need stable ids: every byte is a token, a handful of common words are whole tokens.
"""
from __future__ import annotations

# The tiny tokenizer knows these words as whole tokens; anything else is spelt out byte by byte, so every prompt
# still tokenizes.
TINY_WORDS = ("a", "an", "the", "of", "and", "in", "on", "with", "photo", "cat", "dog", "person", "man", "woman",
              "car", "tree", "sky", "house", "red", "blue", "green", "face", "hat", "background")


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (printable Latin-1 maps to itself, the rest to
    code points from 256 on), in byte order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in kept else chr(next(extra)) for b in range(256)]


def tiny_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of the tiny tokenizer: every byte, every byte ending a word, merges that make TINY_WORDS single
    tokens, and CLIP's two special tokens last (as in the real vocabulary)."""
    vocab: dict[str, int] = {}
    for suffix in ("", "</w>"):
        for symbol in _byte_alphabet():
            vocab.setdefault(symbol + suffix, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in TINY_WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            if (left, right) not in merges:
                merges.append((left, right))
            left = left + right
            vocab.setdefault(left, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return vocab, merges


def tiny_clip_tokenizer(max_length: int = 77):
    """A CLIP tokenizer (the real one's normalisation, pre-tokenisation and special tokens) over tiny_vocabulary()."""
    from transformers import CLIPTokenizer

    vocab, merges = tiny_vocabulary()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
