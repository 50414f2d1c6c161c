"""Person-crop image processor shared by every tbps-hf method.

A `transformers` image processor on the PIL/NumPy backend (``PilBackend``), so it needs neither torchvision nor a
GPU. Evaluation: resize to ``size`` (height × width), rescale to [0, 1], normalize with ``image_mean`` /
``image_std``. Training (``augment=True``): the person re-identification recipe used by the TBPS papers —
random horizontal flip, pad-then-random-crop ("crop with padding") and random erasing — where **all** randomness
of image *i* comes from a NumPy generator seeded by ``seeds[i]`` so a resumed run reproduces its batches exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_base import BatchFeature
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs


class PersonImagesKwargs(ImagesKwargs, total=False):
    """Augmentation settings of :class:`PersonImageProcessor` (saved in ``preprocessor_config.json``).

    flip_probability (`float`): chance of a horizontal flip.
    crop_padding (`int`): pixels of zero padding on every side before a random crop back to ``size``
        (0 disables the crop).
    erasing_probability (`float`): chance of erasing one random rectangle (after normalization).
    erasing_scale (`tuple[float, float]`): range of the erased area as a share of the image area.
    erasing_ratio (`tuple[float, float]`): range of the erased rectangle's aspect ratio (height / width),
        sampled log-uniformly.
    erasing_value (`float`): value written into the erased rectangle, in normalized space (0.0 = the mean colour).
    """

    flip_probability: float | None
    crop_padding: int | None
    erasing_probability: float | None
    erasing_scale: list[float] | tuple[float, float] | None
    erasing_ratio: list[float] | tuple[float, float] | None
    erasing_value: float | None


class PersonImageProcessor(PilBackend):
    r"""
    Image processor for pedestrian crops.

    Args:
        size (`dict[str, int]`, *optional*, defaults to `{"height": 384, "width": 128}`):
            Output size; images are resized to exactly this (person crops are not aspect-preserved, as in the papers).
        image_mean / image_std (`tuple[float, float, float]`): normalization, ``(x / 255 - mean) / std``.
        resample (`PILImageResampling`, defaults to BICUBIC): resize filter.
        flip_probability, crop_padding, erasing_probability, erasing_scale, erasing_ratio, erasing_value:
            training augmentation, see :class:`PersonImagesKwargs`.

    Inputs: PIL images of any mode (RGBA / LA / P with transparency are composited on white; L, 1, CMYK, I;16 …
    converted to RGB), NumPy arrays ``[H, W]``, ``[H, W, C]`` or ``[C, H, W]`` with C in {1, 3, 4} (uint8 in
    [0, 255], or floats in [0, 1]), or torch tensors of the same layouts.

    Output: ``BatchFeature`` with ``pixel_values`` ``[B, 3, height, width]`` float32.
    """

    valid_kwargs = PersonImagesKwargs
    model_input_names = ["pixel_values"]

    resample = PILImageResampling.BICUBIC
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)
    size = {"height": 384, "width": 128}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    flip_probability = 0.5
    crop_padding = 10
    erasing_probability = 0.5
    erasing_scale = (0.02, 0.4)
    erasing_ratio = (0.3, 3.3)
    erasing_value = 0.0

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        # JSON round trips give lists; keep tuples so that equality after save/load is exact.
        self.erasing_scale = tuple(float(v) for v in self.erasing_scale)
        self.erasing_ratio = tuple(float(v) for v in self.erasing_ratio)
        if not 0.0 <= float(self.flip_probability) <= 1.0:
            raise ValueError(f"flip_probability must be in [0, 1], got {self.flip_probability}")
        if not 0.0 <= float(self.erasing_probability) <= 1.0:
            raise ValueError(f"erasing_probability must be in [0, 1], got {self.erasing_probability}")
        if int(self.crop_padding) < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if not (0 < self.erasing_scale[0] <= self.erasing_scale[1] <= 1):
            raise ValueError(f"erasing_scale must satisfy 0 < lo <= hi <= 1, got {self.erasing_scale}")
        if not (0 < self.erasing_ratio[0] <= self.erasing_ratio[1]):
            raise ValueError(f"erasing_ratio must satisfy 0 < lo <= hi, got {self.erasing_ratio}")
        if not (self.size.height and self.size.width):
            raise ValueError(f"size must give 'height' and 'width', got {dict(self.size)}")

    # ------------------------------------------------------------------ input conversion
    @staticmethod
    def to_rgb_image(image: Any, index: int = 0) -> Image.Image:
        """Convert one input (PIL / NumPy / torch) to an RGB PIL image; ``index`` names it in errors."""
        if image is None:
            raise ValueError(f"images[{index}] is None")
        if isinstance(image, Image.Image):
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                # Wide grey modes: scale to 8 bits by their own range instead of clipping.
                array = np.asarray(image, dtype=np.float64)
                hi = array.max() if array.size else 0.0
                array = array / hi * 255.0 if hi > 0 else array
                return Image.fromarray(array.clip(0, 255).astype(np.uint8)).convert("RGB")
            return image.convert("RGB")
        if hasattr(image, "detach") and hasattr(image, "numpy"):  # torch.Tensor, without importing torch here
            image = image.detach().cpu().numpy()
        if not isinstance(image, np.ndarray):
            raise TypeError(
                f"images[{index}] has unsupported type {type(image).__name__}; expected a PIL image, a NumPy array "
                "or a torch tensor"
            )
        array = image
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = np.moveaxis(array, 0, -1)  # channels-first -> channels-last
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise ValueError(
                f"images[{index}] has shape {tuple(image.shape)}; expected [H, W], [H, W, C] or [C, H, W] with "
                "C in {1, 3, 4}"
            )
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise ValueError(f"images[{index}] is empty (shape {tuple(image.shape)})")
        if array.dtype != np.uint8:
            array = np.asarray(array, dtype=np.float64)
            if not np.isfinite(array).all():
                raise ValueError(f"images[{index}] contains NaN or infinite values")
            if array.max() <= 1.0:  # float images are taken to be in [0, 1]
                array = array * 255.0
            array = np.round(array).clip(0, 255).astype(np.uint8)
        mode = "L" if array.ndim == 2 else ("RGBA" if array.shape[-1] == 4 else "RGB")
        return PersonImageProcessor.to_rgb_image(Image.fromarray(array, mode=mode), index)

    # ------------------------------------------------------------------ augmentation (NumPy, HWC float32)
    def _flip(self, array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < self.flip_probability:
            array = array[:, ::-1]
        return array

    def _pad_crop(self, array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        pad = int(self.crop_padding)
        if pad == 0:
            return array
        height, width = array.shape[:2]
        padded = np.pad(array, ((pad, pad), (pad, pad), (0, 0)), mode="constant", constant_values=0.0)
        top = int(rng.integers(0, 2 * pad + 1))
        left = int(rng.integers(0, 2 * pad + 1))
        return padded[top : top + height, left : left + width]

    def _erase(self, array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.erasing_probability:
            return array
        height, width = array.shape[:2]
        area = height * width
        log_ratio = (math.log(self.erasing_ratio[0]), math.log(self.erasing_ratio[1]))
        # Rejection sampling as in Zhong et al. (2020) "Random Erasing": up to 10 tries for a rectangle that fits.
        for _ in range(10):
            target = area * rng.uniform(self.erasing_scale[0], self.erasing_scale[1])
            ratio = math.exp(rng.uniform(*log_ratio))
            h = int(round(math.sqrt(target * ratio)))
            w = int(round(math.sqrt(target / ratio)))
            if 0 < h < height and 0 < w < width:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                array = array.copy()
                array[top : top + h, left : left + w] = self.erasing_value
                return array
        return array

    # ------------------------------------------------------------------ public entry point
    def preprocess(
        self,
        images: Any,
        augment: bool = False,
        seeds: Sequence[int] | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """
        Args:
            images: one image or a list of images (see the class docstring for accepted types).
            augment (`bool`): apply the training augmentation (flip → pad+crop → normalize → erase).
            seeds (`list[int]`, *optional*): one int per image; every random draw for image *i* comes from
                ``numpy.random.default_rng(seeds[i])``. Without seeds, augmentation uses fresh OS entropy
                (not reproducible).
            return_tensors: ``"pt"`` (default), ``"np"`` or ``None`` (list of arrays).
            kwargs: per-call overrides of any setting (``size``, ``image_mean``, ``flip_probability`` …).

        Returns:
            `BatchFeature` with ``pixel_values`` ``[B, 3, height, width]``.
        """
        if images is None:
            raise ValueError("images is None; pass a PIL image, an array or a list of them")
        if isinstance(images, (list, tuple)):
            images = list(images)
        else:
            images = [images]
        if len(images) == 0:
            raise ValueError("images is an empty list; pass at least one image")
        if seeds is not None:
            seeds = list(seeds)
            if len(seeds) != len(images):
                raise ValueError(f"seeds has {len(seeds)} entries but there are {len(images)} images")
            for i, seed in enumerate(seeds):
                if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
                    raise ValueError(f"seeds[{i}] must be a non-negative int, got {seed!r}")
        unknown = set(kwargs) - set(self.valid_kwargs.__annotations__)
        if unknown:
            raise TypeError(f"Unexpected keyword argument(s) for PersonImageProcessor: {sorted(unknown)}")

        # Per-call overrides without mutating self: a shallow copy with the overrides applied.
        settings = self
        if kwargs:
            settings = type(self)(**{**self.to_dict(), **kwargs})
        return settings._process(images, augment, seeds, return_tensors)

    def _process(self, images, augment, seeds, return_tensors) -> BatchFeature:
        height, width = int(self.size.height), int(self.size.width)
        mean = np.asarray(self.image_mean, dtype=np.float32).reshape(1, 1, -1)
        std = np.asarray(self.image_std, dtype=np.float32).reshape(1, 1, -1)
        resample = PILImageResampling(self.resample) if isinstance(self.resample, int) else self.resample
        outputs = []
        for index, image in enumerate(images):
            pil = self.to_rgb_image(image, index)
            if self.do_resize and pil.size != (width, height):
                pil = pil.resize((width, height), resample=resample)
            array = np.asarray(pil, dtype=np.float32)
            if self.do_rescale:
                array = array * np.float32(self.rescale_factor)
            rng = None
            if augment:
                rng = np.random.default_rng(None if seeds is None else int(seeds[index]))
                array = self._flip(array, rng)
                array = self._pad_crop(array, rng)
            if self.do_normalize:
                array = (array - mean) / std
            if augment:
                array = self._erase(array, rng)
            outputs.append(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))
        if return_tensors is not None and len({o.shape for o in outputs}) > 1:
            raise ValueError("images have different sizes after processing; set do_resize=True to stack them")
        data = {"pixel_values": np.stack(outputs) if return_tensors is not None else outputs}
        return BatchFeature(data=data, tensor_type=return_tensors)

    def __call__(self, images: Any, *args: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, *args, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["erasing_scale"] = list(self.erasing_scale)
        output["erasing_ratio"] = list(self.erasing_ratio)
        return output


__all__ = ["PersonImageProcessor", "PersonImagesKwargs"]
