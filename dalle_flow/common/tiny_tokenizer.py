"""A byte-level BPE tokenizer built in memory (no files, no downloads) for the tiny preset of CLIP-like models.

It has the 256 byte symbols plus start/end tokens and no merges: every byte is a token. That is enough for random
tiny models, which only need stable ids.
"""
from __future__ import annotations

from functools import lru_cache

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@lru_cache(maxsize=None)
def byte_level_tokenizer(max_length: int = 77):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet))}
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                                   model_max_length=max_length)
