"""Batched encoding with progress, and a FAISS gallery index for text → person-crop search.

Any dual-encoder ``TBPSPreTrainedModel`` can be indexed: ``model.index_features(features)`` maps its (possibly
structured) features to vectors whose inner products equal ``model.similarity``, so an exact inner-product FAISS
index (``IndexFlatIP``) returns the same top-k as the model's own similarity.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .modeling_utils import Features, cat_features, map_features, slice_features

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
META_FILE = "gallery.json"


def _faiss():
    try:
        import faiss
    except ImportError as err:  # optional dependency (extra "faiss")
        raise ImportError("GalleryIndex needs FAISS: `pip install faiss-cpu` (or `pip install tbps-hf[faiss]`)") from err
    return faiss


def _model_device(model: torch.nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def load_image(image: Any) -> Image.Image:
    """A PIL RGB image from a PIL image, a path, or an array ``[H, W, 3]`` (uint8)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as img:
            return img.convert("RGB")
    if isinstance(image, np.ndarray):
        return Image.fromarray(image).convert("RGB")
    raise TypeError(f"Expected a PIL image, a path or a numpy array, got {type(image).__name__}")


def _encode(model, batches: Iterable, num_items: int, progress: bool, desc: str, prepare, run, num_workers=0) -> Features:
    """``prepare(batch)`` → model inputs (host side), ``run(inputs)`` → features; with ``num_workers`` the next
    batches are prepared in threads while the model runs on the current one."""
    was_training = model.training
    model.eval()
    chunks = []
    prepared = _prefetched(prepare, batches, num_workers) if num_workers else ((len(b), prepare(b)) for b in batches)
    try:
        with torch.inference_mode(), tqdm(total=num_items, desc=desc, unit="item", disable=not progress) as bar:
            for size, inputs in prepared:
                # Keep results on CPU: galleries can be much larger than the accelerator's spare memory.
                chunks.append(map_features(run(inputs), lambda t: t.detach().to("cpu")))
                bar.update(size)
    finally:
        prepared.close()  # stops the prefetching threads when the model raised
        model.train(was_training)
    return cat_features(chunks)


def _prefetched(prepare, batches: Iterable, num_workers: int):
    """Yield ``(len(batch), prepare(batch))`` in order, keeping up to ``2 * num_workers`` batches in preparation.

    Threads rather than DataLoader processes: PIL decoding/resizing releases the GIL, nothing has to be pickled
    (lazy dataset views, in-memory images), and errors surface in order with their original traceback.
    """
    pool = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="tbps-prepare")
    pending: deque = deque()
    try:
        for batch in batches:
            pending.append((len(batch), pool.submit(prepare, batch)))
            if len(pending) > 2 * num_workers:
                size, future = pending.popleft()
                yield size, future.result()
        while pending:
            size, future = pending.popleft()
            yield size, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ranges(num_items: int, batch_size: int):
    for start in range(0, num_items, batch_size):
        yield range(start, min(start + batch_size, num_items))


def _batches(items: Sequence, batch_size: int):
    for positions in _ranges(len(items), batch_size):
        yield [items[i] for i in positions]


