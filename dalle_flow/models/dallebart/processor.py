"""Prompt -> text token ids for DalleBart, as dalle-mini's `DalleBartProcessor` does it.

Each prompt is normalised (`TextNormalizer`), then tokenised with the checkpoint's byte-level BPE (BART/GPT-2 format)
as ``[<s>] + bpe[:max_text_length - 2] + [</s>]``, right-padded with ``<pad>`` to exactly ``max_text_length``.
The unconditional prompt used by super-conditioning is the empty string tokenised the same way but NOT normalised
(a normalised "" would be " ", one more token).

The `tokenizers` library is used directly rather than transformers' BartTokenizerFast: same Rust tokenizer, same
files, but it can also be built in memory for the tiny preset. The only thing BartTokenizerFast changes on load that
affects ids is the pre-tokenizer's ``add_prefix_space`` (taken from tokenizer_config.json); that is reproduced here.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from dalle_flow.models.dallebart.text import TextNormalizer

BOS, PAD, EOS, UNK, MASK = "<s>", "<pad>", "</s>", "<unk>", "<mask>"
DEFAULT_MAX_TEXT_LENGTH = 64  # DalleBartConfig's default when config.json does not say
TINY_MAX_TEXT_LENGTH = 16
TINY_VOCAB_SIZE = 320


class DalleProcessor:
    """``processor(["a red car"])`` -> ``(input_ids, attention_mask)``, both int64 tensors ``(N, max_text_length)``.

    normalizer: a `TextNormalizer`, or None to tokenise prompts as given (checkpoints with ``normalize_text: false``).
    """

    def __init__(self, tokenizer: Tokenizer, max_text_length: int, normalizer: TextNormalizer | None,
                 pad_token: str = PAD):
        if not isinstance(max_text_length, int) or max_text_length < 1:
            raise ValueError(f"max_text_length must be a positive integer, got {max_text_length!r}")
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"pad token {pad_token!r} is not in the tokenizer's vocabulary")
        self.tokenizer = tokenizer
        self.max_text_length = max_text_length
        self.normalizer = normalizer
        self.pad_id = pad_id
        self.pad_token = pad_token

    @classmethod
    def from_folder(cls, folder: str | Path, words_path: str | Path | None) -> "DalleProcessor":
        """Tokenizer files and config.json of a DalleBart checkpoint folder; words_path: enwiki-words-frequency.txt.

        words_path is required when config.json asks for normalisation (DALL·E Mega does) and ignored otherwise;
        a real checkpoint never runs without hashtag segmentation (only `tiny` does).
        """
        folder = Path(folder)
        config = _read_json(folder / "config.json", required=True)
        normalizer = None
        if config.get("normalize_text", False):
            if words_path is None:
                raise ValueError(f"{folder}: config.json sets normalize_text, which needs the word-frequency file "
                                 "(registry entry dalle/enwiki-words-frequency.txt); got words_path=None")
            normalizer = TextNormalizer(words_path)
        tokenizer, pad_token = load_tokenizer(folder)
        return cls(tokenizer, int(config.get("max_text_length", DEFAULT_MAX_TEXT_LENGTH)), normalizer, pad_token)

    @classmethod
    def tiny(cls, max_text_length: int = TINY_MAX_TEXT_LENGTH, vocab_size: int = TINY_VOCAB_SIZE) -> "DalleProcessor":
        """A small deterministic BPE learned in memory from a built-in caption list; no files, no hashtag splitting.

        The tiny preset's encoder must have at least ``vocab_size`` embedding rows.
        """
        vocab, merges = tiny_bpe(vocab_size)
        return cls(build_tokenizer(vocab, merges), max_text_length, TextNormalizer(None))

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can emit (largest id + 1)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def normalize(self, texts: list[str], rng: random.Random | None = None) -> list[str]:
        _check_texts(texts)
        if self.normalizer is None:
            return list(texts)
        return [self.normalizer(t, rng) for t in texts]

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise already-normalised texts; (input_ids, attention_mask), int64 (N, max_text_length)."""
        _check_texts(texts)
        # set on every call, as transformers does for padding="max_length", truncation=True: `self.tokenizer` is
        # public and whoever uses it directly may have changed these settings
        self.tokenizer.enable_truncation(max_length=self.max_text_length, stride=0, strategy="longest_first",
                                         direction="right")
        self.tokenizer.enable_padding(direction="right", pad_id=self.pad_id, pad_type_id=0, pad_token=self.pad_token,
                                      length=self.max_text_length)
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True) if texts else []
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long).reshape(len(texts), self.max_text_length)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long).reshape(ids.shape)
        return ids, mask

    def __call__(self, texts: list[str], rng: random.Random | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """rng: only used to replace a lone "<person>" (see `TextNormalizer`); None = global `random`."""
        return self.tokenize(self.normalize(texts, rng))

    def uncond_ids(self, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The unconditional prompt for super-conditioning: "" tokenised WITHOUT normalisation, repeated n times."""
        ids, mask = self.tokenize([""])
        return ids.repeat(n, 1), mask.repeat(n, 1)

def load_tokenizer(folder: str | Path) -> tuple[Tokenizer, str]:
    """The folder's BPE tokenizer (tokenizer.json if present, else vocab.json + merges.txt) and its pad token."""
    folder = Path(folder)
    config = _read_json(folder / "tokenizer_config.json", required=False)
    specials = {**config, **_read_json(folder / "special_tokens_map.json", required=False)}
    if (folder / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        vocab = _read_json(folder / "vocab.json", required=True)
        merges = _read_merges(folder / "merges.txt")
        tokenizer = build_tokenizer(vocab, merges, add_prefix_space=config.get("add_prefix_space", False),
                                    special_tokens={k: _token_content(specials.get(f"{k}_token", v))
                                                    for k, v in _SPECIAL_DEFAULTS.items()})
    else:
        raise FileNotFoundError(f"{folder}: no tokenizer.json, nor vocab.json + merges.txt")
    _apply_prefix_space(tokenizer, bool(config.get("add_prefix_space", False)))
    return tokenizer, _token_content(specials.get("pad_token", PAD))


_SPECIAL_DEFAULTS = {"bos": BOS, "pad": PAD, "eos": EOS, "unk": UNK, "mask": MASK}


def build_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]], add_prefix_space: bool = False,
                    special_tokens: dict[str, str] | None = None) -> Tokenizer:
    """A BART-style byte-level BPE from its vocabulary and merges (what transformers builds from the two files)."""
    names = {**_SPECIAL_DEFAULTS, **(special_tokens or {})}
    missing = [token for token in names.values() if token not in vocab]
    if missing:
        raise ValueError(f"special tokens missing from the vocabulary: {missing}")
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                                     end_of_word_suffix="", fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tokenizer.decoder = decoders.ByteLevel()
    # positional: the keyword for the second argument was renamed (cls -> cls_token) in tokenizers 0.23
    tokenizer.post_processor = processors.RobertaProcessing((names["eos"], vocab[names["eos"]]),
                                                            (names["bos"], vocab[names["bos"]]),
                                                            trim_offsets=True, add_prefix_space=add_prefix_space)
    # BART's <mask> swallows the space before it (lstrip); the others match exactly
    tokenizer.add_special_tokens([AddedToken(names[k], special=True, normalized=False, lstrip=(k == "mask"))
                                  for k in ("bos", "pad", "eos", "unk", "mask")])
    return tokenizer


