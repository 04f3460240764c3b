"""DALL·E Mega's prompt normaliser, reproducing dalle-mini's `TextNormalizer` character for character.

The model was trained on captions that went through this exact pipeline, so any drift (an emoji name, a comma rule)
changes the tokens the encoder sees. Every regular expression below is applied in the reference's order; the
library versions matter too (ftfy, emoji names, unidecode tables): the parity fixture records the ones it was made with.

Hashtags (``#sunsetbeach``) are split into words by a dynamic programme over a word-frequency list,
``enwiki-words-frequency.txt`` (registry entry ``dalle/enwiki-words-frequency.txt``), one word per line, most
frequent first.
"""
from __future__ import annotations

import html
import math
import random
import re
from pathlib import Path

import emoji
import ftfy
from unidecode import unidecode

# A lone <person> (CC12M captions) becomes one of these, drawn with these weights (word counts on Wikipedia).
PERSON_WORDS = ("a person", "someone", "somebody")
PERSON_WEIGHTS = (282265, 121194, 12219)

# Placeholder that protects characters from the punctuation rules: letters only, so no rule touches it (no letter
# repeats 4 times in a row either). Inside a hashtag it does get split up, exactly as in the reference.
_TEMP = "xtokx"
_DOT, _QUOTE, _SLASH = f"{_TEMP}dot{_TEMP}", f"{_TEMP}quote{_TEMP}", f"{_TEMP}slash{_TEMP}"

# Every pattern applied to client text runs in linear time. The reference's people pattern
# `<person>([,\s]*(and)*[,\s]*<person>)+` backtracks quadratically over a long run of spaces; the possessive form
# matches the same strings (a separator can end neither in "and" nor in "<"), without backtracking.
_RE_PEOPLE = re.compile(r"<person>(?:[,\s]*+(?:and)*+[,\s]*+<person>)+")
_RE_PERSON = re.compile(r"<person>")
_RE_WIKI_REF_HEAD = re.compile(r"\A\s*\[\d+\]")
_RE_WIKI_REF_TAIL = re.compile(r"\[\d+\]\s*\Z")
_RE_HTML_TAG = re.compile(r"<[^<]+?>")
_RE_URL = re.compile(r"http\S+")
_RE_THOUSANDS = re.compile(r"(\d),(\d{3})")
_RE_DOT = re.compile(r"(\w)\.(\w)")
# the reference lists "ll" twice in this alternation; harmless, kept out
_RE_CONTRACTION = re.compile(r"'(?=([stdm]|(ll)|(re)|(ve))\b)")
_RE_DATE_SLASH = re.compile(r"(\d)/(\d)")
_RE_INNER_DASH = re.compile(r"(\w)-(\w)")
_RE_PADDED_CHARS = re.compile(r"([%&/$*])")
_RE_HASHTAG = re.compile(r"#(\w+)")
_RE_IGNORED = re.compile(r"[_#\\]")
_RE_QUOTE = re.compile(r"['\"`]")
_RE_PUNCT = re.compile(r"[()\[\].,|:;?!=+~\-/{}]")
_RE_REPEATS = re.compile(r"(\D)(\1{3,})")
# The reference's `(\s*"+\s*)+` and `(\s*,+\s*)+` match a whole run of spaces and quotes (commas) that holds at
# least one quote (comma), but retry every position of a long run of spaces: quadratic. Runs are matched once here
# and the ones without a quote (comma) are kept as they are.
_RE_QUOTE_RUN = re.compile(r'[\s"]+')
_RE_COMMA_RUN = re.compile(r"[\s,]+")
_RE_SPACES = re.compile(r"\s+")


class HashtagSegmenter:
    """Splits run-together words ("sunsetbeach" -> "sunset beach"), a word-frequency variant of wordninja.

    The word on line i (0-based) of the frequency file costs ln(i + 1); a word that appears twice keeps the cost of
    its LAST line (the reference builds a dict in file order). Unknown pieces cost +inf, so a string with no known
    split falls apart into single characters; digits are then glued back together.
    """

    _SPLIT = re.compile(r"[^a-zA-Z0-9']+")

    def __init__(self, words: list[str]):
        if not words:
            raise ValueError("HashtagSegmenter needs at least one word")
        self._cost = {word: math.log(float(i + 1)) for i, word in enumerate(words)}
        self._max_len = max(len(w) for w in self._cost)

    @classmethod
    def from_file(cls, path: str | Path) -> "HashtagSegmenter":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"word-frequency file not found: {path}")
        words = []
        # splitlines() (not split("\n")) on purpose: the reference numbers lines the same way
        for number, line in enumerate(path.read_text(encoding="utf8").splitlines(), 1):
            fields = line.split()
            if not fields:
                raise ValueError(f"{path}:{number}: blank line in the word-frequency file (expected 'word count')")
            words.append(fields[0])
        return cls(words)

    def __call__(self, text: str) -> str:
        pieces = []
        for part in self._SPLIT.split(text):
            pieces.extend(self._segment(part))
        return " ".join(pieces)

    def _best(self, s: str, cost: list[float], i: int) -> tuple[float, int]:
        """Cheapest (total cost, length) of a last word ending at i; on equal totals the shorter word wins."""
        best = None
        for k in range(1, min(self._max_len, i) + 1):
            # same addition order as the reference, so float ties break identically
            candidate = (cost[i - k] + self._cost.get(s[i - k:i].lower(), math.inf), k)
            if best is None or candidate < best:
                best = candidate
        return best

    def _segment(self, s: str) -> list[str]:
        cost = [0.0]
        for i in range(1, len(s) + 1):
            cost.append(self._best(s, cost, i)[0])
        # walk back from the end; `out` is built last word first
        out: list[str] = []
        i = len(s)
        while i > 0:
            _, k = self._best(s, cost, i)
            word = s[i - k:i]
            glued = False
            if word != "'" and out:
                # keep "'s" with its word and digit runs in one piece ("2" "0" "2" "2" -> "2022")
                if out[-1] == "'s" or (word[-1].isdigit() and out[-1][0].isdigit()):
                    out[-1] = word + out[-1]
                    glued = True
            if not glued:
                # note: a lone "'" is still emitted as its own piece (the reference only skips the gluing)
                out.append(word)
            i -= k
        return out[::-1]


