"""Shared base for the benchmark builders (CUHK-PEDES, ICFG-PEDES, RSTPReid, UFine6926, UFine3C).

Each benchmark is a `datasets.GeneratorBasedBuilder` that reads the JSON annotation file of the public release from
a folder the user downloaded by hand. `datasets` 5.x neither runs loading scripts nor reads
`manual_download_instructions`, so the builder checks its folder itself and raises `ManualDownloadError`.

All validation (keys, splits, captions, duplicates, images) happens in `_split_generators`, i.e. *before* anything is
written: errors surface as themselves (not wrapped in `DatasetGenerationError`) and a failed preparation leaves only
the `.incomplete` folder, which `datasets` deletes, so no later call can trust a half-written cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import datasets
from datasets.exceptions import ManualDownloadError
from PIL import Image as PILImage

logger = logging.getLogger(__name__)

# Split names as written in the release files -> `datasets` split names.
SPLIT_ALIASES: dict[str, str] = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
SPLIT_ORDER: tuple[str, ...] = ("train", "validation", "test")
SKIPPED_IMAGES_FILENAME = "tbps_skipped_images.json"


class BadImageError(ValueError):
    """A referenced image exists but cannot be decoded."""


@dataclass
class TBPSBuilderConfig(datasets.BuilderConfig):
    """Config of a benchmark builder.

    Args:
        annotation_file (`str`, *optional*): annotation JSON, absolute or relative to `data_dir`; defaults to the
            release's file name(s).
        skip_bad_images (`bool`): skip records whose image is missing or unreadable (counted and logged) instead of
            raising.
        annotation_fingerprint (`str`, *optional*): path and SHA-256 of the annotation file's bytes. Set by the
            builder so that it is part of the cache id: an edited annotation file is never served from a stale cache,
            even when an in-place edit keeps its size and modification time.
    """

    annotation_file: Optional[str] = None
    skip_bad_images: bool = False
    annotation_fingerprint: Optional[str] = None


def _fingerprint(path: Optional[str]) -> str:
    """``abspath|sha256`` of the annotation file. The content, not size + mtime: an edit in place that keeps both
    (a same-length fix, ``touch -r``, a copy preserving times) must still invalidate the cache. Hashing the
    largest release file (CUHK-PEDES, ~50 MB) costs a fraction of a second."""
    if path is None or not os.path.isfile(path):
        return "missing"
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{os.path.abspath(path)}|sha256:{digest.hexdigest()}"


def check_image(path: str) -> None:
    """Open and decode `path` (JPEG at reduced scale, so a truncated file is caught cheaply). Raises on failure."""
    with PILImage.open(path) as image:
        if image.format == "JPEG":
            image.draft(image.mode, (16, 16))  # decode at 1/8 scale: reads the whole stream, cheap
        image.load()


def _image_problem(path: str) -> Optional[str]:
    """None if `path` decodes, "missing" if it does not exist, else the decoder's complaint."""
    if not os.path.isfile(path):
        return "missing"
    try:
        check_image(path)
    except Exception as err:  # noqa: BLE001 - PIL raises several types (UnidentifiedImageError, OSError, SyntaxError)
        return f"{type(err).__name__}: {err}"
    return None


