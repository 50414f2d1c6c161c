"""Phrase module for the phrase- and word-level methods (IVT's multi-level alignment, LAIP's mask phrase modeling).

- :func:`split_phrases`: sentence → phrases, split on ``.`` and ``,`` (IVT §3.3).
- :func:`noun_phrases`: noun phrases chunked by ``nltk.RegexpParser`` with a TBPS grammar (:data:`GRAMMAR`).
- :func:`nouns_and_adjectives`: the word level (IVT: "nouns and adjectives extracted by NLTK").
- :class:`PhraseChunker`: all of the above with a chosen tagger; ``levels(caption)`` gives the three IVT levels.

Part-of-speech tags come from ``nltk.pos_tag`` when its averaged-perceptron model is installed, otherwise from
:class:`LexiconTagger`, a domain lexicon of pedestrian-description words (``lexicon.json``) with context and suffix
rules for the rest. Text is tokenized with a regex because ``nltk.word_tokenize`` needs the punkt data.
"""

from __future__ import annotations

import functools
import json
import re
import warnings
from collections.abc import Sequence
from importlib import resources
from typing import Protocol

import nltk

# Words (incl. hyphenated "t-shirt", "knee-length"), the clitics "n't" / "'s", numbers, then any other single symbol.
TOKEN_PATTERN = re.compile(r"[A-Za-z]+(?=n't\b)|n't\b|'[A-Za-z]+|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*|[^\sA-Za-z0-9]")

# Chunk grammar. NBAR is the grammar used by TBPS code (modifiers then a head noun; VBD/VBN because taggers give
# "striped" either) extended with coordinated adjectives ("black and white striped shirt"); NP attaches "with"/"of"
# complements ("shirt with a red logo", "pair of white shoes"). Before parsing, the chunker re-tags "with"/"of" as
# PREP and known finite verbs tagged VBD ("had", "wore", "was") as VBDF so that "had glasses" is not a phrase.
GRAMMAR = r"""
NBAR:
    {<NN.*|JJ.*|VBN|VBD>*<JJ.*|VBN|VBD><CC><RB>?<JJ.*|VBN|VBD>+<NN.*|JJ.*|VBN|VBD>*<NN.*>}
    {<NN.*|JJ.*|VBN|VBD>*<NN.*>}
NP:
    {<NBAR>(<PREP><DT|PRP\$|CD>*<NBAR>)+}
"""
ATTACHING_PREPOSITIONS = frozenset({"with", "of"})
PHRASE_SPLIT = re.compile(r"[.,]")


def tokenize(text: str) -> list[str]:
    """Regex word tokenizer (no nltk data needed): ``"A red t-shirt, jeans."`` → ``[A, red, t-shirt, ",", jeans, "."]``."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return TOKEN_PATTERN.findall(text)


def split_phrases(text: str) -> list[str]:
    """Split on ``.`` and ``,``; strip; drop empty pieces."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return [piece.strip() for piece in PHRASE_SPLIT.split(text) if piece.strip()]


# ---------------------------------------------------------------------------------------------------- taggers
class Tagger(Protocol):
    """What the chunker needs from a tagger: Penn Treebank tags for a list of tokens."""

    name: str

    def tag(self, tokens: Sequence[str]) -> list[tuple[str, str]]: ...


class NLTKTagger:
    """``nltk.pos_tag`` (needs the averaged-perceptron model from ``nltk.download``)."""

    name = "nltk"
    RESOURCES = ("taggers/averaged_perceptron_tagger_eng", "taggers/averaged_perceptron_tagger")

    @classmethod
    def is_available(cls) -> bool:
        for resource in cls.RESOURCES:
            try:
                nltk.data.find(resource)
                return True
            except LookupError:
                continue
        return False

    def tag(self, tokens: Sequence[str]) -> list[tuple[str, str]]:
        return nltk.pos_tag(list(tokens)) if tokens else []