def encode_texts(
    model,
    processor,
    texts: Sequence[str],
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> Features:
    """Encode captions in batches with ``model.get_text_features``.

    Captions are batched by length and each batch is padded only to its longest caption
    (``processor(text, padding=True, truncation=True)``) rather than to ``max_text_length``: the models mask
    padding, so the features are those of full-length padding, for a fraction of the tokens.

    Returns the features of all ``texts`` in their given order (a ``[N, d]`` tensor or the model's feature
    structure, batch first) on CPU.
    """
    if isinstance(texts, str):
        texts = [texts]
    if len(texts) == 0:
        raise ValueError("encode_texts got no texts")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = _model_device(model, device)
    model.to(device)
    # Similar lengths in a batch → little padding. Word count is a cheap stand-in for the token count.
    order = sorted(range(len(texts)), key=lambda i: len(str(texts[i]).split()))

    def prepare(batch):
        return processor(text=list(batch), padding=True, truncation=True, return_tensors="pt")

    def run(inputs):
        return model.get_text_features(
            input_ids=inputs["input_ids"].to(device), attention_mask=inputs["attention_mask"].to(device)
        )

    # Tokenizing is cheap, and fast tokenizers must not be called from several threads at once: no prefetch here.
    batches = _batches([texts[i] for i in order], batch_size)
    features = _encode(model, batches, len(texts), progress, "Encoding texts", prepare, run)
    if order == sorted(order):
        return features
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return slice_features(features, inverse)


def encode_images(
    model,
    processor,
    images: Sequence[Any],
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = True,
    num_workers: int | None = None,
) -> Features:
    """Encode person crops (PIL images, paths or arrays; any indexable sequence, e.g. a lazy view) in batches.

    ``num_workers``: threads that load and preprocess the next batches while the model runs (``None``: 4 when the
    model runs on an accelerator, 0 on CPU, where those threads would compete with the model for the cores).

    Returns the features of all ``images`` (a ``[N, d]`` tensor or the model's feature structure) on CPU.
    """
    if len(images) == 0:
        raise ValueError("encode_images got no images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = _model_device(model, device)
    model.to(device)

    if num_workers is None:
        num_workers = 0 if device.type == "cpu" else 4
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")

    def prepare(positions: range):  # reading the items here too: a lazy dataset view decodes on access
        return processor(images=[load_image(images[i]) for i in positions], return_tensors="pt")["pixel_values"]

    def run(pixel_values):
        return model.get_image_features(pixel_values=pixel_values.to(device, non_blocking=True))

    return _encode(
        model, _ranges(len(images), batch_size), len(images), progress, "Encoding images", prepare, run, num_workers
    )


def _is_features(obj: Any) -> bool:
    """Tensor / structured features (a dataclass or ``ModelOutput``), as opposed to a sequence of images or texts."""
    return isinstance(obj, (torch.Tensor, np.ndarray, Mapping)) or dataclasses.is_dataclass(obj)


@dataclass
class SkippedFile:
    path: str
    reason: str


@dataclass
class FolderIndexReport:
    """What :meth:`GalleryIndex.from_folder` did: files indexed and files that could not be read."""

    num_indexed: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)


class GalleryIndex:
    """A FAISS inner-product index over ``model.index_features`` of gallery images, with the gallery's ids/paths.

    Args:
        model: the (dual-encoder) model; needed to add raw images or search with raw texts, and to map features.
        processor: its processor (for raw images/texts).
        ivf_nlist: ``None`` for an exact ``IndexFlatIP`` (default); an int builds an ``IndexIVFFlat`` with that many
            lists (approximate, for very large galleries), trained on the first block added (needs >= ``ivf_nlist``
            vectors in that block).
        nprobe: lists visited per query for IVF.
        batch_size / device / progress: used when encoding raw images or texts.

    Example::

        index = GalleryIndex(model, processor)
        index.add(images, ids=paths)
        scores, indices = index.search(["a woman in a red coat"], k=10)
        index.ids[indices[0, 0]]
    """

    def __init__(
        self,
        model=None,
        processor=None,
        ivf_nlist: int | None = None,
        nprobe: int = 16,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        progress: bool = False,
    ):
        self.model = model
        self.processor = processor
        self.ivf_nlist = ivf_nlist
        self.nprobe = nprobe
        self.batch_size = batch_size
        self.device = device
        self.progress = progress
        self.index = None  # created on the first add (the dimension is known then)
        self.ids: list[Any] = []
        self.metadata: dict[str, Any] = {}

    def __len__(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    @property
    def dim(self) -> int | None:
        return None if self.index is None else int(self.index.d)

    def _require_model(self, what: str):
        if self.model is None:
            raise ValueError(f"GalleryIndex needs a model to {what}; pass model= (and processor=) when creating it")
        if self.processor is None and what.startswith("encode"):
            raise ValueError(f"GalleryIndex needs a processor to {what}; pass processor= when creating it")

    def _vectors(self, features: Features) -> np.ndarray:
        if isinstance(features, np.ndarray):
            vectors = features
        else:
            if self.model is None:
                if not isinstance(features, torch.Tensor):
                    raise ValueError("Structured features need the model (for index_features); pass model=")
                vectors = features.detach().float().cpu().numpy()
            else:
                vectors = self.model.index_features(features).detach().float().cpu().numpy()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"Index vectors must be [N, d], got shape {vectors.shape}")
        return vectors

    def _create(self, dim: int, first_block: np.ndarray):
        faiss = _faiss()
        if self.ivf_nlist is None:
            self.index = faiss.IndexFlatIP(dim)
            return
        if first_block.shape[0] < self.ivf_nlist:
            raise ValueError(
                f"An IVF index with ivf_nlist={self.ivf_nlist} needs at least that many vectors in the first add, got "
                f"{first_block.shape[0]}; add the whole gallery at once or use ivf_nlist=None (exact search)"
            )
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, self.ivf_nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(first_block)
        index.nprobe = self.nprobe
        self._quantizer = quantizer  # keep the Python reference alive alongside the index
        self.index = index

    def add_vectors(self, vectors: np.ndarray, ids: Sequence[Any] | None = None) -> None:
        """Add precomputed index vectors ``[N, d]`` (already mapped by ``index_features``)."""
        vectors = self._vectors(vectors)
        ids = list(range(len(self), len(self) + vectors.shape[0])) if ids is None else list(ids)
        if len(ids) != vectors.shape[0]:
            raise ValueError(f"Got {vectors.shape[0]} gallery items but {len(ids)} ids")
        if self.index is None:
            self._create(vectors.shape[1], vectors)
        elif vectors.shape[1] != self.index.d:
            raise ValueError(f"Vectors have dimension {vectors.shape[1]}, the index has {self.index.d}")
        self.index.add(vectors)
        self.ids.extend(ids)

    def add(self, items: Any, ids: Sequence[Any] | None = None) -> None:
        """Add gallery items: raw images (a sequence of PIL images / paths / arrays, encoded with the model), image
        features (a tensor or the model's feature structure, mapped with ``model.index_features``), or a numpy array
        of index vectors ``[N, d]`` used as is.

        ``ids`` (one per item, JSON-serializable: person ids, file paths …) default to running positions.
        """
        if _is_features(items):
            self.add_vectors(self._vectors(items), ids)
            return
        self._require_model("encode images")
        features = encode_images(self.model, self.processor, items, self.batch_size, self.device, self.progress)
        self.add_vectors(self._vectors(features), ids)

    def search(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k gallery items per query.

        Args:
            queries: a string, a list of strings (encoded with the model), text features ``[Q, ...]`` (a tensor or
                the model's feature structure, mapped with ``model.index_features``), or a numpy array of index
                vectors ``[Q, d]`` used as is.
            k: results per query (clipped to the gallery size).

        Returns:
            ``scores`` float32 ``[Q, k]`` (the model's similarity, descending) and ``indices`` int64 ``[Q, k]``
            (positions in ``self.ids``).
        """
        if self.index is None or len(self) == 0:
            raise ValueError("The gallery index is empty; add images first")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if isinstance(queries, str):
            queries = [queries]
        if not _is_features(queries):
            queries = list(queries)
            if not queries or not all(isinstance(q, str) for q in queries):
                raise ValueError("search expects a string, a non-empty list of strings, or text features")
            self._require_model("encode texts")
            queries = encode_texts(self.model, self.processor, list(queries), self.batch_size, self.device, False)
        vectors = self._vectors(queries)
        if vectors.shape[1] != self.index.d:
            raise ValueError(f"Query vectors have dimension {vectors.shape[1]}, the index has {self.index.d}")
        scores, indices = self.index.search(vectors, min(k, len(self)))
        return scores, indices.astype(np.int64)

    def lookup(self, indices: np.ndarray) -> list:
        """The ids/paths of ``indices`` (as returned by :meth:`search`; -1 for empty IVF slots → ``None``)."""
        return [[self.ids[i] if i >= 0 else None for i in row] for row in np.asarray(indices)]

    # Persistence: faiss's own format for the vectors and plain JSON for the ids (no pickle).
    def save(self, directory: str | os.PathLike) -> Path:
        if self.index is None:
            raise ValueError("Cannot save an empty gallery index")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _faiss().write_index(self.index, str(directory / INDEX_FILE))
        meta = {
            "ids": self.ids,
            "dim": self.dim,
            "ntotal": len(self),
            "ivf_nlist": self.ivf_nlist,
            "nprobe": self.nprobe,
            "metadata": self.metadata,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=1))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, model=None, processor=None, **kwargs) -> "GalleryIndex":
        directory = Path(directory)
        index_path, meta_path = directory / INDEX_FILE, directory / META_FILE
        missing = [p.name for p in (index_path, meta_path) if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{directory} is not a saved GalleryIndex (missing {', '.join(missing)})")
        meta = json.loads(meta_path.read_text())
        self = cls(model, processor, ivf_nlist=meta.get("ivf_nlist"), nprobe=meta.get("nprobe", 16), **kwargs)
        self.index = _faiss().read_index(str(index_path))
        if self.ivf_nlist is not None:
            self.index.nprobe = self.nprobe
        self.ids = list(meta["ids"])
        self.metadata = dict(meta.get("metadata") or {})
        if len(self.ids) != self.index.ntotal:
            raise ValueError(f"{meta_path} lists {len(self.ids)} ids but {index_path} holds {self.index.ntotal} vectors")
        return self

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike,
        model,
        processor,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        progress: bool = True,
        ivf_nlist: int | None = None,
    ) -> tuple["GalleryIndex", FolderIndexReport]:
        """Index every readable image under ``folder`` (recursively, any format PIL reads).

        Files that cannot be decoded are skipped and listed in the report (and logged with their count). Ids are
        paths relative to ``folder`` (POSIX style), sorted.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"Gallery folder {folder} does not exist (pass a folder of person crops)")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ValueError(f"Gallery folder {folder} contains no files")
        self = cls(model, processor, ivf_nlist=ivf_nlist, batch_size=batch_size, device=device, progress=False)
        report = FolderIndexReport()
        # Decode images a batch at a time (never the whole folder in memory), skipping what PIL cannot read.
        pending_feats, pending_ids = [], []
        with tqdm(total=len(files), desc=f"Indexing {folder.name or folder}", unit="file", disable=not progress) as bar:
            for start in range(0, len(files), batch_size):
                good_images, good_ids = [], []
                for path in files[start : start + batch_size]:
                    try:
                        good_images.append(load_image(path))
                        good_ids.append(path.relative_to(folder).as_posix())
                    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
                        report.skipped.append(SkippedFile(str(path), f"{type(err).__name__}: {err}"))
                if good_images:
                    pending_feats.append(
                        encode_images(model, processor, good_images, batch_size, device, progress=False)
                    )
                    pending_ids.extend(good_ids)
                bar.update(min(batch_size, len(files) - start))
        if not pending_ids:
            raise ValueError(f"No readable images in {folder} ({report.num_skipped} files skipped)")
        # One add so that an IVF index is trained on the whole gallery.
        self.add_vectors(self._vectors(cat_features(pending_feats)), pending_ids)
        report.num_indexed = len(pending_ids)
        if report.skipped:
            logger.warning(
                "Skipped %d unreadable file(s) in %s, e.g. %s", report.num_skipped, folder, report.skipped[0].path
            )
        self.progress = progress
        return self, report


def build_folder_index(folder, model, processor, **kwargs) -> tuple[GalleryIndex, FolderIndexReport]:
    """Shortcut for :meth:`GalleryIndex.from_folder`."""
    return GalleryIndex.from_folder(folder, model, processor, **kwargs)


__all__ = [
    "encode_texts",
    "encode_images",
    "load_image",
    "GalleryIndex",
    "FolderIndexReport",
    "SkippedFile",
    "build_folder_index",
]
