"""Shared processing: person image processor, base processor, phrase chunker, tokenizer training.

Importing this package registers :class:`PersonImageProcessor` with ``AutoImageProcessor`` (under the base
``TBPSConfig``), so a saved ``preprocessor_config.json`` naming it loads without ``trust_remote_code``.
"""

from transformers import AutoImageProcessor

from ..configuration_utils import TBPSConfig
from .image_processing_person import PersonImageProcessor, PersonImagesKwargs
from .phrases import (
    LexiconTagger,
    NLTKTagger,
    PhraseChunker,
    default_tagger,
    noun_phrases,
    nouns_and_adjectives,
    split_phrases,
)
from .processing_tbps import TBPSProcessor
from .tokenization import SPECIAL_TOKENS, train_wordpiece_tokenizer

# Needed: without it AutoImageProcessor cannot resolve "image_processor_type": "PersonImageProcessor".
AutoImageProcessor.register(TBPSConfig, image_processor_classes={"pil": PersonImageProcessor}, exist_ok=True)

__all__ = [
    "PersonImageProcessor",
    "PersonImagesKwargs",
    "TBPSProcessor",
    "train_wordpiece_tokenizer",
    "SPECIAL_TOKENS",
    "PhraseChunker",
    "LexiconTagger",
    "NLTKTagger",
    "default_tagger",
    "noun_phrases",
    "nouns_and_adjectives",
    "split_phrases",
]