class LexiconTagger:
    """
    Domain lexicon tagger for pedestrian descriptions (Penn Treebank tags).

    1. Lexicon lookup (lowercased) in ``lexicon.json``: colours, clothing / body / accessory / carried-object nouns,
       common adjectives, function words and the verbs captions use ("wears", "carrying" …).
    2. Unknown words: hyphenated words take the tag of their last part ("dark-green" → JJ, "tank-top" → NN) unless
       that part ends in -ed / -ing / -less ("short-sleeved" → JJ); otherwise suffix rules (-ed → VBN, -ing → VBG,
       -ly → RB, -ous/-ful/-less/-ish/-ic/-ive/-able/-al → JJ, -s → NNS, else NN); digits → CD; punctuation → itself.
    3. Context: a gerund between a determiner/adjective and a noun modifies it ("a running shoe" → JJ); a noun or
       present-tense reading right after "to", a modal or "n't" is a base verb ("doesn't match" → VB).

    Args:
        lexicon (`dict[str, str]`, *optional*): word → tag; defaults to the shipped lexicon. ``extra`` entries are
            added on top (e.g. a dataset's brand names).
    """

    name = "lexicon"
    SUFFIX_RULES: tuple[tuple[str, str], ...] = (
        ("less", "JJ"), ("ous", "JJ"), ("ful", "JJ"), ("ish", "JJ"), ("ic", "JJ"), ("ive", "JJ"), ("able", "JJ"),
        ("ible", "JJ"), ("al", "JJ"), ("ed", "VBN"), ("ing", "VBG"), ("ly", "RB"), ("ss", "NN"), ("us", "NN"),
        ("is", "NN"), ("s", "NNS"),
    )  # fmt: skip

    def __init__(self, lexicon: dict[str, str] | None = None, extra: dict[str, str] | None = None):
        self.lexicon = dict(load_lexicon() if lexicon is None else lexicon)
        if extra:
            self.lexicon.update({k.lower(): v for k, v in extra.items()})

    def word_tag(self, word: str) -> str:
        """Tag of one word out of context."""
        lower = word.lower()
        if lower in self.lexicon:
            return self.lexicon[lower]
        if re.fullmatch(r"\d+(?:[.,]\d+)?(?:st|nd|rd|th)?", lower):
            return "CD"
        if not re.search(r"[a-z0-9]", lower):
            return {"(": "(", ")": ")", "'": "''", '"': "''"}.get(lower, lower if lower in ".,:;" else "SYM")
        if lower == "'s":
            return "POS"
        if lower == "n't":
            return "RB"
        if "-" in lower:
            last = lower.rsplit("-", 1)[1]
            if re.search(r"(ed|ing|less|ful)$", last):
                return "JJ"  # compound modifiers: short-sleeved, good-looking, sleeve-less
            return self.word_tag(last) if last else "NN"
        for suffix, tag in self.SUFFIX_RULES:
            if lower.endswith(suffix) and len(lower) > len(suffix) + 2:
                return tag
        return "NN"

    def tag(self, tokens: Sequence[str]) -> list[tuple[str, str]]:
        tags = [self.word_tag(token) for token in tokens]
        for i, tag in enumerate(tags):
            if tag == "VBG" and 0 < i < len(tags) - 1:
                if tags[i - 1] in ("DT", "PRP$", "JJ", "CD") and tags[i + 1].startswith(("NN", "JJ")):
                    tags[i] = "JJ"
            elif tag in ("NN", "VBP") and i > 0 and (tags[i - 1] in ("TO", "MD") or tokens[i - 1].lower() == "n't"):
                tags[i] = "VB"
        return list(zip(tokens, tags))


@functools.lru_cache(maxsize=1)
def load_lexicon() -> dict[str, str]:
    """The shipped lexicon (word → Penn tag)."""
    text = resources.files(__package__).joinpath("lexicon.json").read_text(encoding="utf-8")
    return dict(json.loads(text)["words"])


_warned_no_nltk_model = False


def default_tagger() -> Tagger:
    """``nltk.pos_tag`` when its model is installed, else the domain :class:`LexiconTagger` (with a warning, once
    per process: the word level then differs from what NLTK would give, and the processor records which tagger ran
    in its saved config as ``word_tagger``)."""
    global _warned_no_nltk_model
    if NLTKTagger.is_available():
        return NLTKTagger()
    if not _warned_no_nltk_model:
        _warned_no_nltk_model = True
        warnings.warn(
            "NLTK's averaged-perceptron tagger model is not installed; part-of-speech tags (MLA word level, noun "
            "phrases) come from tbps-hf's domain lexicon tagger instead. Install it with "
            "`python -m nltk.downloader averaged_perceptron_tagger_eng` to use nltk.pos_tag.",
            UserWarning,
            stacklevel=2,
        )
    return LexiconTagger()


