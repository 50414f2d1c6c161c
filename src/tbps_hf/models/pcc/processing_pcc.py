"""Processor of PCC: the shared person-crop processor and tokenizer, with the paper's augmentation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...processing import TBPSProcessor


class PCCProcessor(TBPSProcessor):
    r"""
    [`TBPSProcessor`] for PCC. §4.1 of the paper: training images are resized to 384x128 and *randomly flipped
    horizontally* — no crop-with-padding or random erasing and no text augmentation, so
    :meth:`from_config` builds the image processor with only the flip enabled.
    """

    @classmethod
    def _build_components(cls, config: Any, captions: Sequence[str] | None = None):
        image_processor, tokenizer = super()._build_components(config, captions)
        image_processor.flip_probability = 0.5
        image_processor.crop_padding = 0
        image_processor.erasing_probability = 0.0
        return image_processor, tokenizer


__all__ = ["PCCProcessor"]
