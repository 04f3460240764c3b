"""The bert-base-uncased WordPiece tokenizer of GLID-3 XL's LDM BERT (vocab.txt), and the tiny preset's vocab."""
from __future__ import annotations

SPECIAL_TOKENS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}  # bert-base-uncased ids


def make_tokenizer(vocab):
    """bert-base-uncased rules (lower case, accents stripped) over `vocab`: a vocab.txt path or a {piece: id} dict."""
    from transformers import BertTokenizerFast

    if isinstance(vocab, dict):
        size = len(vocab)
    else:
        with open(vocab, encoding="utf-8") as f:
            size = sum(1 for _ in f)
        vocab = str(vocab)
    # transformers >= 5 takes `vocab=`; its `vocab_file=` is silently ignored (a 5-token vocab)
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    if len(tokenizer) != size:
        raise RuntimeError(f"tokenizer built with {len(tokenizer)} entries from a {size}-entry vocab: this "
                           f"transformers version ignored the vocab (needs transformers >= 5)")
    return tokenizer


def tiny_vocab() -> dict[str, int]:
    """A deterministic WordPiece vocab laid out like bert-base-uncased (specials at 0/100-103, [unusedN] between).

    Every lower-case letter, digit and ASCII punctuation mark exists whole and as a '##' piece, so any ASCII prompt
    tokenizes without [UNK]; a few common prompt words give multi-letter pieces.
    """
    pieces = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    punctuation = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    words = ["a", "an", "the", "of", "in", "on", "with", "and", "by", "at", "art", "cat", "dog", "girl", "city",
             "painting", "oil", "photo", "portrait", "red", "blue", "green", "sky", "sea", "night", "style",
             "digital", "detailed", "##ing", "##ed", "##s", "##er", "##station", "##punk", "cyber", "astronaut"]
    for piece in chars + punctuation + words + [f"##{c}" for c in chars]:
        if piece not in pieces:
            pieces.append(piece)
    return {piece: i for i, piece in enumerate(pieces)}