# ---------------------------------------------------------------------------------------------------- chunker
class PhraseChunker:
    """
    Sentence / phrase / word levels and noun phrases of a caption.

    Args:
        tagger (`Tagger`, *optional*): defaults to :func:`default_tagger`.
        grammar (`str`, *optional*): an ``nltk.RegexpParser`` grammar whose noun-phrase labels are ``NP`` / ``NBAR``;
            defaults to :data:`GRAMMAR`.
    """

    PHRASE_LABELS = ("NP", "NBAR")

    def __init__(self, tagger: Tagger | None = None, grammar: str = GRAMMAR):
        self.tagger = tagger if tagger is not None else default_tagger()
        self.grammar = grammar
        self.parser = nltk.RegexpParser(grammar)

    def tag(self, text: str) -> list[tuple[str, str]]:
        """Tokenize and tag ``text``: ``[(token, Penn tag), ...]``."""
        return self.tagger.tag(tokenize(text))

    @staticmethod
    def _chunk_tag(word: str, tag: str) -> str:
        lower = word.lower()
        if lower in ATTACHING_PREPOSITIONS:
            return "PREP"  # lets the grammar attach "with"/"of" complements without touching other prepositions
        if tag == "VBD" and load_lexicon().get(lower) == "VBD":
            return "VBDF"  # a known finite verb ("had glasses"), never a pre-noun modifier
        return tag

    def noun_phrase_spans(self, text: str) -> tuple[list[str], list[tuple[int, int]]]:
        """Tokens of ``text`` and the ``[start, end)`` token spans of its top-level noun phrases (for masking)."""
        tagged = self.tag(text)
        tokens = [word for word, _ in tagged]
        if not tagged:
            return tokens, []
        marked = [(w, self._chunk_tag(w, t)) for w, t in tagged]
        tree = self.parser.parse(marked)
        spans, position = [], 0
        for node in tree:
            if isinstance(node, nltk.Tree):
                width = len(node.leaves())
                if node.label() in self.PHRASE_LABELS:
                    spans.append((position, position + width))
                position += width
            else:
                position += 1
        return tokens, spans

    def noun_phrases(self, text: str) -> list[str]:
        """Noun phrases of ``text`` (tokens joined by spaces, original case, determiners outside phrases dropped)."""
        tokens, spans = self.noun_phrase_spans(text)
        return [" ".join(tokens[start:end]) for start, end in spans]

    def nouns_and_adjectives(self, text: str) -> list[str]:
        """Nouns and adjectives of ``text`` in order (the word level of IVT's multi-level alignment)."""
        return [w for w, t in self.tag(text) if t.startswith(("NN", "JJ"))]

    def levels(self, caption: str) -> dict[str, list[str]]:
        """``{"sentence": [caption], "phrase": split_phrases(caption), "word": nouns_and_adjectives(caption)}``."""
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"caption must be a non-empty string, got {caption!r}")
        return {
            "sentence": [caption.strip()],
            "phrase": split_phrases(caption),
            "word": self.nouns_and_adjectives(caption),
        }


@functools.lru_cache(maxsize=1)
def default_chunker() -> PhraseChunker:
    return PhraseChunker()


def noun_phrases(text: str) -> list[str]:
    """Noun phrases of ``text`` with the default chunker."""
    return default_chunker().noun_phrases(text)


def nouns_and_adjectives(text: str) -> list[str]:
    """Nouns and adjectives of ``text`` with the default chunker."""
    return default_chunker().nouns_and_adjectives(text)


# ---------------------------------------------------------------------------------------------------- measurement
def phrase_recovered(attribute_phrase: str, extracted: Sequence[str]) -> bool:
    """True when some extracted phrase, lowercased and tokenized, contains ``attribute_phrase`` as a contiguous span."""
    target = [t.lower() for t in tokenize(attribute_phrase)]
    if not target:
        raise ValueError("attribute_phrase has no tokens")
    for phrase in extracted:
        tokens = [t.lower() for t in tokenize(phrase)]
        for start in range(len(tokens) - len(target) + 1):
            if tokens[start : start + len(target)] == target:
                return True
    return False


def phrase_recovery(
    samples: Sequence[tuple[str, Sequence[str]]], chunker: PhraseChunker | None = None
) -> tuple[float, list[tuple[str, str, list[str]]]]:
    """Share of attribute phrases recovered by the chunker's noun phrases, and the misses
    ``(caption, attribute_phrase, extracted_noun_phrases)``."""
    chunker = chunker or default_chunker()
    total, misses = 0, []
    for caption, attribute_phrases in samples:
        extracted = chunker.noun_phrases(caption)
        for phrase in attribute_phrases:
            total += 1
            if not phrase_recovered(phrase, extracted):
                misses.append((caption, phrase, extracted))
    if total == 0:
        raise ValueError("no attribute phrases to measure")
    return 1.0 - len(misses) / total, misses


__all__ = [
    "GRAMMAR",
    "LexiconTagger",
    "NLTKTagger",
    "PhraseChunker",
    "Tagger",
    "default_chunker",
    "default_tagger",
    "load_lexicon",
    "noun_phrases",
    "nouns_and_adjectives",
    "phrase_recovered",
    "phrase_recovery",
    "split_phrases",
    "tokenize",
]
