"""Views over one split (rows = images): training pairs and the evaluation gallery / queries.

Written once and used by every method. Images are decoded lazily, row by row, never all up front.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Optional

import datasets
import numpy as np
import torch
from PIL import Image as PILImage

from ..errors import TBPSUserError

# Scalar string columns whose value (per image) groups the image's queries, e.g. UFine3C's source domain.
GROUP_COLUMNS: tuple[str, ...] = ("source",)
# Columns `caption_<group>` holding one value per caption (ProcPEDES: caption_granularity, caption_style).
CAPTION_GROUP_PREFIX = "caption_"


def to_pil_rgb(value: Any) -> PILImage.Image:
    """A decoded PIL image, a `{"bytes", "path"}` dict (undecoded `Image` feature) or a path -> PIL RGB."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            value = PILImage.open(io.BytesIO(value["bytes"]))
        elif value.get("path"):
            value = PILImage.open(value["path"])
        else:
            raise ValueError("image dict has neither bytes nor path")
    elif isinstance(value, (str, bytes)) and not isinstance(value, PILImage.Image):
        value = PILImage.open(io.BytesIO(value) if isinstance(value, bytes) else value)
    if not isinstance(value, PILImage.Image):
        raise TypeError(f"cannot turn a {type(value).__name__} into an image")
    if value.mode == "RGB":
        return value
    if value.mode in ("RGBA", "LA") or (value.mode == "P" and "transparency" in value.info):
        # Composite on white: dropping alpha would expose arbitrary colours under transparent pixels.
        rgba = value.convert("RGBA")
        background = PILImage.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return value.convert("RGB")


def _columns(split_dataset, names: Sequence[str]) -> dict[str, list]:
    """Read columns without touching (decoding) the image column; respects `select`/`shuffle` index mappings."""
    return split_dataset.select_columns(list(names)).to_dict()


REBUILD_HINT = (
    "restore the file, or rebuild the dataset cache: `tbps evaluate ... --rebuild_cache`, `--dataset_options "
    "'{\"download_mode\": \"force_redownload\"}'` for training, or load_tbps_dataset(..., "
    "download_mode=\"force_redownload\"), with skip_bad_images=True to leave such records out"
)


class CachedImageError(TBPSUserError, OSError):
    """An image the dataset cache refers to has vanished or no longer decodes since the cache was built."""


class CachedImageMissingError(CachedImageError, FileNotFoundError):
    """The image file the dataset cache refers to no longer exists."""


class LazyImages(Sequence):
    """Read-only sequence of PIL RGB images, decoded on access from an `image` column.

    Benchmark caches store image *paths* (checked when the cache was built); a file that vanished or broke since
    raises :class:`CachedImageError` naming the row, the file and how to rebuild the cache.
    """

    def __init__(self, split_dataset, column: str = "image"):
        images = split_dataset.select_columns([column])
        feature = images.features.get(column)
        if isinstance(feature, datasets.Image) and feature.decode:
            # Undecoded {"bytes", "path"} rows: the decode happens here, where a failure can be named.
            images = images.cast_column(column, datasets.Image(decode=False))
        self._images = images
        self._column = column

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"image index {index} out of range for {len(self)} images")
        value = self._images[int(index)][self._column]
        try:
            image = to_pil_rgb(value)
            image.load()  # PIL opens lazily: a truncated file fails here, not later inside a worker
        except (OSError, SyntaxError, ValueError) as err:  # PIL's decoder errors (UnidentifiedImageError is an OSError)
            path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
            missing = isinstance(err, FileNotFoundError)
            problem = "no longer exists" if missing else f"cannot be read ({type(err).__name__}: {err})"
            error = CachedImageMissingError if missing else CachedImageError
            raise error(f"image of row {index} ({path or 'embedded bytes'}) {problem}; {REBUILD_HINT}") from err
        return image


