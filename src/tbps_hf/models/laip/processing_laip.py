"""LAIP processor: the shared `TBPSProcessor` plus the masked noun phrases of Mask Phrase Modeling (§II-B2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature

from ...processing import TBPSProcessor
from .configuration_laip import MASK_MODES

_CACHE_SIZE = 200_000
IGNORE_INDEX = -100


class LAIPProcessor(TBPSProcessor):
    r"""
    [`TBPSProcessor`] whose `training_batch` adds, for every caption, its masked noun phrases (the input of
    BidirAtt and MPM):

    - noun phrases come from the shared phrase module (`tbps_hf.processing.phrases.PhraseChunker`: NLTK tagger
      when installed, else the lexicon tagger; `nltk.RegexpParser` chunks). Beyond `max_phrases_per_caption`
      a random subset is kept (in caption order);
    - in each phrase exactly one word, drawn uniformly, is replaced by `[MASK]` — all of its word pieces;
    - a phrase longer than `max_phrase_length` tokens is cut after its last whole word that fits (a first word
      longer than the room is cut to its first pieces) and the masked word is drawn among the words kept;
    - `mask_mode="sentence"` (the paper's MLM ablation) uses the whole caption instead, with
      `max(1, round(sentence_mask_ratio · words))` words masked, at `max_text_length`.

    Every draw uses the example's own generator (`example_rng(example, "laip-…")`), so a resumed run rebuilds the
    same batch. A caption without any noun phrase contributes none (its global losses still apply).

    Args:
        image_processor, tokenizer, max_text_length: see [`TBPSProcessor`].
        mask_mode (`str`): `"phrase"` or `"sentence"`.
        max_phrases_per_caption (`int`), max_phrase_length (`int`), sentence_mask_ratio (`float`): see
            [`LAIPConfig`].
        use_phrases (`bool`): add the phrase tensors (off when both BidirAtt and MPM are switched off).
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        max_text_length: int = 50,
        mask_mode: str = "phrase",
        max_phrases_per_caption: int = 4,
        max_phrase_length: int = 16,
        sentence_mask_ratio: float = 0.15,
        use_phrases: bool = True,
        **kwargs: Any,
    ):
        if mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {mask_mode!r}")
        if int(max_phrases_per_caption) < 1:
            raise ValueError(f"max_phrases_per_caption must be >= 1, got {max_phrases_per_caption}")
        if int(max_phrase_length) < 3:
            raise ValueError(f"max_phrase_length must be >= 3 ([CLS] word [SEP]), got {max_phrase_length}")
        self.mask_mode = mask_mode
        self.max_phrases_per_caption = int(max_phrases_per_caption)
        self.max_phrase_length = int(max_phrase_length)
        self.sentence_mask_ratio = float(sentence_mask_ratio)
        self.use_phrases = bool(use_phrases)
        self._chunker = None
        self._cache: dict[tuple[str, str], list[list[list[int]]]] = {}
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, max_text_length=max_text_length, **kwargs)

    @classmethod
    def from_config(cls, config: Any, captions: Sequence[str] | None = None, **kwargs: Any) -> "LAIPProcessor":
        kwargs.setdefault("mask_mode", config.mask_mode)
        kwargs.setdefault("max_phrases_per_caption", config.max_phrases_per_caption)
        kwargs.setdefault("max_phrase_length", config.max_phrase_length)
        kwargs.setdefault("sentence_mask_ratio", config.sentence_mask_ratio)
        kwargs.setdefault("use_phrases", bool(config.use_bidiratt or config.use_mpm))
        return super().from_config(config, captions=captions, **kwargs)

    @property
    def chunker(self):
        if self._chunker is None:
            from ...processing.phrases import PhraseChunker

            self._chunker = PhraseChunker()
        return self._chunker

    # ------------------------------------------------------------------ phrases → word pieces
    def units(self, caption: str) -> list[list[list[int]]]:
        """The caption's masking units as word-piece ids per word, `[unit][word] -> [piece ids]`: one unit per noun
        phrase (phrase mode), or one unit of the caption's words, punctuation left out (sentence mode)."""
        key = (self.mask_mode, caption)
        cached = self._cache.get(key)
        if cached is None:
            from ...processing.phrases import tokenize

            if self.mask_mode == "phrase":
                tokens, spans = self.chunker.noun_phrase_spans(caption)
                word_lists = [tokens[a:b] for a, b in spans]
            else:
                word_lists = [[t for t in tokenize(caption) if any(c.isalnum() for c in t)]]
            cached = []
            for words in word_lists:
                pieces = [self.tokenizer.encode(w, add_special_tokens=False) for w in words]
                pieces = [p for p in pieces if p]
                if pieces:
                    cached.append(pieces)
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = cached
        return cached

    def _build(self, words: list[list[int]], masked_words: set[int] | None, length: int):
        """`[CLS] pieces… [SEP]` cut to `length`; returns (ids, labels, kept word count)."""
        room = length - 2
        ids, word_of = [], []
        for w, pieces in enumerate(words):
            if len(ids) + len(pieces) > room:
                if not ids:  # a single word longer than the room: keep its first pieces
                    ids, word_of = list(pieces[:room]), [w] * room
                break
            ids.extend(pieces)
            word_of.extend([w] * len(pieces))
        kept = (word_of[-1] + 1) if word_of else 0
        return ids, word_of, kept

    def mask_unit(self, words: list[list[int]], rng: np.random.Generator, length: int) -> tuple[list[int], list[int]]:
        """Token ids and MPM labels of one unit with its masked word(s)."""
        ids, word_of, kept = self._build(words, None, length)
        if self.mask_mode == "phrase":
            chosen = {int(rng.integers(kept))}
        else:
            count = max(1, int(round(self.sentence_mask_ratio * kept)))
            chosen = {int(i) for i in rng.choice(kept, size=min(count, kept), replace=False)}
        tok = self.tokenizer
        labels = [IGNORE_INDEX] * len(ids)
        for position, w in enumerate(word_of):
            if w in chosen:
                labels[position] = ids[position]
                ids[position] = tok.mask_token_id
        return [tok.cls_token_id, *ids, tok.sep_token_id], [IGNORE_INDEX, *labels, IGNORE_INDEX]

    def phrase_batch(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """`phrase_input_ids` / `phrase_attention_mask` / `phrase_labels` `[P, Lp]` and `phrase_example_index` `[P]`
        for a list of examples (`caption`, `seed`); Lp = the longest unit (≥ 3)."""
        length = self.max_phrase_length if self.mask_mode == "phrase" else self.max_text_length
        rows, labels, index = [], [], []
        for i, ex in enumerate(examples):
            units = self.units(ex["caption"])
            if not units:
                continue
            if len(units) > self.max_phrases_per_caption:
                pick = self.example_rng(ex, "laip-phrases").choice(len(units), self.max_phrases_per_caption, replace=False)
                units = [units[j] for j in sorted(pick)]
            rng = self.example_rng(ex, "laip-mask")
            for words in units:
                ids, lab = self.mask_unit(words, rng, length)
                rows.append(ids)
                labels.append(lab)
                index.append(i)
        width = max([3, *(len(r) for r in rows)])
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        label_tensor = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for r, (ids, lab) in enumerate(zip(rows, labels)):
            input_ids[r, : len(ids)] = torch.tensor(ids)
            attention[r, : len(ids)] = 1
            label_tensor[r, : len(lab)] = torch.tensor(lab)
        return {
            "phrase_input_ids": input_ids,
            "phrase_attention_mask": attention,
            "phrase_labels": label_tensor,
            "phrase_example_index": torch.tensor(index, dtype=torch.long),
        }

    def phrase_inputs(self, caption: str, return_tensors: str = "pt") -> BatchFeature:
        """A caption's noun phrases for `LAIPModel.get_phrase_attention_maps`: each phrase with its last word (the
        head noun) masked, `labels` at those positions, and the phrase strings under `phrases` (not a tensor).

        Raises `ValueError` when the caption has no noun phrase."""
        units = self.units(caption) if self.mask_mode == "phrase" else None
        if self.mask_mode != "phrase":
            saved, self.mask_mode = self.mask_mode, "phrase"
            try:
                units = self.units(caption)
            finally:
                self.mask_mode = saved
        tokens, spans = self.chunker.noun_phrase_spans(caption)
        if not units:
            raise ValueError(f"no noun phrase found in {caption!r}")
        rows, labels = [], []
        for words in units:
            ids, word_of, kept = self._build(words, None, self.max_phrase_length)
            lab = [ids[p] if w == kept - 1 else IGNORE_INDEX for p, w in enumerate(word_of)]
            ids = [self.tokenizer.mask_token_id if w == kept - 1 else t for t, w in zip(ids, word_of)]
            rows.append([self.tokenizer.cls_token_id, *ids, self.tokenizer.sep_token_id])
            labels.append([IGNORE_INDEX, *lab, IGNORE_INDEX])
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        data = {
            "input_ids": [r + [pad] * (width - len(r)) for r in rows],
            "attention_mask": [[1] * len(r) + [0] * (width - len(r)) for r in rows],
            "labels": [lab + [IGNORE_INDEX] * (width - len(lab)) for lab in labels],
        }
        out = BatchFeature(data, tensor_type=return_tensors)
        out["phrases"] = [" ".join(tokens[a:b]) for a, b in spans][: len(rows)]
        return out

    # ------------------------------------------------------------------ training
    def training_batch(self, examples: Sequence[dict[str, Any]]) -> BatchFeature:
        """
        Returns:
            The base batch (`pixel_values` `[B, 3, H, W]`, `input_ids` / `attention_mask` `[B, max_text_length]`,
            `person_ids` `[B]`) plus, when `use_phrases`, `phrase_input_ids` / `phrase_attention_mask` /
            `phrase_labels` `[P, Lp]` and `phrase_example_index` `[P]` (see the class docstring).
        """
        batch = super().training_batch(examples)
        if self.use_phrases:
            batch.update(self.phrase_batch(examples))
        return batch


__all__ = ["LAIPProcessor", "IGNORE_INDEX"]
