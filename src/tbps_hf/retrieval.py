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


def _faiss_message(err: Exception) -> str:
    """FAISS's own reason without the C++ location prefix ("Error in ... at index_factory.cpp:1220: Error: ...")."""
    text = str(err).strip()
    marker = text.rfind(".cpp:")
    if marker >= 0 and ": " in text[marker:]:
        text = text[marker:].split(": ", 1)[1]
    return text.splitlines()[0] if text else type(err).__name__


class DamagedIndexError(ValueError):
    """A saved index folder that cannot be read (truncated/overwritten file, bad JSON, counts that disagree)."""


@dataclass
class SkippedFile:
    path: str
    reason: str


@dataclass
class FolderIndexReport:
    """What :meth:`GalleryIndex.from_folder` / :meth:`GalleryIndex.sync_folder` did.

    ``num_indexed``: crops searchable afterwards; ``skipped``: files that could not be read; ``num_added``: crops
    encoded by this call; ``num_removed``: indexed crops whose file vanished or changed since the index was built.
    """

    num_indexed: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)
    num_added: int = 0
    num_removed: int = 0

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)


def folder_manifest(folder: str | os.PathLike) -> dict[str, list[int]]:
    """``{relative POSIX path: [size in bytes, mtime in ns]}`` of every non-hidden file under ``folder``, sorted.

    Comparing two manifests tells which files were added, removed or rewritten since an index was built: cheaper
    than hashing contents and enough to catch a copy, an edit or a deletion.
    """
    folder = Path(folder)
    manifest = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        stat = path.stat()
        manifest[rel.as_posix()] = [int(stat.st_size), int(stat.st_mtime_ns)]
    return manifest


