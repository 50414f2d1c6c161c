"""Gradio demo: describe a pedestrian, get the top-k crops of a gallery, judged (labelled splits) and explained.

``tbps demo`` and ``python spaces/tbps-demo/app.py`` both call :func:`run_demo`. With no arguments they serve the
embedded ProcPEDES ``test`` and ``test_3c`` galleries with the model of ``runs/quickstart/model`` (or a page that
says how to make it). The work is in :class:`DemoEngine` (search, judging, explanation, uploads: plain Python that
tests call directly); :func:`build_demo` wraps it in a ``gr.Blocks`` page whose endpoints ``/search`` and
``/explain`` ``gradio_client`` can call.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

EMPTY_QUERY_MESSAGE = "Please type a description of the person you are looking for, e.g. *a woman in a red coat carrying a black backpack*."
MAX_QUERY_CHARS = 2000
DEFAULT_MODEL = "runs/quickstart/model"
DEFAULT_DATASET = "procpedes"
DEFAULT_SPLITS = ("test", "test_3c")
MAKE_MODEL_COMMAND = "tbps quickstart"
DISPLAY_HEIGHT = 256  # crops are shown at least this tall (ProcPEDES renders 128×64: too small to see clothes)
MAX_UPLOADS = 20
PRIVACY_NOTE = (
    "**Privacy:** uploaded images are kept in this session's memory (and Gradio's temporary folder) only, are "
    "searched only by you, and are gone when the page is closed or the app restarts. Index only person crops you "
    "have the right to show: the benchmarks (CUHK-PEDES, ICFG-PEDES, RSTPReid, UFine6926) are licensed for research "
    "use and may not be redistributed."
)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelUnavailable(Exception):
    """The model cannot be had; ``page`` is the Markdown the app serves instead of the search page."""

    def __init__(self, page: str):
        super().__init__(page)
        self.page = page


# --------------------------------------------------------------------------------------------------- the model
def _model_fingerprint(model_dir: Path) -> str:
    """Changes when the weights or config change, so a saved index built with other weights is not reused."""
    h = hashlib.sha256()
    for name in sorted(p.name for p in model_dir.iterdir() if p.suffix in (".json", ".safetensors")):
        stat = (model_dir / name).stat()
        h.update(f"{name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return h.hexdigest()[:16]


def resolve_model(spec: str | os.PathLike | None, train_if_missing: bool = False) -> Path:
    """The local folder of ``spec``: a folder written by ``save_pretrained``, or a hub id ``org/name`` (downloaded
    with ``huggingface_hub``). With no ``spec``, ``runs/quickstart/model``; when that is missing it is trained
    (``train_if_missing``) or :class:`ModelUnavailable` says which command makes it.
    """
    spec = str(spec) if spec else DEFAULT_MODEL
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if spec == DEFAULT_MODEL:
        if not train_if_missing:
            raise ModelUnavailable(
                f"### No model yet\nThere is no trained model at `{DEFAULT_MODEL}`. Make it with one command "
                f"(about 10 minutes on a CPU), then start the demo again:\n\n```bash\n{MAKE_MODEL_COMMAND}\n```\n\n"
                "or start the demo with `--train_if_missing` to train it now, or pass `--model` a saved model "
                "folder or a hub id (`org/name`)."
            )
        from .quickstart import quickstart

        logger.warning("No model at %s: training the quickstart model (tbps quickstart, ~10 min on CPU)", path)
        quickstart(out=path.parent)  # the training loop shows its progress bar
        return path
    if HUB_ID.match(spec) and not spec.startswith((".", "~")):
        return _download(spec)
    raise ModelUnavailable(
        f"### Model not found\n`{spec}` is neither a folder nor a hub id (`org/name`). Pass `--model` a folder "
        f"written by `save_pretrained` (e.g. `{DEFAULT_MODEL}`, made by `{MAKE_MODEL_COMMAND}`) or a hub id."
    )


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        # Only what from_pretrained reads: configs, safetensors weights, tokenizer and processor files.
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as err:  # offline, unknown repo, gated, no permission: all end in the same page
        raise ModelUnavailable(
            f"### Could not load `{repo_id}` from the Hugging Face Hub\n{type(err).__name__}: {err}\n\nCheck the id "
            "and the network (or `HF_TOKEN` for a private model), or pass `--model` a local folder written by "
            f"`save_pretrained`, e.g. `{DEFAULT_MODEL}` (made by `{MAKE_MODEL_COMMAND}`)."
        ) from err


# ------------------------------------------------------------------------------------------------- galleries
@dataclass
class Gallery:
    """One searchable set of crops.

    ``index`` positions address ``labels`` (a file path or a split row's file name) and ``load(position)`` (the
    crop). Labelled splits also carry ``person_ids`` [G], their captions as ``queries`` / ``query_ids`` and the
    index vectors ``vectors`` [G, d] (ranked exactly, so rank and AP are the metric core's). Raw features are not
    kept: a cross-encoder re-encodes its few re-rank candidates.
    """

    name: str
    index: Any
    load: Callable[[int], Any]
    labels: list[str]
    message: str = ""
    person_ids: np.ndarray | None = None
    queries: list[str] = field(default_factory=list)
    query_ids: np.ndarray | None = None
    vectors: np.ndarray | None = None
    exists: Callable[[int], bool] = lambda position: True

    @property
    def labelled(self) -> bool:
        return self.person_ids is not None

    def query_person(self, query: str) -> int | None:
        """The person a split caption was written for (the first such caption when twins share a text)."""
        if not self.labelled:
            return None
        if not hasattr(self, "_query_lookup"):
            self._query_lookup = {}
            for text, pid in zip(self.queries, self.query_ids.tolist()):
                self._query_lookup.setdefault(text.strip(), pid)
        return self._query_lookup.get(query.strip())


def split_gallery(model, processor, dataset_split, name: str, batch_size=64, progress=True, index_factory="Flat"):
    """A labelled :class:`Gallery` from a dataset split (one row per image, captions as queries)."""
    from .data import EvaluationView
    from .retrieval import GalleryIndex, encode_images

    view = EvaluationView(dataset_split)
    features = encode_images(model, processor, view.gallery_images, batch_size=batch_size, progress=progress)
    index = GalleryIndex(model, processor, index_factory=index_factory, batch_size=batch_size)
    vectors = index._vectors(features)
    index.add_vectors(vectors)
    labels = view.file_paths or [f"row {i}" for i in range(view.num_gallery)]
    return Gallery(
        name=name, index=index, load=lambda i: view.gallery_images[i], labels=list(labels),
        message=f"{name}: {view.num_gallery} crops of {len(set(view.gallery_ids.tolist()))} people, "
        f"{view.num_queries} captions.",
        person_ids=view.gallery_ids, queries=view.queries, query_ids=view.query_ids, vectors=vectors,
    )  # fmt: skip


def load_or_build_index(
    model, processor, model_dir, gallery_dir, index_dir=None, batch_size=64, progress=True, index_factory="Flat"
):
    """The gallery folder's index: a saved one from ``index_dir`` when it was built with the same model and index
    type, brought up to date with the folder's contents (files, sizes, modification times: new crops are added,
    vanished or changed ones dropped); otherwise (or when the saved files are damaged) built from the folder. Saved
    back to ``index_dir`` when anything changed.

    Returns ``(index, message)``; the message says what happened (shown in the app).
    """
    from .retrieval import DamagedIndexError, GalleryIndex

    gallery_dir = Path(gallery_dir)
    if not gallery_dir.is_dir():
        raise FileNotFoundError(f"Gallery folder {gallery_dir} does not exist (pass --gallery a folder of person crops)")
    stamp = {"model": _model_fingerprint(Path(model_dir)), "gallery": str(gallery_dir.resolve())}
    index, message = None, ""
    if index_dir is not None and (Path(index_dir) / "index.faiss").is_file():
        try:
            index = GalleryIndex.load(index_dir, model, processor, batch_size=batch_size)
        except (DamagedIndexError, FileNotFoundError) as err:
            logger.warning("%s", err)
            message = f"The saved index in {index_dir} was damaged ({err}); rebuilt it. "
        if index is not None:
            same = {k: index.metadata.get(k) for k in stamp} == stamp and index.index_factory == index_factory
            if not same:
                logger.warning("The index in %s was built from another model, gallery or index type; rebuilding", index_dir)
                message = f"The saved index in {index_dir} was built with another model, gallery or index type; rebuilt it. "
                index = None
    if index is not None:
        report = index.sync_folder(gallery_dir, progress=progress)
        if report.num_removed > index.ntotal // 2:  # mostly dead entries: a fresh build is smaller and faster
            index = None
            message = f"Most of the gallery changed since {index_dir} was saved; rebuilt the index. "
        elif report.num_added or report.num_removed:
            message = (
                f"Updated the saved index from {index_dir}: {report.num_added} new or changed crop(s) added, "
                f"{report.num_removed} vanished or changed crop(s) dropped. "
            )
            index.save(index_dir)
        else:
            message = f"Loaded the saved index of {len(index)} crops from {index_dir} (gallery unchanged). "
    if index is None:
        index, report = GalleryIndex.from_folder(
            gallery_dir, model, processor, batch_size=batch_size, progress=progress, index_factory=index_factory
        )
        index.metadata.update(stamp)
        message += f"Indexed {report.num_indexed} crops from {gallery_dir}."
        if index_dir is not None:
            index.save(index_dir)
            message += f" Saved the index to {index_dir}."
    unreadable = index.metadata.get("unreadable") or []
    if unreadable:
        message += f" Skipped {len(unreadable)} unreadable file(s) (e.g. {unreadable[0]})."
    return index, message.strip()


def folder_gallery(model, processor, model_dir, folder, index_dir=None, batch_size=64, progress=True, index_factory="Flat"):
    from .retrieval import load_image

    index, message = load_or_build_index(
        model, processor, model_dir, folder, index_dir, batch_size, progress, index_factory
    )
    root = Path(folder)
    name = f"folder {root.name or root}"
    return Gallery(
        name=name, index=index, load=lambda i: load_image(root / index.ids[i]), labels=index.ids, message=message,
        exists=lambda i: (root / index.ids[i]).is_file(),
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------- the engine
@dataclass
class Hit:
    rank: int  # 1-based, in the order shown
    position: int  # gallery index position, or upload number when ``upload``
    label: str
    score: float
    upload: bool = False
    match: bool | None = None  # same person as the query (labelled splits with a known query only)
    person_id: int | None = None


@dataclass
class SearchResult:
    query: str
    gallery: str
    hits: list[Hit] = field(default_factory=list)
    first_stage: list[Hit] = field(default_factory=list)  # cross-encoders: the order before re-ranking
    message: str = ""
    first_true_rank: int | None = None
    ap: float | None = None


@dataclass
class Upload:
    name: str
    image: Any
    vector: np.ndarray
    features: Any = None


class DemoEngine:
    """The model, its galleries, and everything the page does, as plain methods.

    Args:
        model / processor: a loaded model (any method; cross-encoders get the re-rank option).
        galleries: :class:`Gallery` objects, shown in this order.
        rerank_k: candidates a cross-encoder re-ranks (default: ``config.rerank_k`` or 32).
        model_name: shown on the page (the folder or hub id it came from).
    """

    def __init__(
        self, model, processor, galleries: Sequence[Gallery], rerank_k: int | None = None, model_name: str | None = None
    ):
        if not galleries:
            raise ValueError("the demo needs at least one gallery")
        self.model, self.processor = model, processor
        self.galleries = {g.name: g for g in galleries}
        self.is_cross_encoder = bool(getattr(model.config, "is_cross_encoder", False))
        self.rerank_k = int(rerank_k or getattr(model.config, "rerank_k", None) or 32)
        self.device = next(model.parameters()).device
        self.model_name = model_name or type(model).__name__
        self._rng = random.Random(0)  # the "Random query" button: reproducible per app start

    def gallery(self, name: str | None) -> Gallery:
        if name is None:
            return next(iter(self.galleries.values()))
        if name not in self.galleries:
            raise ValueError(f"unknown gallery {name!r}; available: {', '.join(self.galleries)}")
        return self.galleries[name]

    def example_queries(self, name: str | None, n: int = 8) -> list[str]:
        """Captions of ``n`` different people of a labelled gallery (spread over the split)."""
        g = self.gallery(name)
        if not g.labelled:
            return []
        seen, out = set(), []
        step = max(1, len(g.queries) // (4 * n))
        for i in range(0, len(g.queries), step):
            if g.query_ids[i] not in seen:
                seen.add(g.query_ids[i])
                out.append(g.queries[i])
            if len(out) == n:
                break
        return out

    def random_query(self, name: str | None) -> str:
        g = self.gallery(name)
        if not g.labelled:
            return ""
        return g.queries[self._rng.randrange(len(g.queries))]

    # -- vocabulary
    def unknown_words(self, query: str) -> tuple[list[str], list[str]]:
        """``(unknown, known)`` words of ``query``: a word is unknown when the tokenizer maps all of it to [UNK]."""
        tokenizer = self.processor.tokenizer
        unk = tokenizer.unk_token
        unknown, known = [], []
        for word in re.findall(r"\w+|[^\w\s]", query):
            pieces = tokenizer.tokenize(word)
            if not pieces or all(p == unk for p in pieces):
                (unknown if re.search(r"\w", word) or not word.isascii() else known).append(word)
            elif re.search(r"\w", word):
                known.append(word)
        return unknown, known

    # -- encoding
    def _encode_query(self, query: str) -> np.ndarray:
        """The query's index vector ``[d]`` (inner products with gallery vectors = the model's similarity)."""
        from .retrieval import encode_texts

        features = encode_texts(self.model, self.processor, [query], progress=False)
        return self.model.index_features(features).detach().float().cpu().numpy()[0]

    def encode_uploads(self, paths: Sequence[str | os.PathLike]) -> tuple[list[Upload], list[str]]:
        """Encode uploaded files; returns the uploads and one line per file that is not an image."""
        from PIL import Image, UnidentifiedImageError

        from .retrieval import encode_images, load_image

        images, names, problems = [], [], []
        for path in paths:
            name = Path(path).name
            try:
                images.append(load_image(path))
                names.append(name)
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
                problems.append(f"`{name}` is not an image Pillow can read: skipped.")
        if not images:
            return [], problems
        features = encode_images(self.model, self.processor, images, progress=False)
        vectors = self.model.index_features(features).detach().float().cpu().numpy()
        from .modeling_utils import slice_features

        uploads = [
            Upload(n, img, vec, slice_features(features, slice(i, i + 1)) if self.is_cross_encoder else None)
            for i, (n, img, vec) in enumerate(zip(names, images, vectors))
        ]
        return uploads, problems

    # -- search
    def search(
        self, query: str, k: int = 10, gallery: str | None = None, rerank: bool = False,
        uploads: Sequence[Upload] = (),
    ) -> SearchResult:  # fmt: skip
        """Top-k crops of ``gallery`` (plus this session's ``uploads``) for ``query``, judged and explained in
        ``message``. Never raises for bad text: the message says what was wrong."""
        g = self.gallery(gallery)
        query = (query or "").strip()
        result = SearchResult(query=query, gallery=g.name)
        if not query:
            result.message = EMPTY_QUERY_MESSAGE
            return result
        notes = []
        if len(query) > MAX_QUERY_CHARS:
            query = query[:MAX_QUERY_CHARS]
            notes.append(f"The query was cut to its first {MAX_QUERY_CHARS} characters.")
        unknown, known = self.unknown_words(query)
        if unknown and not known:
            result.message = (
                f"**None of the words of this query are in the model's vocabulary** ({', '.join(unknown[:8])}): it "
                "would see only unknown tokens, so any ranking would be noise and none is shown. The model was "
                "trained on English descriptions: try e.g. *a woman in a red coat with a black backpack*."
            )
            return result
        if unknown:
            notes.append(f"Words the model does not know were ignored: {', '.join(unknown[:8])}.")

        total = len(g.index) + len(uploads)
        k = max(1, int(k))
        if k > total:
            notes.append(f"Asked for {k} results; the gallery holds {total} crops, so all are shown.")
            k = total
        qvec = self._encode_query(query)
        wanted = max(k, self.rerank_k) if rerank and self.is_cross_encoder else k
        # A few spare candidates: crops deleted since indexing are dropped here, never shown or crashed on.
        candidates = self._first_stage(g, qvec, wanted + (0 if g.labelled else 16), uploads)
        present = [c for c in candidates if c[2] or g.exists(c[1])]
        vanished = len(candidates) - len(present)
        candidates = present[:wanted]
        pid = g.query_person(query)
        if rerank and self.is_cross_encoder:
            result.first_stage = self._hits(g, candidates[:k], pid, uploads)
            candidates = self._rerank(g, query, candidates, uploads)
        elif rerank:
            notes.append("Re-ranking needs a cross-encoder (LAIP); this model ranks with its dual encoder only.")
        result.hits = self._hits(g, candidates[:k], pid, uploads)
        if vanished:
            notes.append(f"{vanished} indexed crop(s) no longer exist on disk and were skipped.")

        if g.labelled and pid is not None:
            order = self._full_order(g, qvec, candidates)
            per_query = _rank_metrics(order, pid, g.person_ids)
            result.first_true_rank, result.ap = per_query
            judged = (
                f"Ground truth: this caption describes person **{pid}**. First true match at rank "
                f"**{result.first_true_rank}**; AP **{100 * result.ap:.1f}%** over the {len(g.index)} crops "
                "(✓ right person, ✗ someone else)."
            )
        elif g.labelled:
            judged = "A free-text query has no ground truth: pick an example or press *Random query* to see ✓/✗ marks, rank and AP."
        else:
            judged = ""
        if uploads and g.labelled:
            notes.append("Your uploads are ranked with the gallery but left out of rank and AP (they have no label).")
        head = f"Top {len(result.hits)} of {total} crops in *{g.name}* for: *{_md_escape(query[:200])}*"
        if result.first_stage:
            head += f" — re-ranked by ITM from the top {len(candidates)} ITC candidates"
        result.message = "\n\n".join(x for x in (head, judged, " ".join(notes)) if x)
        return result

    def _first_stage(self, g: Gallery, qvec: np.ndarray, k: int, uploads) -> list[tuple[float, int, bool]]:
        """``(score, position, is_upload)`` of the top-k by the dual-encoder score, best first."""
        if g.vectors is not None:  # labelled split: exact ranking (the metric's order; ties: lower index first)
            row = g.vectors @ qvec
            top = np.argsort(-row, kind="stable")[: min(k, len(row))]
            found = [(float(row[i]), int(i), False) for i in top]
        else:
            scores, indices = g.index.search(qvec[None].astype(np.float32), k=min(k, len(g.index)))
            found = [(float(s), int(i), False) for s, i in zip(scores[0], indices[0]) if i >= 0]
        found += [(float(u.vector @ qvec), j, True) for j, u in enumerate(uploads)]
        found.sort(key=lambda t: -t[0])  # stable: gallery before uploads on ties
        return found[:k]

    def _rerank(self, g: Gallery, query: str, candidates, uploads):
        """Re-score the candidates with the cross-encoder (``tbps_hf.reranking.rerank_similarity``)."""
        import torch

        from .modeling_utils import cat_features, slice_features
        from .reranking import rerank_similarity
        from .retrieval import encode_images

        # Galleries keep only index vectors (a cross-encoder's token states for a large gallery would not fit in
        # memory): the k candidates are encoded again, in one batch.
        gallery_positions = [pos for _, pos, is_upload in candidates if not is_upload]
        encoded = None
        if gallery_positions:
            images = [g.load(pos) for pos in gallery_positions]
            encoded = encode_images(self.model, self.processor, images, progress=False)
        feats, next_row = [], 0
        for _, pos, is_upload in candidates:
            if is_upload:
                feats.append(uploads[pos].features)
            else:
                feats.append(slice_features(encoded, slice(next_row, next_row + 1)))
                next_row += 1
        image_features = cat_features(feats)
        first = torch.tensor([[c[0] for c in candidates]], dtype=torch.float32)
        text_inputs = self.processor(text=[query], return_tensors="pt").to(self.device)
        with torch.inference_mode():
            final = rerank_similarity(self.model, text_inputs, image_features, first, len(candidates))[0]
        order = torch.argsort(final.float().cpu(), descending=True, stable=True).tolist()
        return [(float(final[i]), candidates[i][1], candidates[i][2]) for i in order]

    def _full_order(self, g: Gallery, qvec: np.ndarray, reranked) -> np.ndarray:
        """Gallery positions in the order shown: the (re-ranked) candidates, then the rest by first-stage score."""
        row = g.vectors @ qvec
        rest = np.argsort(-row, kind="stable")
        head = [pos for _, pos, up in reranked if not up]
        seen = set(head)
        return np.asarray(head + [int(i) for i in rest if int(i) not in seen], dtype=np.int64)

    def _hits(self, g: Gallery, candidates, pid, uploads=()) -> list[Hit]:
        hits = []
        for score, pos, is_upload in candidates:
            if is_upload:
                hits.append(Hit(len(hits) + 1, pos, f"upload {uploads[pos].name}", score, upload=True))
                continue
            person = int(g.person_ids[pos]) if g.labelled else None
            match = None if pid is None or person is None else person == pid
            hits.append(Hit(len(hits) + 1, pos, str(g.labels[pos]), score, match=match, person_id=person))
        return hits

    def images_for(self, result: SearchResult, hits: Sequence[Hit], uploads: Sequence[Upload] = ()) -> list[tuple]:
        """``(image, caption)`` per hit for a ``gr.Gallery`` (a crop that broke since the search is left out)."""
        g = self.gallery(result.gallery)
        items = []
        for hit in hits:
            try:
                image = uploads[hit.position].image if hit.upload else g.load(hit.position)
            except (OSError, ValueError) as err:  # the crop vanished or broke since it was indexed
                logger.warning("Skipping %s: %s", hit.label, err)
                continue
            mark = "" if hit.match is None else (" · ✓" if hit.match else " · ✗")
            items.append((_display(image), f"#{hit.rank} {hit.label} · {hit.score:.3f}{mark}"))
        return items

    # -- explanation
    def explain(self, result: SearchResult, number: int, uploads: Sequence[Upload] = ()) -> dict[str, Any]:
        """For the ``number``-th result (0-based): ``crop``, ``attention`` (the crop overlaid with
        ``get_image_attention_maps``, or None), ``phrase_maps`` (cross-encoders: ``[(overlay, phrase)]``),
        ``phrases`` (the query's noun phrases) and ``markdown``."""
        import torch

        from .processing.phrases import noun_phrases
        from .visualization import attention_overlay

        if not result.hits:
            raise ValueError("search first: there is no result to explain")
        if not 0 <= number < len(result.hits):
            raise ValueError(f"result number must be in 0..{len(result.hits) - 1}, got {number}")
        hit = result.hits[number]
        g = self.gallery(result.gallery)
        image = uploads[hit.position].image if hit.upload else g.load(hit.position)
        pixel_values = self.processor(images=[image], return_tensors="pt")["pixel_values"].to(self.device)
        phrases = noun_phrases(result.query)
        crop = _display(image)
        with torch.inference_mode():
            maps = self.model.get_image_attention_maps(pixel_values)
        attention = attention_overlay(crop, maps[0]) if maps is not None else None
        phrase_maps = []
        if hasattr(self.model, "get_phrase_attention_maps") and hasattr(self.processor, "phrase_inputs") and phrases:
            maps, names = self._phrase_maps(result.query, pixel_values)
            phrase_maps = [(attention_overlay(crop, m), p) for m, p in zip(maps, names)]
        lines = [f"**Result #{hit.rank}** `{hit.label}` — score {hit.score:.3f}"]
        if hit.match is not None:
            lines.append(("✓ the right person" if hit.match else f"✗ another person (id {hit.person_id})"))
        lines.append(
            "**Noun phrases of the query:** " + (", ".join(f"*{p}*" for p in phrases) if phrases else "(none found)")
        )
        if attention is None:
            lines.append(f"{type(self.model).__name__} has no image attention map for this configuration.")
        else:
            lines.append("The overlay shows where the image side looks (red: most attention).")
        return {"crop": crop, "attention": attention, "phrase_maps": phrase_maps, "phrases": phrases, "markdown": "\n\n".join(lines)}

    def _phrase_maps(self, query: str, pixel_values):
        """Per-phrase BidirAtt maps of a cross-encoder (LAIP: ``processor.phrase_inputs`` masks each noun phrase's
        head word; ``get_phrase_attention_maps`` differentiates its score, so this runs with gradients on)."""
        inputs = self.processor.phrase_inputs(query)
        maps = self.model.get_phrase_attention_maps(
            inputs["input_ids"].to(self.device), inputs["attention_mask"].to(self.device), pixel_values,
            labels=inputs["labels"].to(self.device),
        )  # fmt: skip
        return maps.bidirectional_maps.detach().cpu(), list(inputs["phrases"])


def _rank_metrics(order: np.ndarray, pid: int, gallery_ids: np.ndarray) -> tuple[int, float]:
    """First-true-match rank and AP of one query whose ranking is ``order`` — from the metric core (scores that
    reproduce the order, so re-ranked and first-stage orders are judged by the same code)."""
    from .metrics import retrieval_metrics

    scores = np.empty(len(order), dtype=np.float32)
    scores[order] = np.linspace(1.0, 0.0, len(order), dtype=np.float32)
    out = retrieval_metrics(scores[None], [pid], gallery_ids, ks=(1,), similarity_range=(0.0, 1.0), return_per_query=True)
    per = out["per_query"]
    return int(per["first_positive_rank"][0]), float(per["ap"][0])


def _display(image):
    """A crop at least ``DISPLAY_HEIGHT`` pixels tall (upscaled smoothly) so clothes and bags can be made out."""
    from PIL import Image

    if image.height >= DISPLAY_HEIGHT:
        return image
    scale = DISPLAY_HEIGHT / image.height
    return image.resize((max(1, round(image.width * scale)), DISPLAY_HEIGHT), Image.Resampling.BICUBIC)


def _md_escape(text: str) -> str:
    return re.sub(r"([\\`*_{}\[\]<>#|])", r"\\\1", text)


# ------------------------------------------------------------------------------------------------ the page
def build_engine(
    model: str | os.PathLike | None = None,
    gallery_dir: str | os.PathLike | None = None,
    index_dir: str | os.PathLike | None = None,
    dataset: str | None = None,
    splits: Sequence[str] | None = None,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    dataset_options: dict | None = None,
    index_factory: str = "Flat",
    batch_size: int = 64,
    device: str | None = None,
    progress: bool = True,
    train_if_missing: bool = False,
) -> DemoEngine:
    """Load the model and its galleries. With neither ``gallery_dir`` nor ``dataset``: ProcPEDES ``test`` and
    ``test_3c``. Raises :class:`ModelUnavailable` when the model cannot be had (the page says why)."""
    from .evaluation import load_model_and_processor
    from .retrieval import GalleryIndex

    GalleryIndex.check_factory(index_factory)  # a typo in --index fails before any loading
    model_dir = resolve_model(model, train_if_missing)
    loaded, processor = load_model_and_processor(model_dir, device)
    galleries = []
    if dataset is None and gallery_dir is None:
        dataset = DEFAULT_DATASET
    if dataset is not None:
        from .data import load_tbps_dataset

        if cache_dir is None and dataset == DEFAULT_DATASET and Path("runs/quickstart/data_cache").is_dir():
            cache_dir = "runs/quickstart/data_cache"  # what `tbps quickstart` generated: no second build
        data = load_tbps_dataset(dataset, data_dir=data_dir, cache_dir=cache_dir, **(dataset_options or {}))
        wanted = list(splits) if splits else [s for s in (DEFAULT_SPLITS if dataset == DEFAULT_DATASET else ("test",)) if s in data]
        unknown = [s for s in wanted if s not in data]
        if unknown:
            raise ValueError(f"dataset {dataset!r} has no split {unknown[0]!r}; it has {', '.join(data)}")
        for split in wanted:
            galleries.append(
                split_gallery(loaded, processor, data[split], f"{dataset} {split}", batch_size, progress, index_factory)
            )
    if gallery_dir is not None:
        galleries.append(
            folder_gallery(loaded, processor, model_dir, gallery_dir, index_dir, batch_size, progress, index_factory)
        )
    return DemoEngine(loaded, processor, galleries, model_name=str(model or DEFAULT_MODEL))


def problem_page(page: str):
    """The page served when the model cannot be had: what is wrong and the one command that fixes it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    with gr.Blocks(title="Text-based person search") as demo:
        gr.Markdown("# Text-based person search")
        gr.Markdown(page, elem_id="problem")
    demo.problem = page
    return demo


def build_demo(
    model: str | os.PathLike | None = None,
    gallery_dir: str | os.PathLike | None = None,
    index_dir: str | os.PathLike | None = None,
    top_k: int = 10,
    batch_size: int = 64,
    device: str | None = None,
    progress: bool = True,
    engine: DemoEngine | None = None,
    **engine_kwargs,
):
    """The ``gr.Blocks`` app (see :func:`build_engine` for the arguments). When the model cannot be had, a page that
    says why (``demo.problem``).

    Endpoints: ``/search (query, k, gallery, rerank) -> (results, message, first_stage)``, the results a gallery of
    ``(crop, "#rank label · score[ · ✓|✗]")``; ``/explain (query, k, gallery, rerank, number) -> (crop, attention,
    phrase_maps, explanation)`` for the ``number``-th result (0-based).
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    if engine is None:
        try:
            engine = build_engine(model, gallery_dir, index_dir, batch_size=batch_size, device=device,
                                  progress=progress, **engine_kwargs)  # fmt: skip
        except ModelUnavailable as err:
            return problem_page(err.page)
    names = list(engine.galleries)
    first = engine.gallery(names[0])
    max_k = 50  # not capped at the gallery: uploads add crops, and k > gallery gets a note, not an error
    model_name = engine.model_name

    def on_search(query, k, gallery, rerank, uploads):
        result = engine.search(query, int(k or top_k), gallery, bool(rerank), uploads or [])
        items = engine.images_for(result, result.hits, uploads or [])
        before = engine.images_for(result, result.first_stage, uploads or [])
        return items, result.message, gr.update(value=before, visible=bool(before)), result

    def on_select(result, uploads, evt: gr.SelectData):
        return _explained(result, evt.index, uploads)

    on_select.__annotations__["evt"] = gr.SelectData  # gradio injects the event by this annotation (not a string)

    def on_explain(query, k, gallery, rerank, number, uploads):
        result = engine.search(query, int(k or top_k), gallery, bool(rerank), uploads or [])
        return _explained(result, int(number or 0), uploads)

    def _explained(result, number, uploads):
        if result is None or not result.hits:
            return None, None, gr.update(value=[], visible=False), "Search first, then click a result to see why it matched."
        try:
            out = engine.explain(result, number, uploads or [])
        except (ValueError, OSError) as err:
            return None, None, gr.update(value=[], visible=False), f"Cannot explain this result: {err}"
        return out["crop"], out["attention"], gr.update(value=out["phrase_maps"], visible=bool(out["phrase_maps"])), out["markdown"]

    def on_gallery_change(gallery):
        g = engine.gallery(gallery)
        examples = engine.example_queries(gallery)
        return gr.update(choices=examples, value=None, visible=bool(examples)), gr.update(visible=g.labelled)

    def on_upload(files, uploads):
        uploads = list(uploads or [])
        paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]
        room = MAX_UPLOADS - len(uploads)
        notes = [] if len(paths) <= room else [f"Only {MAX_UPLOADS} uploads per session: {len(paths) - room} ignored."]
        new, problems = engine.encode_uploads(paths[: max(0, room)])
        uploads += new
        lines = problems + notes + [f"{len(uploads)} uploaded crop(s) are searched with the gallery in this session."]
        return "\n\n".join(lines), uploads

    with gr.Blocks(title="Text-based person search") as demo:
        gr.Markdown(
            "# Text-based person search\nDescribe a pedestrian; the model ranks the crops of the chosen gallery. "
            f"Model: `{model_name}` ({type(engine.model).__name__}). "
            + " ".join(g.message for g in engine.galleries.values())
        )
        with gr.Row():
            gallery = gr.Dropdown(names, value=names[0], label="Gallery", scale=2, elem_id="gallery")
            k = gr.Slider(1, max_k, value=min(top_k, max_k), step=1, label="Results", scale=2, elem_id="k")
            rerank = gr.Checkbox(
                value=False, label="Re-rank with ITM (cross-encoder)", visible=engine.is_cross_encoder, scale=1,
                elem_id="rerank",
            )  # fmt: skip
        query = gr.Textbox(
            label="Description", placeholder="a man in a blue shirt and black trousers carrying a backpack",
            elem_id="query",
        )  # fmt: skip
        with gr.Row():
            button = gr.Button("Search", variant="primary", elem_id="search")
            random_button = gr.Button("Random query", visible=first.labelled, elem_id="random")
        examples = engine.example_queries(names[0])
        example = gr.Dropdown(
            examples, value=None, label="Example queries (captions of the split)", visible=bool(examples),
            elem_id="examples",
        )  # fmt: skip
        message = gr.Markdown(elem_id="message")
        results = gr.Gallery(
            label="Top matches (click one to see why it matched)", columns=5, height="auto", object_fit="contain",
            allow_preview=False, elem_id="results",
        )  # fmt: skip
        before = gr.Gallery(
            label="Order before re-ranking (ITC)", columns=5, height="auto", object_fit="contain", visible=False,
            allow_preview=False, elem_id="before",
        )  # fmt: skip
        with gr.Row():
            crop = gr.Image(label="Selected crop", type="pil", height=DISPLAY_HEIGHT + 40, elem_id="crop", scale=1)
            attention = gr.Image(label="Attention map", type="pil", height=DISPLAY_HEIGHT + 40, elem_id="attention", scale=1)
            phrase_maps = gr.Gallery(label="Per-phrase attention", columns=4, visible=False, elem_id="phrase_maps", scale=2)
            explanation = gr.Markdown(elem_id="explanation")
        with gr.Accordion("Add your own crops (kept in memory for this session only)", open=False, elem_id="uploads"):
            files = gr.File(file_count="multiple", file_types=["image"], label="Upload crops", elem_id="upload")
            upload_message = gr.Markdown()
        gr.Markdown(PRIVACY_NOTE)
        last = gr.State(None)
        uploads = gr.State([])
        number = gr.Number(value=0, precision=0, visible=False)
        explain_button = gr.Button(visible=False)

        search_io = dict(inputs=[query, k, gallery, rerank, uploads], outputs=[results, message, before, last])
        button.click(on_search, api_name="search", **search_io)
        query.submit(on_search, api_name=False, **search_io)
        random_button.click(engine.random_query, inputs=gallery, outputs=query, api_name="random_query").then(
            on_search, api_name=False, **search_io
        )
        example.input(lambda e: e or "", inputs=example, outputs=query, api_name=False).then(
            on_search, api_name=False, **search_io
        )
        gallery.change(on_gallery_change, inputs=gallery, outputs=[example, random_button], api_name=False)
        explain_outputs = [crop, attention, phrase_maps, explanation]
        results.select(on_select, inputs=[last, uploads], outputs=explain_outputs, api_name=False)
        explain_button.click(
            on_explain, inputs=[query, k, gallery, rerank, number, uploads], outputs=explain_outputs, api_name="explain"
        )
        files.upload(on_upload, inputs=[files, uploads], outputs=[upload_message, uploads], api_name="upload")
    demo.engine = engine
    demo.index = first.index  # for callers and tests
    return demo


def configure_demo_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``tbps demo`` / ``spaces/tbps-demo/app.py`` (all optional)."""
    parser.description = (
        "Gradio demo: search person crops with a free-text description. With no arguments it serves the embedded "
        "ProcPEDES test and test_3c galleries (results marked right/wrong, rank and AP per query, attention maps) "
        f"with the model of {DEFAULT_MODEL} (made by `{MAKE_MODEL_COMMAND}`)."
    )
    env = os.environ.get
    parser.add_argument(
        "--model", default=env("TBPS_MODEL"), metavar="DIR_OR_HUB_ID",
        help=f"saved model folder (save_pretrained) or hub id org/name; default: $TBPS_MODEL or {DEFAULT_MODEL}",
    )  # fmt: skip
    parser.add_argument(
        "--train_if_missing", action="store_true",
        help=f"when {DEFAULT_MODEL} does not exist, train it first (`{MAKE_MODEL_COMMAND}`, ~10 min on CPU)",
    )  # fmt: skip
    parser.add_argument(
        "--gallery", default=env("TBPS_GALLERY"), metavar="FOLDER",
        help="folder of person crops (any image format, searched recursively); default: $TBPS_GALLERY",
    )  # fmt: skip
    parser.add_argument(
        "--dataset", default=env("TBPS_DATASET"),
        help="a labelled benchmark whose split is the gallery (procpedes, cuhk-pedes, icfg-pedes, rstpreid, ufine6926, "
        "ufine3c): results marked right/wrong, rank and AP per caption; default procpedes when no --gallery",
    )  # fmt: skip
    parser.add_argument("--split", nargs="+", default=None, help="split(s) of --dataset (default: test; ProcPEDES: test test_3c)")
    parser.add_argument("--data_dir", default=env("TBPS_DATA_DIR"), help="folder of the benchmark's files (--dataset)")
    parser.add_argument("--cache_dir", default=None, help="datasets cache (default: runs/quickstart/data_cache if present)")
    parser.add_argument(
        "--dataset_options", default=env("TBPS_DATASET_OPTIONS"),
        help='JSON of builder options, e.g. \'{"num_test_identities": 50}\' (ProcPEDES); default: $TBPS_DATASET_OPTIONS',
    )  # fmt: skip
    parser.add_argument(
        "--index", default=env("TBPS_INDEX", "Flat"), metavar="FACTORY",
        help="FAISS index_factory string: Flat (exact, default), IVF1024,Flat, IVF4096,PQ32, HNSW32 ... "
        "(see docs/benchmarks.md for the measured trade-off)",
    )  # fmt: skip
    parser.add_argument(
        "--index_dir", default=env("TBPS_INDEX_DIR"),
        help="save the --gallery index here and reuse it on the next start (updated when crops are added, changed "
        "or removed; rebuilt when the model or --index changes or the files are damaged)",
    )  # fmt: skip
    parser.add_argument("--top_k", type=int, default=10, help="results shown by default (default 10)")
    parser.add_argument("--batch_size", type=int, default=64, help="images per forward pass while indexing")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 to expose)")
    parser.add_argument("--port", type=int, default=None, help="port (default: gradio's, 7860)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    return parser


def demo_from_args(args: argparse.Namespace):
    import json

    options = None
    if args.dataset_options:
        try:
            options = json.loads(args.dataset_options)
        except json.JSONDecodeError as err:
            raise ValueError(f"--dataset_options is not valid JSON: {err}") from None
    if args.top_k < 1:
        raise ValueError(f"--top_k must be >= 1, got {args.top_k}")
    return build_demo(
        args.model, args.gallery, args.index_dir, top_k=args.top_k, batch_size=args.batch_size, device=args.device,
        dataset=args.dataset, splits=args.split, data_dir=args.data_dir, cache_dir=args.cache_dir,
        dataset_options=options, index_factory=args.index, train_if_missing=args.train_if_missing,
    )  # fmt: skip


def run_demo(args: argparse.Namespace) -> int:
    import sys

    from .errors import check_port_free, resolve_device

    check_port_free(args.host, args.port)  # a taken port is reported before minutes of indexing, not after
    args.device = resolve_device(args.device)
    demo = demo_from_args(args)
    if getattr(demo, "problem", None):
        print(f"tbps demo: {demo.problem.splitlines()[0].lstrip('# ')} — the page at the URL below says what to do",
              file=sys.stderr)  # fmt: skip
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import report_user_errors

    parser = configure_demo_parser(argparse.ArgumentParser(prog="tbps demo"))
    args = parser.parse_args(argv)
    import tbps_hf  # noqa: F401  (registers the models with the Auto classes)

    return int(report_user_errors("tbps demo", run_demo, args) or 0)


__all__ = [
    "DemoEngine",
    "Gallery",
    "ModelUnavailable",
    "SearchResult",
    "build_demo",
    "build_engine",
    "configure_demo_parser",
    "load_or_build_index",
    "main",
    "resolve_model",
    "run_demo",
]

if __name__ == "__main__":
    raise SystemExit(main())
