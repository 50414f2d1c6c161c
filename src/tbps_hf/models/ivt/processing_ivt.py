"""IVT processor: the shared `TBPSProcessor` plus multi-level alignment (MLA, ``papers/ivt.txt`` §3.3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature

from ...processing import TBPSProcessor
from .configuration_ivt import MLA_LEVELS


_LEVEL_CACHE_SIZE = 500_000


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    return [v for v in value if isinstance(v, str) and v.strip()]


class IVTProcessor(TBPSProcessor):
    r"""
    [`TBPSProcessor`] whose `training_batch` applies MLA: for every example, at every step, one text level is drawn
    uniformly from `mla_levels` with the example's own generator —

    - `"sentence"`: the whole caption;
    - `"phrase"`: one of the caption's short sentences split on periods and commas (`PhraseChunker`);
    - `"word"`: its nouns and adjectives (NLTK tagger when its model is installed, else the package's lexicon
      tagger), as a random non-empty subset, in caption order, of the runs of adjacent ones (`"short black hair"`,
      `"grey pants"`: like the public code's random subset of attribute phrases) —

    and paired with its own augmented view of the image (flip, pad + random crop, random erasing: the paper's
    "horizontal flipping and random cropping", the public code's per-level transform). A level with no text for a
    caption (e.g. no noun found) falls back to the sentence.

    Args:
        image_processor, tokenizer, max_text_length: see [`TBPSProcessor`].
        use_mla (`bool`): apply MLA in `training_batch` (off: the base behaviour, whole captions).
        mla_levels (`list[str]`): levels to sample from.
        mla_mode (`str`): `"random"` (default; one level per example per step, the batch keeps B pairs) or `"all"`
            (the public code's loop: every example yields its word, phrase and sentence pairs, each with its own
            augmented image, so the batch has 3B pairs). Set from `IVTConfig.mla_mode`.
        word_tagger (`str`, *optional*): the part-of-speech tagger that produced the word level (`"nltk"` or
            `"lexicon"`); filled in when the word level is first computed and saved with the processor, so a
            trained model says which one it learned from.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        max_text_length: int = 100,
        use_mla: bool = True,
        mla_levels: Sequence[str] = MLA_LEVELS,
        mla_mode: str = "random",
        word_tagger: str | None = None,
        **kwargs: Any,
    ):
        levels = tuple(mla_levels)
        if not levels or any(level not in MLA_LEVELS for level in levels):
            raise ValueError(f"mla_levels must be a non-empty subset of {MLA_LEVELS}, got {mla_levels!r}")
        if mla_mode not in ("random", "all"):
            raise ValueError(f"mla_mode must be 'random' or 'all', got {mla_mode!r}")
        self.use_mla = bool(use_mla)
        self.mla_levels = list(levels)
        self.mla_mode = mla_mode
        self.word_tagger = word_tagger
        self._chunker = None
        self._level_cache: dict[str, dict[str, list[str]]] = {}
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, max_text_length=max_text_length, **kwargs)

    @classmethod
    def from_config(cls, config: Any, captions: Sequence[str] | None = None, **kwargs: Any) -> "IVTProcessor":
        kwargs.setdefault("use_mla", bool(getattr(config, "use_mla", True)))
        kwargs.setdefault("mla_levels", list(getattr(config, "mla_levels", MLA_LEVELS)))
        kwargs.setdefault("mla_mode", getattr(config, "mla_mode", "random"))
        return super().from_config(config, captions=captions, **kwargs)

    @property
    def chunker(self):
        """The shared `PhraseChunker` (built on first use)."""
        if self._chunker is None:
            from ...processing.phrases import PhraseChunker

            self._chunker = PhraseChunker()
            self.word_tagger = self._chunker.tagger.name
        return self._chunker

    # ------------------------------------------------------------------ MLA
    def level_texts(self, caption: str) -> dict[str, list[str]]:
        """The candidate texts of each level for `caption`: `{"sentence": [caption], "phrase": [...], "word": [...],
        "word_groups": [...]}` (`word`: the nouns and adjectives in caption order; `word_groups`: the same words
        as runs of adjacent ones, e.g. `"short black hair"`)."""
        cached = self._level_cache.get(caption)
        if cached is None:  # tagging is the slow part and captions repeat every epoch
            levels = self.chunker.levels(caption)
            words = _as_list(levels.get("word"))
            # Runs of adjacent nouns/adjectives ("short black hair") act as the attribute units that the public
            # code samples at the word level; they keep each adjective with its noun.
            groups, run = [], []
            for token, tag in self.chunker.tag(caption):
                if tag.startswith(("NN", "JJ")):
                    run.append(token)
                elif run:
                    groups.append(" ".join(run))
                    run = []
            if run:
                groups.append(" ".join(run))
            cached = {
                "sentence": [caption],
                "phrase": _as_list(levels.get("phrase")),
                "word": words,
                "word_groups": groups if " ".join(groups).split() == words else words,
            }
            if len(self._level_cache) >= _LEVEL_CACHE_SIZE:
                self._level_cache.clear()
            self._level_cache[caption] = cached
        return cached

    def level_text(self, caption: str, level: str, rng: np.random.Generator) -> str:
        """One training text of `level` for `caption`, drawn with `rng` (falls back to the caption if empty)."""
        if level == "sentence":
            return caption
        candidates = self.level_texts(caption)[level]
        if not candidates:
            return caption
        if level == "phrase":
            return candidates[int(rng.integers(len(candidates)))]
        # word level: a random non-empty subset of the noun/adjective runs, kept in caption order
        groups = self.level_texts(caption)["word_groups"]
        count = int(rng.integers(1, len(groups) + 1))
        chosen = np.sort(rng.choice(len(groups), size=count, replace=False))
        return " ".join(groups[i] for i in chosen)

    def choose_level(self, example: dict[str, Any]) -> str:
        """The MLA level of `example` at this step (uniform over `mla_levels`, from the example's seed)."""
        rng = self.example_rng(example, "mla-level")
        return self.mla_levels[int(rng.integers(len(self.mla_levels)))]

    def training_batch(self, examples: Sequence[dict[str, Any]]) -> BatchFeature:
        """
        Returns:
            `BatchFeature` with `pixel_values` `[N, 3, H, W]`, `input_ids` / `attention_mask` `[N, max_text_length]`,
            `person_ids` `[N]` and `mla_level_ids` `[N]` (index into `("sentence", "phrase", "word")`; the model
            ignores it), where N = B (`mla_mode="random"`) or 3B
            (`"all"`, grouped level by level).
        """
        if not self.use_mla:
            return super().training_batch(examples)
        self._check_examples(examples)
        if self.mla_mode == "random":
            plan = [(ex, self.choose_level(ex)) for ex in examples]
        else:
            plan = [(ex, level) for level in self.mla_levels for ex in examples]
        texts, seeds, levels = [], [], []
        for ex, level in plan:
            texts.append(self.level_text(ex["caption"], level, self.example_rng(ex, f"mla-text-{level}")))
            # each level gets its own augmented view of the image
            seeds.append(int(self.example_rng(ex, f"mla-image-{level}").integers(0, 2**31 - 1)))
            levels.append(level)
        text = self.encode_text(texts, return_tensors="pt")
        pixels = self.image_processor([ex["image"] for ex, _ in plan], augment=True, seeds=seeds)
        return BatchFeature(
            {
                "pixel_values": pixels["pixel_values"],
                "input_ids": text["input_ids"],
                "attention_mask": text["attention_mask"],
                "person_ids": torch.tensor([int(ex["label"]) for ex, _ in plan], dtype=torch.long),
                "mla_level_ids": torch.tensor([MLA_LEVELS.index(level) for level in levels], dtype=torch.long),
            }
        )


__all__ = ["IVTProcessor"]