class TextNormalizer:
    """dalle-mini's caption normaliser: ``TextNormalizer(words_path)(" A Cat!")`` -> ``" a cat"``.

    words_path: the word-frequency file used to split hashtags (``enwiki-words-frequency.txt`` for DALL·E Mega).
    It is required; ``None`` means "no hashtag segmentation" (``#sunsetbeach`` -> ``sunsetbeach``) and exists only for
    the tiny preset, which has no files. The file is read here, at construction, so a missing file fails at start-up.
    """

    def __init__(self, words_path: str | Path | None):
        self.hashtags = HashtagSegmenter.from_file(words_path) if words_path is not None else None

    def __call__(self, text: str, rng: random.Random | None = None) -> str:
        """rng picks the replacement of a lone <person>; None uses the global `random` module like the reference."""
        t = ftfy.fix_text(text)
        t = html.unescape(html.unescape(t))  # twice: captions are often double-escaped ("&amp;amp;")
        t = emoji.demojize(t)  # ":cat_face:", before unidecode would drop the emoji
        t = unidecode(t)  # from here on the text is ASCII
        t = t.lower()
        t = _replace_person_tokens(t, rng)
        t = _RE_WIKI_REF_TAIL.sub("", _RE_WIKI_REF_HEAD.sub("", t))
        t = _RE_HTML_TAG.sub(" ", t)
        t = _RE_URL.sub("", t)
        t = _RE_THOUSANDS.sub(r"\1\2", _RE_THOUSANDS.sub(r"\1\2", t))  # twice: overlapping groups in 1,000,000
        # protect the dot of "2.5", the apostrophe of contractions and the slash of dates from the comma rule
        t = _RE_DOT.sub(rf"\1{_DOT}\2", t)
        t = _RE_CONTRACTION.sub(_QUOTE, t)
        t = _RE_DATE_SLASH.sub(rf"\1{_SLASH}\2", t)
        t = _RE_INNER_DASH.sub(r"\1 \2", t)
        t = _RE_PADDED_CHARS.sub(r" \1 ", t)
        t = _RE_HASHTAG.sub(self._expand_hashtag, t)
        t = _RE_IGNORED.sub(" ", t)
        t = _RE_QUOTE.sub(' " ', t)
        t = _RE_PUNCT.sub(",", t)
        t = t.replace(_DOT, ".").replace(_QUOTE, "'").replace(_SLASH, "/")
        t = _RE_REPEATS.sub(r"\1", t)  # 4+, not 3+, so roman numerals like "viii" survive
        t = _RE_QUOTE_RUN.sub(lambda m: ' " ' if '"' in m.group() else m.group(), t)
        t = _RE_COMMA_RUN.sub(lambda m: ", " if "," in m.group() else m.group(), t)
        t = _RE_SPACES.sub(" ", t)
        t = t.strip()
        t = t[:-1] if t.endswith(",") else t
        t = t[1:] if t.startswith(",") else t
        return " " + t.strip()  # the BPE has add_prefix_space=False: the leading space is part of the format

    def _expand_hashtag(self, match: re.Match) -> str:
        tag = match.group(1)
        return self.hashtags(tag) if self.hashtags is not None else tag


def _replace_person_tokens(t: str, rng: random.Random | None) -> str:
    t = _RE_PEOPLE.sub(" people ", t)
    choose = (rng if rng is not None else random).choices
    # one pass, left to right: the same draws in the same order as the reference's replace-the-first-one loop, which
    # rescanned the text for every token (quadratic)
    return _RE_PERSON.sub(lambda _: f" {choose(PERSON_WORDS, PERSON_WEIGHTS)[0]} ", t)