class TBPSBenchmarkBuilder(datasets.GeneratorBasedBuilder):
    """Base builder: one row per image with `image`, `person_id` (raw), `captions`, `file_path` (+ extra columns).

    Subclasses set the class attributes below; no subclass overrides any method.
    """

    BUILDER_CONFIG_CLASS = TBPSBuilderConfig
    VERSION = datasets.Version("1.0.0")

    DATASET_NAME: ClassVar[str] = ""
    PRETTY_NAME: ClassVar[str] = ""
    ANNOTATION_FILES: ClassVar[tuple[str, ...]] = ()  # accepted names, tried in order
    IMAGE_ROOT: ClassVar[str] = ""  # images live at data_dir/IMAGE_ROOT/<path in record>
    PATH_KEY: ClassVar[str] = "file_path"  # record key holding the image path
    ID_KEY: ClassVar[str] = "id"
    EXTRA_STRING_KEYS: ClassVar[tuple[str, ...]] = ()  # copied to string columns (UFine3C: source)
    ALLOWED_SPLITS: ClassVar[tuple[str, ...]] = ("train", "val", "test")  # split values allowed in the file
    RECORD_EXAMPLE: ClassVar[str] = ""
    HOMEPAGE: ClassVar[str] = ""
    REQUEST: ClassVar[str] = ""  # where to request the data
    CITATION: ClassVar[str] = ""
    DESCRIPTION: ClassVar[str] = ""
    LICENSE: ClassVar[str] = (
        "Research use only, under the terms of the authors' release agreement; obtained by request. "
        "No redistribution without the authors' permission."
    )
    # Published sizes, for `verify_dataset`: {"all"|split: {"identities", "images", "captions"}}.
    PUBLISHED_SIZES: ClassVar[dict[str, dict[str, int]]] = {}

    def __init__(self, *args, data_dir: Optional[str] = None, annotation_file: Optional[str] = None,
                 skip_bad_images: bool = False, **kwargs):
        self._annotation_path = self._resolve_annotation_path(data_dir, annotation_file)
        config_kwargs = {"annotation_fingerprint": _fingerprint(self._annotation_path)}
        if annotation_file is not None:
            config_kwargs["annotation_file"] = str(annotation_file)
        if skip_bad_images:
            config_kwargs["skip_bad_images"] = True
        if data_dir is not None:
            data_dir = os.path.abspath(os.path.expanduser(str(data_dir)))
        kwargs.setdefault("dataset_name", self.DATASET_NAME.replace("-", "_"))
        super().__init__(*args, data_dir=data_dir, **config_kwargs, **kwargs)
        self.skipped_images: list[str] = []

    # ------------------------------------------------------------------ files
    @classmethod
    def _resolve_annotation_path(cls, data_dir: Optional[str], annotation_file: Optional[str]) -> Optional[str]:
        if annotation_file is not None:
            path = os.path.expanduser(str(annotation_file))
            if not os.path.isabs(path) and data_dir is not None:
                path = os.path.join(os.path.expanduser(str(data_dir)), path)
            return path
        if data_dir is None:
            return None
        for candidate in cls.ANNOTATION_FILES:
            path = os.path.join(os.path.expanduser(str(data_dir)), candidate)
            if os.path.isfile(path):
                return path
        return None

    @classmethod
    def expected_layout(cls) -> str:
        image_dir = f"{cls.IMAGE_ROOT}/" if cls.IMAGE_ROOT else ""
        names = " (or ".join(cls.ANNOTATION_FILES) + ")" * (len(cls.ANNOTATION_FILES) - 1)
        return (
            f"  <data_dir>/\n"
            f"    {names}   a JSON list of records, e.g. {cls.RECORD_EXAMPLE}\n"
            f"    {image_dir}<{cls.PATH_KEY}>   the image of each record"
        )

    def _missing(self, what: str) -> ManualDownloadError:
        return ManualDownloadError(
            f"{self.PRETTY_NAME} ({self.DATASET_NAME}): {what}\n"
            f"This dataset is licensed for research and cannot be downloaded automatically. {self.REQUEST}\n"
            f"Then pass data_dir=<folder> laid out as:\n{self.expected_layout()}\n"
            f"(annotation_file= overrides the annotation file name.)"
        )

    def manual_download_instructions(self) -> str:  # read by older `datasets` only
        return f"{self.REQUEST}\nExpected layout:\n{self.expected_layout()}"

    # ------------------------------------------------------------------ datasets API
    def _info(self) -> datasets.DatasetInfo:
        features = {
            "image": datasets.Image(),
            "person_id": datasets.Value("int64"),
            "captions": datasets.List(datasets.Value("string")),
            "file_path": datasets.Value("string"),
        }
        for key in self.EXTRA_STRING_KEYS:
            features[key] = datasets.Value("string")
        return datasets.DatasetInfo(
            description=self.DESCRIPTION,
            features=datasets.Features(features),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            license=self.LICENSE,
        )

    def _split_generators(self, dl_manager):
        records = self.read_records()
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"records": records[split]})
            for split in SPLIT_ORDER
            if split in records
        ]

    def _generate_examples(self, records):
        for index, record in enumerate(records):
            yield index, record

    def _download_and_prepare(self, dl_manager, verification_mode, **prepare_split_kwargs):
        super()._download_and_prepare(dl_manager, verification_mode, **prepare_split_kwargs)
        # Written inside the `.incomplete` folder, so it is moved with the data (or deleted with it on failure).
        with open(os.path.join(self._output_dir, SKIPPED_IMAGES_FILENAME), "w", encoding="utf-8") as f:
            json.dump(self.skipped_images, f, indent=0)

    # ------------------------------------------------------------------ parsing
    def read_records(self) -> dict[str, list[dict[str, Any]]]:
        """Read and validate the annotation file; return `datasets` split name -> rows (image as absolute path).

        Raises `ManualDownloadError` (folder / annotation file missing), `ValueError` (malformed record, unknown
        split, empty captions, duplicate file path), `FileNotFoundError` / `BadImageError` (image missing /
        unreadable, unless `skip_bad_images`).
        """
        data_dir = self.config.data_dir
        if data_dir is None:
            raise self._missing("no data_dir given.")
        if not os.path.isdir(data_dir):
            raise self._missing(f"data_dir {data_dir!r} does not exist or is not a folder.")
        path = self._annotation_path
        if path is None or not os.path.isfile(path):
            tried = [path] if self.config.annotation_file else list(self.ANNOTATION_FILES)
            raise self._missing(f"annotation file not found: looked for {', '.join(map(str, tried))} in {data_dir!r}.")
        if _fingerprint(path) != self.config.annotation_fingerprint:
            raise RuntimeError(f"{path} changed while the builder was open; create the builder again.")

        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.DATASET_NAME}: {path} is not valid JSON: {err}") from None
        if not isinstance(raw, list):
            raise ValueError(f"{self.DATASET_NAME}: {path} must hold a JSON list of records, got {type(raw).__name__}")

        required = (self.ID_KEY, self.PATH_KEY, "captions", "split", *self.EXTRA_STRING_KEYS)
        image_root = os.path.join(data_dir, self.IMAGE_ROOT) if self.IMAGE_ROOT else data_dir
        records: dict[str, list[dict[str, Any]]] = {}
        seen_paths: dict[str, int] = {}
        skipped: list[str] = []
        rows: list[tuple[str, str, dict[str, Any]]] = []
        for index, record in enumerate(raw):
            where = f"{self.DATASET_NAME}: record {index} of {path}"
            if not isinstance(record, dict):
                raise ValueError(f"{where} is a {type(record).__name__}, expected an object with keys {required}")
            for key in required:
                if key not in record:
                    raise ValueError(f"{where} is missing key {key!r} (it has {sorted(record)})")

            split_value = record["split"]
            if split_value not in self.ALLOWED_SPLITS:
                raise ValueError(
                    f"{where} has unknown split {split_value!r}; expected one of {list(self.ALLOWED_SPLITS)}"
                )
            split = SPLIT_ALIASES[split_value]

            person_id = record[self.ID_KEY]
            if isinstance(person_id, str) and person_id.strip().lstrip("-").isdigit():
                person_id = int(person_id)
            if isinstance(person_id, bool) or not isinstance(person_id, int):
                raise ValueError(f"{where}: {self.ID_KEY!r} must be an integer, got {record[self.ID_KEY]!r}")

            captions = record["captions"]
            if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
                raise ValueError(f"{where}: 'captions' must be a list of strings, got {captions!r}")
            if not captions:
                raise ValueError(f"{where} has an empty caption list")
            for position, caption in enumerate(captions):
                if not caption.strip():
                    raise ValueError(
                        f"{where}: caption {position} is empty or whitespace only ({caption!r}); every query needs words"
                    )

            file_path = record[self.PATH_KEY]
            if not isinstance(file_path, str) or not file_path:
                raise ValueError(f"{where}: {self.PATH_KEY!r} must be a non-empty string, got {file_path!r}")
            normalized = os.path.normpath(file_path)
            if normalized in seen_paths:
                raise ValueError(
                    f"{where}: duplicate {self.PATH_KEY} {file_path!r} (also in record {seen_paths[normalized]})"
                )
            seen_paths[normalized] = index

            image_path = os.path.join(image_root, file_path)
            row = {"image": image_path, "person_id": person_id, "captions": captions, "file_path": file_path}
            for key in self.EXTRA_STRING_KEYS:
                row[key] = str(record[key])
            rows.append((where, split, row))

        # Decode-check every image; threads because PIL releases the GIL while decoding (tens of thousands of files).
        workers = max(1, min(32, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            problems = list(pool.map(_image_problem, [row["image"] for _, _, row in rows], chunksize=64))
        for (where, split, row), problem in zip(rows, problems):
            if problem is not None:
                error = FileNotFoundError if problem == "missing" else BadImageError
                message = (f"{where}: image {row['image']!r} does not exist" if problem == "missing"
                           else f"{where}: image {row['image']!r} cannot be read: {problem}")
                if not self.config.skip_bad_images:
                    raise error(message)
                skipped.append(row["image"])
                logger.debug("skipping: %s", message)
                continue
            records.setdefault(split, []).append(row)

        if not records:
            raise ValueError(f"{self.DATASET_NAME}: {path} holds no usable records")
        self.skipped_images = skipped
        if skipped:
            logger.warning(
                "%s: skipped %d record(s) whose image is missing or unreadable (first: %s)",
                self.DATASET_NAME, len(skipped), skipped[0],
            )
            self.info.description = (self.info.description or "") + (
                f"\nSkipped {len(skipped)} record(s) whose image is missing or unreadable."
            )
        return records