class GalleryIndex:
    """A FAISS inner-product index over ``model.index_features`` of gallery images, with the gallery's ids/paths.

    Args:
        model: the (dual-encoder) model; needed to add raw images or search with raw texts, and to map features.
        processor: its processor (for raw images/texts).
        index_factory: any FAISS ``index_factory`` string, built with the inner-product metric: ``"Flat"`` (exact,
            default), ``"IVF1024,Flat"``, ``"IVF4096,PQ32"``, ``"HNSW32"``, ``"OPQ32,IVF4096,PQ32"`` ... An index that
            needs training is trained on the first block added (add the whole gallery at once, as
            :meth:`from_folder` does). A string FAISS rejects raises ``ValueError`` with FAISS's reason.
        nprobe: inverted lists visited per query (IVF indexes; ignored otherwise).
        ef_search: HNSW search depth (HNSW indexes; ignored otherwise).
        ef_construction: HNSW build depth. 200 instead of FAISS's 40: on gallery-shaped data (100k vectors,
            docs/benchmarks.md) HNSW32 at efSearch 16 reached recall@10 0.994 instead of 0.956.
        ivf_nlist: shorthand kept for older callers: ``index_factory=f"IVF{ivf_nlist},Flat"``.
        batch_size / device / progress: used when encoding raw images or texts.

    Items can be marked removed (:meth:`remove`): they stay in the FAISS structure (not every index type can delete)
    but are never returned; :meth:`sync_folder` uses this when a crop vanishes or changes.

    Example::

        index = GalleryIndex(model, processor, index_factory="HNSW32")
        index.add(images, ids=paths)
        scores, indices = index.search(["a woman in a red coat"], k=10)
        index.ids[indices[0, 0]]
    """

    def __init__(
        self,
        model=None,
        processor=None,
        index_factory: str = "Flat",
        nprobe: int = 16,
        ef_search: int = 64,
        ef_construction: int = 200,
        ivf_nlist: int | None = None,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        progress: bool = False,
    ):
        self.model = model
        self.processor = processor
        if ivf_nlist is not None:
            index_factory = f"IVF{int(ivf_nlist)},Flat"
        if not isinstance(index_factory, str) or not index_factory.strip():
            raise ValueError(f"index_factory must be a FAISS index_factory string such as 'Flat', got {index_factory!r}")
        self.index_factory = index_factory.strip()
        self.nprobe = int(nprobe)
        self.ef_search = int(ef_search)
        self.ef_construction = int(ef_construction)
        self.batch_size = batch_size
        self.device = device
        self.progress = progress
        self.index = None  # created on the first add (the dimension is known then)
        self.ids: list[Any] = []
        self.removed: set[int] = set()
        self.metadata: dict[str, Any] = {}

    def __len__(self) -> int:
        """Searchable items (added minus removed)."""
        return self.ntotal - len(self.removed)

    @property
    def ntotal(self) -> int:
        """Items in the FAISS structure, removed ones included (positions run over ``0..ntotal-1``)."""
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

    @staticmethod
    def check_factory(index_factory: str, dim: int = 256) -> None:
        """Raise ``ValueError`` with FAISS's reason when it cannot parse ``index_factory`` (checked before any
        encoding work, so a typo in ``--index`` is reported in a second, not after indexing the gallery)."""
        faiss = _faiss()
        try:
            faiss.index_factory(dim, index_factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as err:
            raise ValueError(f"FAISS rejected index_factory {index_factory!r}: {_faiss_message(err)}") from None

    def _create(self, dim: int, training_vectors: np.ndarray):
        faiss = _faiss()
        try:
            index = faiss.index_factory(dim, self.index_factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as err:
            raise ValueError(f"FAISS rejected index_factory {self.index_factory!r}: {_faiss_message(err)}") from None
        hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
        if hnsw is not None:
            hnsw.efConstruction = self.ef_construction
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and hasattr(faiss.downcast_index(ivf), "do_polysemous_training"):
            # IVF-PQ's default polysemous training (annealing over code assignments) takes minutes and only serves
            # Hamming-filtered search, which is not used here.
            faiss.downcast_index(ivf).do_polysemous_training = False
        if not index.is_trained:
            try:
                index.train(training_vectors)
            except RuntimeError as err:
                raise ValueError(
                    f"Could not train the {self.index_factory!r} index on {training_vectors.shape[0]} vectors: "
                    f"{_faiss_message(err)}; use a smaller index (fewer IVF lists) or 'Flat' for a gallery this size"
                ) from None
        self.index = index
        self._apply_search_parameters()

    def _apply_search_parameters(self):
        faiss = _faiss()
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is not None:
            ivf.nprobe = min(self.nprobe, ivf.nlist)
        hnsw = getattr(faiss.downcast_index(self.index), "hnsw", None)
        if hnsw is not None:
            hnsw.efSearch = self.ef_search

    def add_vectors(self, vectors: np.ndarray, ids: Sequence[Any] | None = None) -> None:
        """Add precomputed index vectors ``[N, d]`` (already mapped by ``index_features``)."""
        vectors = self._vectors(vectors)
        ids = list(range(self.ntotal, self.ntotal + vectors.shape[0])) if ids is None else list(ids)
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

    def remove(self, positions: Iterable[int]) -> None:
        """Never return these positions again (their vectors stay in the FAISS structure)."""
        for p in positions:
            if not 0 <= int(p) < self.ntotal:
                raise IndexError(f"position {p} is outside the index (0..{self.ntotal - 1})")
            self.removed.add(int(p))

    def search(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-k gallery items per query.

        Args:
            queries: a string, a list of strings (encoded with the model), text features ``[Q, ...]`` (a tensor or
                the model's feature structure, mapped with ``model.index_features``), or a numpy array of index
                vectors ``[Q, d]`` used as is.
            k: results per query (clipped to the number of searchable items).

        Returns:
            ``scores`` float32 ``[Q, k]`` (the model's similarity, descending) and ``indices`` int64 ``[Q, k]``
            (positions in ``self.ids``; -1 with score ``-inf`` where an approximate index found fewer than k).
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
        k = min(k, len(self))
        # Ask for enough extra results that removed items can be dropped and k still remain.
        scores, indices = self.index.search(vectors, min(self.ntotal, k + len(self.removed)))
        indices = indices.astype(np.int64)
        if not self.removed:
            return scores[:, :k], indices[:, :k]
        out_scores = np.full((len(vectors), k), -np.inf, dtype=np.float32)
        out_indices = np.full((len(vectors), k), -1, dtype=np.int64)
        for row in range(len(vectors)):
            keep = [j for j, i in enumerate(indices[row]) if i not in self.removed][:k]
            out_scores[row, : len(keep)] = scores[row, keep]
            out_indices[row, : len(keep)] = indices[row, keep]
        return out_scores, out_indices

    def lookup(self, indices: np.ndarray) -> list:
        """The ids/paths of ``indices`` (as returned by :meth:`search`; -1 for empty slots → ``None``)."""
        return [[self.ids[i] if i >= 0 else None for i in row] for row in np.asarray(indices)]

    # Persistence: faiss's own format for the vectors and plain JSON for the ids (no pickle).
    def save(self, directory: str | os.PathLike) -> Path:
        if self.index is None:
            raise ValueError("Cannot save an empty gallery index")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # Write both files beside the old ones first, then rename: an interrupted save leaves the old index whole.
        _faiss().write_index(self.index, str(directory / (INDEX_FILE + ".tmp")))
        meta = {
            "ids": self.ids,
            "dim": self.dim,
            "ntotal": self.ntotal,
            "index_factory": self.index_factory,
            "nprobe": self.nprobe,
            "ef_search": self.ef_search,
            "removed": sorted(self.removed),
            "metadata": self.metadata,
        }
        (directory / (META_FILE + ".tmp")).write_text(json.dumps(meta, indent=1))
        os.replace(directory / (INDEX_FILE + ".tmp"), directory / INDEX_FILE)
        os.replace(directory / (META_FILE + ".tmp"), directory / META_FILE)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, model=None, processor=None, **kwargs) -> "GalleryIndex":
        """Read a folder written by :meth:`save`.

        Raises:
            FileNotFoundError: the folder lacks ``index.faiss`` or ``gallery.json``.
            DamagedIndexError: a file is unreadable or the two disagree (rebuild the index).
        """
        directory = Path(directory)
        index_path, meta_path = directory / INDEX_FILE, directory / META_FILE
        missing = [p.name for p in (index_path, meta_path) if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{directory} is not a saved GalleryIndex (missing {', '.join(missing)})")
        try:
            meta = json.loads(meta_path.read_text())
            ids = list(meta["ids"])
            factory = meta.get("index_factory") or (
                f"IVF{meta['ivf_nlist']},Flat" if meta.get("ivf_nlist") else "Flat"  # written before index_factory
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise DamagedIndexError(f"{meta_path} is damaged ({type(err).__name__}: {err}); rebuild the index") from None
        try:
            index = _faiss().read_index(str(index_path))
        except RuntimeError as err:
            raise DamagedIndexError(f"{index_path} is damaged ({_faiss_message(err)}); rebuild the index") from None
        if len(ids) != index.ntotal:
            raise DamagedIndexError(
                f"{meta_path} lists {len(ids)} ids but {index_path} holds {index.ntotal} vectors; rebuild the index"
            )
        self = cls(
            model, processor, index_factory=factory, nprobe=meta.get("nprobe", 16),
            ef_search=meta.get("ef_search", 64), **kwargs,
        )  # fmt: skip
        self.index = index
        self._apply_search_parameters()
        self.ids = ids
        self.removed = {int(p) for p in meta.get("removed", [])}
        self.metadata = dict(meta.get("metadata") or {})
        return self

    def _encode_files(self, folder: Path, rel_paths: Sequence[str], report: FolderIndexReport, progress: bool):
        """Features and ids of the readable files among ``rel_paths`` (a batch of decoded images at a time)."""
        feats, ids = [], []
        desc = f"Indexing {folder.name or folder}"
        with tqdm(total=len(rel_paths), desc=desc, unit="file", disable=not progress) as bar:
            for start in range(0, len(rel_paths), self.batch_size):
                good_images, good_ids = [], []
                for rel in rel_paths[start : start + self.batch_size]:
                    try:
                        good_images.append(load_image(folder / rel))
                        good_ids.append(rel)
                    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
                        report.skipped.append(SkippedFile(str(folder / rel), f"{type(err).__name__}: {err}"))
                if good_images:
                    feats.append(
                        encode_images(self.model, self.processor, good_images, self.batch_size, self.device, False)
                    )
                    ids.extend(good_ids)
                bar.update(min(self.batch_size, len(rel_paths) - start))
        return (cat_features(feats) if feats else None), ids

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike,
        model,
        processor,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        progress: bool = True,
        index_factory: str = "Flat",
        **kwargs,
    ) -> tuple["GalleryIndex", FolderIndexReport]:
        """Index every readable image under ``folder`` (recursively, any format PIL reads; hidden files ignored).

        Files that cannot be decoded are skipped and listed in the report (and logged with their count). Ids are
        paths relative to ``folder`` (POSIX style), sorted. ``metadata["files"]`` records each file's size and
        modification time so that :meth:`sync_folder` can tell later what changed.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"Gallery folder {folder} does not exist (pass a folder of person crops)")
        manifest = folder_manifest(folder)
        if not manifest:
            raise ValueError(f"Gallery folder {folder} contains no files")
        self = cls(model, processor, index_factory, batch_size=batch_size, device=device, progress=False, **kwargs)
        cls.check_factory(self.index_factory)
        report = FolderIndexReport()
        features, ids = self._encode_files(folder, list(manifest), report, progress)
        if not ids:
            raise ValueError(f"No readable images in {folder} ({report.num_skipped} files skipped)")
        # One add so that an index that needs training is trained on the whole gallery.
        self.add_vectors(self._vectors(features), ids)
        report.num_indexed = report.num_added = len(ids)
        self.metadata["files"] = manifest  # unreadable files too: they are not retried until they change
        self.metadata["unreadable"] = sorted(Path(s.path).relative_to(folder).as_posix() for s in report.skipped)
        if report.skipped:
            logger.warning(
                "Skipped %d unreadable file(s) in %s, e.g. %s", report.num_skipped, folder, report.skipped[0].path
            )
        self.progress = progress
        return self, report

    def sync_folder(self, folder: str | os.PathLike, progress: bool = True) -> FolderIndexReport:
        """Bring an index built by :meth:`from_folder` up to date with ``folder``'s current contents.

        Files whose size or modification time changed, and files that vanished, are removed from the results;
        new and changed files are encoded and added (unreadable ones skipped and reported). Unchanged files keep
        their vectors. ``report.num_added`` / ``num_removed`` say what changed (both 0: the index was current).
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"Gallery folder {folder} does not exist (pass a folder of person crops)")
        self._require_model("encode images")
        old = self.metadata.get("files") or {}
        new = folder_manifest(folder)
        changed = {rel for rel, stat in old.items() if new.get(rel) != stat}
        added = [rel for rel, stat in new.items() if old.get(rel) != stat]
        report = FolderIndexReport()
        positions = {rel: i for i, rel in enumerate(self.ids) if i not in self.removed}
        stale = [positions[rel] for rel in changed if rel in positions]
        self.remove(stale)
        report.num_removed = len(stale)
        if added:
            features, ids = self._encode_files(folder, added, report, progress)
            if ids:
                self.add_vectors(self._vectors(features), ids)
            report.num_added = len(ids)
        self.metadata["files"] = new
        still_unreadable = [rel for rel in self.metadata.get("unreadable", []) if rel in new and rel not in changed]
        newly = [Path(s.path).relative_to(folder).as_posix() for s in report.skipped]
        self.metadata["unreadable"] = sorted(set(still_unreadable) | set(newly))
        report.num_indexed = len(self)
        if report.skipped:
            logger.warning(
                "Skipped %d unreadable file(s) in %s, e.g. %s", report.num_skipped, folder, report.skipped[0].path
            )
        return report


def build_folder_index(folder, model, processor, **kwargs) -> tuple[GalleryIndex, FolderIndexReport]:
    """Shortcut for :meth:`GalleryIndex.from_folder`."""
    return GalleryIndex.from_folder(folder, model, processor, **kwargs)


__all__ = [
    "encode_texts",
    "encode_images",
    "load_image",
    "folder_manifest",
    "GalleryIndex",
    "DamagedIndexError",
    "FolderIndexReport",
    "SkippedFile",
    "build_folder_index",
]
