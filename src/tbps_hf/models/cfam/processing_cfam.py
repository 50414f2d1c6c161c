"""CFAM processor: the shared person-crop / caption processor plus CFAM's text augmentation (§5.1: "Random masking
and replacement is employed for text augmentation")."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...processing import TBPSProcessor


class CFAMProcessor(TBPSProcessor):
    r"""
    [`TBPSProcessor`] whose `training_batch` also masks and replaces caption tokens.

    Image augmentation (random erasing, horizontal flip, crop with padding; §5.1) is the shared
    `PersonImageProcessor`'s. Text augmentation follows IRRA, the code base CFAM builds on: every word token (not a
    special or padding token) is chosen with probability `text_mask_probability`; a chosen token becomes the mask
    token with probability `mask_ratio`, a random non-special token with probability `replace_ratio`, and stays as
    it is otherwise (BERT's 80 / 10 / 10 split). The paper gives no rates; these are IRRA's.

    Args:
        image_processor, tokenizer, max_text_length: see [`TBPSProcessor`].
        text_mask_probability (`float`, defaults to 0.15): share of word tokens chosen for augmentation (0 disables).
        mask_ratio (`float`, defaults to 0.8), replace_ratio (`float`, defaults to 0.1): split of the chosen tokens.
        mask_token_id (`int`, *optional*): id written for "masked" tokens. Default: the tokenizer's mask token
            (WordPiece `[MASK]`); CLIP's tokenizer has none, so IRRA's convention is used: the last ordinary BPE id
            (`len(tokenizer) - 3`, i.e. 49405, which IRRA's tokenizer calls `<|mask|>`).

    All draws come from each example's generator (`example_rng(example, "tokens")`), so a batch is a pure
    function of the examples and their seeds.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        max_text_length: int = 168,
        text_mask_probability: float = 0.15,
        mask_ratio: float = 0.8,
        replace_ratio: float = 0.1,
        mask_token_id: int | None = None,
        **kwargs: Any,
    ):
        for name, value in (
            ("text_mask_probability", text_mask_probability),
            ("mask_ratio", mask_ratio),
            ("replace_ratio", replace_ratio),
        ):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if mask_ratio + replace_ratio > 1.0 + 1e-9:
            raise ValueError(f"mask_ratio + replace_ratio must be <= 1, got {mask_ratio} + {replace_ratio}")
        self.text_mask_probability = float(text_mask_probability)
        self.mask_ratio = float(mask_ratio)
        self.replace_ratio = float(replace_ratio)
        self.mask_token_id = mask_token_id
        super().__init__(image_processor, tokenizer, max_text_length=max_text_length, **kwargs)
        vocab = len(self.tokenizer)
        if mask_token_id is not None and not 0 <= int(mask_token_id) < vocab:
            raise ValueError(f"mask_token_id={mask_token_id} is outside the tokenizer's vocabulary [0, {vocab})")
        self._special_ids = np.array(sorted(set(self.tokenizer.all_special_ids)), dtype=np.int64)

    @property
    def resolved_mask_token_id(self) -> int:
        if self.mask_token_id is not None:
            return int(self.mask_token_id)
        if self.tokenizer.mask_token_id is not None:
            return int(self.tokenizer.mask_token_id)
        return len(self.tokenizer) - 3  # IRRA's <|mask|> id in CLIP's 49408-token vocabulary

    def _replacement_ids(self) -> np.ndarray:
        excluded = np.union1d(self._special_ids, [self.resolved_mask_token_id])
        return np.setdiff1d(np.arange(len(self.tokenizer), dtype=np.int64), excluded)

    def augment_input_ids(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, rngs: list[np.random.Generator]
    ) -> torch.Tensor:
        """Random masking / replacement of word tokens; `input_ids` `[B, L]`, `rngs[i]` example i's generator."""
        if self.text_mask_probability == 0.0:
            return input_ids
        ids = input_ids.clone().numpy()
        eligible = (attention_mask.numpy() > 0) & ~np.isin(ids, self._special_ids)
        replacements = self._replacement_ids()
        mask_id = self.resolved_mask_token_id
        for i, rng in enumerate(rngs):
            chosen = rng.random(ids.shape[1]) < self.text_mask_probability
            action = rng.random(ids.shape[1])
            random_ids = rng.choice(replacements, size=ids.shape[1])
            chosen &= eligible[i]
            to_mask = chosen & (action < self.mask_ratio)
            to_replace = chosen & (action >= self.mask_ratio) & (action < self.mask_ratio + self.replace_ratio)
            ids[i, to_mask] = mask_id
            ids[i, to_replace] = random_ids[to_replace]
        return torch.from_numpy(ids).to(input_ids.dtype)


__all__ = ["CFAMProcessor"]