def _apply_prefix_space(tokenizer: Tokenizer, add_prefix_space: bool) -> None:
    # BartTokenizerFast forces tokenizer_config's add_prefix_space onto the pre-tokenizer when they disagree
    state = json.loads(tokenizer.to_str()).get("pre_tokenizer") or {}
    if state.get("add_prefix_space", add_prefix_space) != add_prefix_space:
        kind = state.pop("type")
        state["add_prefix_space"] = add_prefix_space
        tokenizer.pre_tokenizer = getattr(pre_tokenizers, kind)(**state)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, in the order byte-level vocabularies list them."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return {b: table[b] for b in printable + [b for b in range(256) if b not in printable]}


# Captions the tiny BPE is learned from: enough words for a few hundred merges, fixed so the ids never change.
_TINY_CORPUS = """
an astronaut riding a horse on the moon, oil painting
a red car driving over a bridge by the ocean at sunset
sunset over a lake in the mountains, trending on artstation
a cat wearing a hat, digital art
the eiffel tower landing on the moon
a bowl of soup that looks like a monster, knitted out of wool
an armchair in the shape of an avocado
a photo of a dog playing in the snow
a watercolor painting of a fox in a forest
a city skyline at night with neon lights
a teddy bear on a skateboard in times square
a small cabin in the woods during winter
a robot reading a book in a library
portrait of an old man with a beard, pencil drawing
a bird sitting on a branch in the rain
a castle on a hill under a starry sky
a bunch of flowers in a glass vase on a wooden table
a spaceship flying through clouds above the sea
a pixel art landscape with green trees and blue water
a cup of coffee next to a laptop on a desk
"""


def tiny_bpe(vocab_size: int = TINY_VOCAB_SIZE) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn BPE merges on `_TINY_CORPUS`: ids 0-3 specials, then the 256 bytes, the merges, and <mask> last.

    Greedy and deterministic: the most frequent adjacent pair is merged first, ties go to the smallest pair.
    """
    n_merges = vocab_size - 4 - 256 - 1
    if n_merges < 0:
        raise ValueError(f"vocab_size must be at least 261 (4 specials + 256 bytes + <mask>), got {vocab_size}")
    splitter = pre_tokenizers.ByteLevel(add_prefix_space=False)
    counts: dict[tuple[str, ...], int] = {}
    for line in _TINY_CORPUS.strip().splitlines():
        for word, _ in splitter.pre_tokenize_str(" " + line):  # captions arrive with a leading space
            counts[tuple(word)] = counts.get(tuple(word), 0) + 1
    vocab = {token: i for i, token in enumerate([BOS, PAD, EOS, UNK, *bytes_to_unicode().values()])}
    merges: list[tuple[str, str]] = []
    while len(merges) < n_merges:
        pairs: dict[tuple[str, str], int] = {}
        for word, count in counts.items():
            for pair in zip(word, word[1:]):
                pairs[pair] = pairs.get(pair, 0) + count
        if not pairs:
            raise ValueError(f"the built-in corpus supports at most {len(merges)} merges; vocab_size is too large")
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        vocab[best[0] + best[1]] = len(vocab)
        counts = {_merge_word(word, best): count for word, count in counts.items()}
    vocab[MASK] = len(vocab)
    return vocab, merges


def _merge_word(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _check_texts(texts) -> None:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of strings (wrap a single prompt in a list)")


def _read_json(path: Path, required: bool) -> dict:
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"{path} not found")
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_merges(path: Path) -> list[tuple[str, str]]:
    merges = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#version") or not line.strip():
            continue
        left, right = line.split()
        merges.append((left, right))
    return merges


def _token_content(token) -> str:
    """special_tokens_map.json stores either "<pad>" or {"content": "<pad>", ...}."""
    return token["content"] if isinstance(token, dict) else token