class TrainingPairs(torch.utils.data.Dataset):
    """Image–caption pairs of a training split: one pair per caption, in row order then caption order.

    `pairs[i]` -> `{"image": PIL RGB, "caption": str, "label": int, "person_id": int, "pair_index": i}`.
    `label` is the contiguous training label `0..num_identities-1`, assigned by sorted raw `person_id`
    (what ID losses and `forward(person_ids=...)` expect).

    Attributes:
        labels (`list[int]`, length = number of pairs), captions (`list[str]`), person_ids (`list[int]`),
        image_index (`list[int]`, the row of each pair), num_identities (`int`),
        label_to_person_id (`list[int]`: label -> raw id), person_id_to_label (`dict`), seed (`int`, kept for the
        training loop, which derives per-example seeds from it; the pair order itself is deterministic).
    """

    def __init__(self, split_dataset, seed: int = 0):
        self.dataset = split_dataset
        self.seed = seed
        columns = _columns(split_dataset, ["person_id", "captions"])
        self.label_to_person_id: list[int] = sorted({int(p) for p in columns["person_id"]})
        self.person_id_to_label: dict[int, int] = {p: i for i, p in enumerate(self.label_to_person_id)}
        self.num_identities = len(self.label_to_person_id)
        self.captions: list[str] = []
        self.person_ids: list[int] = []
        self.image_index: list[int] = []
        for row, (person_id, captions) in enumerate(zip(columns["person_id"], columns["captions"])):
            for caption in captions:
                self.captions.append(caption)
                self.person_ids.append(int(person_id))
                self.image_index.append(row)
        self.labels: list[int] = [self.person_id_to_label[p] for p in self.person_ids]
        self._images = LazyImages(split_dataset)

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if index < 0:
            index += len(self)
        return {
            "image": self._images[self.image_index[index]],
            "caption": self.captions[index],
            "label": self.labels[index],
            "person_id": self.person_ids[index],
            "pair_index": index,
        }


class EvaluationView:
    """Gallery (one entry per image) and queries (one per caption) of an evaluation split.

    Attributes:
        gallery_images (`LazyImages`, length G): PIL RGB images, decoded on access.
        gallery_ids (`np.ndarray` int64 [G]): raw person id of each gallery image.
        queries (`list[str]`, length Q): every caption of every image, row order then caption order.
        query_ids (`np.ndarray` int64 [Q]): raw person id of each query.
        query_image_index (`np.ndarray` int64 [Q]): the gallery row each caption was written for.
        query_groups (`dict[str, list[str]]`): grouping name -> one value per query: `"source"` (UFine3C) from the
            image's column; `"<name>"` from a `caption_<name>` column aligned with `captions` (ProcPEDES:
            `granularity`, `style`).
        file_paths (`list[str]`, length G) when the split has a `file_path` column.
    """

    def __init__(self, split_dataset):
        self.dataset = split_dataset
        names = set(split_dataset.column_names)
        group_columns = [c for c in GROUP_COLUMNS if c in names]
        caption_columns = sorted(c for c in names if c.startswith(CAPTION_GROUP_PREFIX))
        wanted = ["person_id", "captions", *group_columns, *caption_columns]
        if "file_path" in names:
            wanted.append("file_path")
        columns = _columns(split_dataset, wanted)

        self.gallery_images = LazyImages(split_dataset)
        self.gallery_ids = np.asarray(columns["person_id"], dtype=np.int64)
        self.file_paths: Optional[list[str]] = columns.get("file_path")
        self.queries: list[str] = []
        query_ids: list[int] = []
        query_image_index: list[int] = []
        groups: dict[str, list[str]] = {c: [] for c in group_columns}
        groups.update({c[len(CAPTION_GROUP_PREFIX):]: [] for c in caption_columns})
        for row, captions in enumerate(columns["captions"]):
            self.queries.extend(captions)
            query_ids.extend([int(columns["person_id"][row])] * len(captions))
            query_image_index.extend([row] * len(captions))
            for c in group_columns:
                groups[c].extend([str(columns[c][row])] * len(captions))
            for c in caption_columns:
                values = columns[c][row]
                if not isinstance(values, list) or len(values) != len(captions):
                    raise ValueError(
                        f"row {row}: column {c!r} must hold one value per caption "
                        f"({len(captions)} captions, got {values!r})"
                    )
                groups[c[len(CAPTION_GROUP_PREFIX):]].extend(str(v) for v in values)
        self.query_ids = np.asarray(query_ids, dtype=np.int64)
        self.query_image_index = np.asarray(query_image_index, dtype=np.int64)
        self.query_groups: dict[str, list[str]] = groups

    @property
    def num_queries(self) -> int:
        return len(self.queries)

    @property
    def num_gallery(self) -> int:
        return len(self.gallery_ids)

    def group_indices(self, name: str) -> dict[str, np.ndarray]:
        """Query indices per value of grouping `name`, e.g. `{"CUHK-PEDES": array([...]), ...}` for `"source"`."""
        if name not in self.query_groups:
            raise KeyError(f"no query grouping {name!r}; available: {sorted(self.query_groups)}")
        values = np.asarray(self.query_groups[name])
        return {v: np.flatnonzero(values == v) for v in sorted(set(self.query_groups[name]))}

    def __repr__(self) -> str:
        return (
            f"EvaluationView(gallery={self.num_gallery}, queries={self.num_queries}, "
            f"identities={len(set(self.gallery_ids.tolist()))}, groups={sorted(self.query_groups)})"
        )
