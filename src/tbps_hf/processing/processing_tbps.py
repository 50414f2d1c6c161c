"""Base processor of every tbps-hf method: a :class:`PersonImageProcessor` plus a tokenizer."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, BatchFeature
from transformers.processing_utils import ProcessorMixin

from .image_processing_person import PersonImageProcessor
from .tokenization import train_wordpiece_tokenizer

REQUIRED_EXAMPLE_KEYS = ("image", "caption", "label", "seed")


class TBPSProcessor(ProcessorMixin):
    r"""
    Turns captions and person crops into model inputs, for inference (``__call__``) and training
    (``training_batch``).

    Args:
        image_processor ([`PersonImageProcessor`]): resizes / normalizes / augments person crops.
        tokenizer ([`PreTrainedTokenizerBase`]): any fast or slow tokenizer (a pretrained one, or a WordPiece
            tokenizer trained on the captions by :func:`train_wordpiece_tokenizer`).
        max_text_length (`int`, defaults to 100): the most tokens a caption may have, special tokens included (the
            models' text position tables). By default (and always in training) every caption becomes exactly this
            many tokens: longer ones are **truncated at the end** (the tokenizer keeps its closing special token,
            e.g. ``[CLS] w1 … w_{L-2} [SEP]``), shorter ones padded on the right with the pad token and a 0
            attention mask. ``processor(text, padding=True)`` pads to the batch's longest caption instead.

    How to subclass (one processor per method, e.g. ``IVTProcessor`` in ``models/ivt/processing_ivt.py``):

    1. ``class IVTProcessor(TBPSProcessor): pass`` is enough for a plain method. ``ProcessorMixin`` reads the
       sub-processors from the ``__init__`` signature (arguments whose names contain ``image_processor`` /
       ``tokenizer``), so if you override ``__init__`` keep ``image_processor``, ``tokenizer`` and
       ``max_text_length`` as named parameters and add each extra setting as a named keyword parameter with a
       JSON-serializable default (it is then saved in ``processor_config.json`` and passed back on load).
       Set it on ``self`` **before** calling ``super().__init__``.
    2. Register it: ``AutoProcessor.register(IVTConfig, IVTProcessor)`` (``tbps_hf.models.register_method`` does
       this). The image processor is already registered with ``AutoImageProcessor`` by ``tbps_hf.processing``
       and the tokenizer is saved as ``tokenizer.json`` (loaded by ``AutoTokenizer``), so
       ``processor.save_pretrained(d)`` → ``AutoProcessor.from_pretrained(d)`` works with no ``trust_remote_code``.
    3. Training-time text/image randomness: override the hooks rather than ``training_batch`` when possible:
       - ``augment_caption(caption, rng) -> str`` (string level, e.g. choosing a phrase),
       - ``augment_input_ids(input_ids, attention_mask, rngs) -> input_ids`` (token level, e.g. CFAM's random
         masking / replacement; ``rngs[i]`` is example *i*'s generator),
       - ``image_seed(example) -> int`` (seed of the image augmentation).
       Each hook receives generators from ``example_rng(example, stream)``: a ``numpy.random.Generator`` seeded by
       ``(example["seed"], stream)``, so different hooks never share random draws and a resumed run reproduces
       the same batch. A method that builds several views per example (IVT's multi-level alignment) overrides
       ``training_batch`` and uses ``encode_text`` / ``image_processor(images, augment=True, seeds=...)``
       with ``example_rng`` / ``image_seed``.
    4. Optionally override ``from_config`` to read method-specific config fields (call ``super().from_config``
       or ``cls._build_components(config, captions)``).
    """

    # Pretend-attributes declared for type checkers; ProcessorMixin sets them in __init__.
    image_processor: PersonImageProcessor

    def __init__(self, image_processor=None, tokenizer=None, max_text_length: int = 100, **kwargs: Any):
        if image_processor is None:
            raise ValueError(f"{type(self).__name__} needs an image_processor (a PersonImageProcessor)")
        if tokenizer is None:
            raise ValueError(f"{type(self).__name__} needs a tokenizer")
        if isinstance(max_text_length, bool) or not isinstance(max_text_length, int) or max_text_length < 2:
            raise ValueError(f"max_text_length must be an int >= 2 (room for the special tokens), got {max_text_length!r}")
        self.max_text_length = int(max_text_length)
        super().__init__(image_processor, tokenizer, **kwargs)
        if self.tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token before building the processor")

    # ------------------------------------------------------------------ inference
    def encode_text(
        self,
        text: str | Sequence[str],
        return_tensors: str | None = "pt",
        padding: bool | str = "max_length",
        truncation: bool | str = True,
        max_length: int | None = None,
        **tokenizer_kwargs: Any,
    ) -> BatchFeature:
        """Tokenize captions to ``input_ids`` / ``attention_mask`` ``[B, L]``.

        Args:
            text: a caption or a list of captions.
            padding: ``"max_length"`` (default: ``L = max_length``, what training uses), ``True`` / ``"longest"``
                (``L`` = the longest caption of the batch: fewer tokens, same features, used for evaluation) or
                ``False`` (no padding; only with ``return_tensors=None`` when lengths differ).
            truncation: cut captions longer than ``max_length`` at the end (the closing special token is kept).
                With ``False`` a caption that does not fit is an error naming it.
            max_length: defaults to ``max_text_length``, which it may not exceed (the models' text position
                tables have that many positions).
            tokenizer_kwargs: other tokenizer arguments (``pad_to_multiple_of``, ``padding_side``,
                ``add_special_tokens``, ``return_length`` …).

        Raises `ValueError` for an empty or whitespace-only caption, naming its index.
        """
        texts = [text] if isinstance(text, str) else text
        if texts is None or not isinstance(texts, (list, tuple)):
            raise TypeError(f"text must be a str or a list of str, got {type(text).__name__}")
        if len(texts) == 0:
            raise ValueError("text is an empty list; pass at least one caption")
        for i, caption in enumerate(texts):
            if not isinstance(caption, str):
                raise TypeError(f"text[{i}] must be a str, got {type(caption).__name__}")
            if not caption.strip():
                raise ValueError(f"text[{i}] is empty (or whitespace only); every query needs words")
        if max_length is None:
            max_length = self.max_text_length
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 2 <= max_length <= self.max_text_length:
            raise ValueError(
                f"max_length must be an int in [2, max_text_length={self.max_text_length}] (the model's text "
                f"positions), got {max_length!r}"
            )
        tokenizer_kwargs.setdefault("return_token_type_ids", False)
        encoded = self.tokenizer(
            list(texts),
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            return_tensors=None,
            **tokenizer_kwargs,
        )
        for i, ids in enumerate(encoded["input_ids"]):
            if len(ids) > self.max_text_length:
                raise ValueError(
                    f"text[{i}] has {len(ids)} tokens, more than max_text_length={self.max_text_length}; "
                    "pass truncation=True or shorten it"
                )
        return BatchFeature(dict(encoded), tensor_type=return_tensors)

    def _tokenizer_kwarg_names(self) -> set[str]:
        from transformers.processing_utils import TextKwargs

        return set(TextKwargs.__annotations__) - {"return_tensors"}

    def _image_kwarg_names(self) -> set[str]:
        return set(self.image_processor.valid_kwargs.__annotations__) - {"return_tensors"} | {"augment", "seeds"}

    def _split_kwargs(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Route keyword arguments as transformers' processors do: tokenizer arguments to the tokenizer, image
        arguments to the image processor (``text_kwargs={...}`` / ``images_kwargs={...}`` say it explicitly)."""
        text_kwargs = dict(kwargs.pop("text_kwargs", None) or {})
        images_kwargs = dict(kwargs.pop("images_kwargs", None) or {})
        text_names, image_names = self._tokenizer_kwarg_names(), self._image_kwarg_names()
        unknown = []
        for name, value in kwargs.items():
            if name in text_names:
                text_kwargs[name] = value
            elif name in image_names:
                images_kwargs[name] = value
            else:
                unknown.append(repr(name))
        unknown += [f"text_kwargs[{n!r}]" for n in text_kwargs if n not in text_names]
        unknown += [f"images_kwargs[{n!r}]" for n in images_kwargs if n not in image_names]
        if unknown:
            import difflib

            guesses = [g for n in unknown for g in difflib.get_close_matches(n.strip("'"), text_names | image_names, 1)]
            hint = f" (did you mean {', '.join(map(repr, guesses))}?)" if guesses else ""
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword argument(s) {', '.join(unknown)}{hint}: neither the tokenizer "
                "(padding, truncation, max_length, pad_to_multiple_of, …) nor the image processor (augment, seeds, "
                f"size, {', '.join(sorted(n for n in image_names if 'erasing' in n or n == 'flip_probability'))}, …) "
                "takes it"
            )
        return text_kwargs, images_kwargs

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        images: Any = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """
        The processor contract of transformers (as ``CLIPProcessor``).

        Args:
            text: a caption or a list of captions (queries).
            images: a person crop or a list of them (PIL / NumPy / torch, see `PersonImageProcessor`).
            return_tensors: ``"pt"`` (default) or ``"np"``.
            kwargs: tokenizer arguments (``padding``, ``truncation``, ``max_length``, ``pad_to_multiple_of`` …, see
                :meth:`encode_text`; default: pad / truncate to ``max_text_length``) go to the tokenizer, image
                arguments (``augment=True, seeds=[...]``, ``size`` …) to the image processor; ``text_kwargs={...}``
                / ``images_kwargs={...}`` route explicitly. An argument neither takes raises `TypeError` naming it.

        Returns:
            `BatchFeature` with ``input_ids`` / ``attention_mask`` ``[T, L]`` (when ``text`` is given; ``L`` =
            ``max_text_length`` by default, the longest caption with ``padding=True``) and ``pixel_values``
            ``[I, 3, H, W]`` (when ``images`` is given).
        """
        text_kwargs, images_kwargs = self._split_kwargs(kwargs)
        if text is None and images is None:
            raise ValueError("pass text, images or both")
        data: dict[str, Any] = {}
        if text is not None:
            data.update(self.encode_text(text, return_tensors=return_tensors, **text_kwargs))
        if images is not None:
            data.update(self.image_processor(images, return_tensors=return_tensors, **images_kwargs))
        return BatchFeature(data, tensor_type=return_tensors)

    # ------------------------------------------------------------------ training
    @staticmethod
    def example_rng(example: dict[str, Any], stream: str) -> np.random.Generator:
        """Generator for one example and one named purpose, seeded by ``(example["seed"], crc32(stream))``."""
        return np.random.default_rng([int(example["seed"]), zlib.crc32(stream.encode("utf-8"))])

    def image_seed(self, example: dict[str, Any]) -> int:
        """Seed of the image augmentation of ``example`` (derived from its ``"seed"``)."""
        return int(self.example_rng(example, "image").integers(0, 2**31 - 1))

    def augment_caption(self, caption: str, rng: np.random.Generator) -> str:
        """Hook: string-level caption augmentation (default: none)."""
        return caption

    def augment_input_ids(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, rngs: list[np.random.Generator]
    ) -> torch.Tensor:
        """Hook: token-level augmentation of ``input_ids`` ``[B, L]`` (default: none). ``rngs[i]`` is example i's."""
        return input_ids

    def _check_examples(self, examples: Sequence[dict[str, Any]]) -> None:
        if not isinstance(examples, (list, tuple)) or len(examples) == 0:
            raise ValueError("training_batch needs a non-empty list of example dicts")
        for i, example in enumerate(examples):
            if not isinstance(example, dict):
                raise TypeError(f"examples[{i}] must be a dict, got {type(example).__name__}")
            missing = [k for k in REQUIRED_EXAMPLE_KEYS if k not in example]
            if missing:
                raise KeyError(f"examples[{i}] lacks key(s) {missing} (needs {list(REQUIRED_EXAMPLE_KEYS)})")
            seed = example["seed"]
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
                raise ValueError(f"examples[{i}]['seed'] must be a non-negative int, got {seed!r}")

    def training_batch(self, examples: Sequence[dict[str, Any]]) -> BatchFeature:
        """
        Build one training batch from ``TrainingPairs`` examples (each with a ``"seed"`` added by the loop).

        Returns:
            `BatchFeature` with ``pixel_values`` ``[B, 3, H, W]`` (augmented), ``input_ids`` / ``attention_mask``
            ``[B, max_text_length]`` and ``person_ids`` ``[B]`` (LongTensor of each example's ``"label"``).
        """
        self._check_examples(examples)
        captions = [self.augment_caption(ex["caption"], self.example_rng(ex, "caption")) for ex in examples]
        text = self.encode_text(captions, return_tensors="pt")
        input_ids = self.augment_input_ids(
            text["input_ids"], text["attention_mask"], [self.example_rng(ex, "tokens") for ex in examples]
        )
        pixels = self.image_processor(
            [ex["image"] for ex in examples], augment=True, seeds=[self.image_seed(ex) for ex in examples]
        )
        return BatchFeature(
            {
                "pixel_values": pixels["pixel_values"],
                "input_ids": input_ids,
                "attention_mask": text["attention_mask"],
                "person_ids": torch.tensor([int(ex["label"]) for ex in examples], dtype=torch.long),
            }
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def _build_components(cls, config: Any, captions: Sequence[str] | None = None):
        """Image processor and tokenizer for ``config`` (a `TBPSConfig`)."""
        height, width = (int(v) for v in config.image_size)
        image_processor = PersonImageProcessor(
            size={"height": height, "width": width},
            image_mean=tuple(config.image_mean),
            image_std=tuple(config.image_std),
        )
        if getattr(config, "tokenizer_name", None):
            tokenizer = AutoTokenizer.from_pretrained(config.tokenizer_name)
        else:
            if captions is None:
                raise ValueError(
                    f"{cls.__name__}.from_config: config.tokenizer_name is None, so a WordPiece tokenizer is trained "
                    "on the training captions; pass captions=..."
                )
            tokenizer = train_wordpiece_tokenizer(captions, vocab_size=int(config.vocab_size))
        return image_processor, tokenizer

    @classmethod
    def from_config(cls, config: Any, captions: Sequence[str] | None = None, **kwargs: Any) -> "TBPSProcessor":
        """Build the processor for ``config``: image size / mean / std and ``max_text_length`` from the config;
        tokenizer from ``config.tokenizer_name`` or trained on ``captions`` (then set ``config.vocab_size =
        len(processor.tokenizer)``)."""
        image_processor, tokenizer = cls._build_components(config, captions)
        return cls(
            image_processor=image_processor,
            tokenizer=tokenizer,
            max_text_length=int(config.max_text_length),
            **kwargs,
        )

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]


__all__ = ["TBPSProcessor"]
