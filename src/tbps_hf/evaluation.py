"""Evaluation: encode gallery and queries → metrics (overall and per query group) → table / JSON / plots.

``tbps evaluate --model DIR --dataset NAME`` is :func:`run`; the library entry point is :func:`evaluate_model`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import TBPSUserError, WeightsMismatchError, resolve_device
from .modeling_utils import slice_features
from .retrieval import encode_images, encode_texts

logger = logging.getLogger(__name__)

# Above this many query × gallery scores the [Q, G] matrix is not materialized (streaming metrics instead).
# 50M float32 scores = 200 MB; CUHK-PEDES test (6,156 × 3,074 ≈ 19M) stays dense.
DENSE_MAX_SCORES = 50_000_000
METRIC_KEYS = ("R@1", "R@5", "R@10", "mAP", "mINP", "mSD")


def _group_metrics(per_query: dict[str, np.ndarray], positions: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Metrics of a subset of the evaluated queries from the per-query arrays of the metric core.

    ``positions`` index the per-query arrays. The core's per-query ``ap``/``inp``/``sd`` are fractions in [0, 1]
    whose means ×100 are the reported mAP/mINP/mSD.
    """
    ranks = per_query["first_positive_rank"][positions]
    out = {f"R@{k}": float(100.0 * np.mean(ranks <= k)) for k in ks}
    out["mAP"] = float(100.0 * np.mean(per_query["ap"][positions]))
    out["mINP"] = float(100.0 * np.mean(per_query["inp"][positions]))
    out["mSD"] = float(100.0 * np.mean(per_query["sd"][positions]))
    out["num_queries"] = int(len(positions))
    return out


def group_breakdown(
    per_query: dict[str, np.ndarray], query_groups: dict[str, Sequence[str]], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, dict[str, dict[str, float]]]:
    """``{grouping: {value: metrics}}`` from the core's per-query arrays (queries without positives are absent)."""
    evaluated = np.asarray(per_query["query_index"])
    result = {}
    for name, values in query_groups.items():
        values = np.asarray([str(v) for v in values])
        evaluated_values = values[evaluated]
        result[name] = {
            value: _group_metrics(per_query, np.flatnonzero(evaluated_values == value), ks)
            for value in sorted(set(evaluated_values.tolist()))
        }
    return result


def _grid_rows(num_queries: int, grid_queries: int) -> np.ndarray:
    """Evenly spread query rows (different identities, granularities …) for the retrieval grid."""
    n = min(grid_queries, num_queries)
    return np.unique(np.linspace(0, num_queries - 1, n).round().astype(np.int64)) if n > 0 else np.zeros(0, np.int64)


def _model_info(model) -> dict[str, Any]:
    config = model.config
    return {
        "model_type": getattr(config, "model_type", type(model).__name__),
        "name_or_path": getattr(config, "_name_or_path", "") or "",
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "similarity_range": list(model.similarity_range),
    }


def _to_jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


class OutputWriteError(TBPSUserError, OSError):
    """The results were computed but could not be written; ``results`` holds them (the table can still be shown)."""

    def __init__(self, message: str, results: dict[str, Any]):
        super().__init__(message)
        self.results = results


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) and check that files can be written there, *before* any encoding: a typo'd
    or read-only ``--output_dir`` must not cost a whole evaluation. Raises `TBPSUserError` naming the folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise TBPSUserError(f"--output_dir {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".tbps-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise TBPSUserError(f"--output_dir {path}: cannot write there ({err.strerror or err})") from None
    return path


def evaluate_model(
    model,
    processor,
    view,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = True,
    output_dir: str | os.PathLike | None = None,
    streaming: bool | None = None,
    grid_queries: int = 8,
    ks: Sequence[int] = (1, 5, 10),
    dataset_info: dict[str, Any] | None = None,
    rerank_k: int | None = None,
) -> dict[str, Any]:
    """Evaluate a model on an ``EvaluationView`` (text → image retrieval).

    Args:
        model: a ``TBPSPreTrainedModel``.
        processor: its processor.
        view: ``tbps_hf.data.EvaluationView`` (``gallery_images``, ``gallery_ids``, ``queries``, ``query_ids``,
            ``query_groups``).
        batch_size: images / captions per forward pass.
        device: where to run the model (default: where it is).
        output_dir: when given, write ``metrics.json``, ``cmc.png``, ``sd_distribution.png``, ``retrieval_grid.png``
            and, for models with ``get_image_attention_maps``, ``attention_maps.png`` (the grid's top-1 hits).
        streaming: ``True`` forces ``streaming_retrieval_metrics`` (never builds ``[Q, G]``); ``None`` (default)
            streams only when Q×G > ``DENSE_MAX_SCORES``.
        grid_queries: rows of the retrieval grid (0: no grid).
        dataset_info: extra fields stored under ``"dataset"`` in the results (name, split, data_dir …).
        rerank_k: for a cross-encoder (``config.is_cross_encoder``, LAIP): first-stage candidates re-ranked per query
            (default ``config.rerank_k``). ``overall`` is then the re-ranked result (mSD over
            ``config.rerank_range``), ``first_stage`` the first-stage one, and ``rerank_k`` the k used.

    Raises:
        `TBPSUserError` when ``output_dir`` cannot be created or written (checked before encoding);
        :class:`OutputWriteError` (with ``.results``) when writing the files fails afterwards (e.g. a full disk).

    Returns:
        ``{"overall": {R@k, mAP, mINP, mSD, num_queries, num_skipped_queries}, "groups": {grouping: {value:
        metrics}}, "num_queries", "num_gallery", "model", "dataset", "streaming", "timings", "files"}`` plus
        ``"per_query"`` (the core's per-query numpy arrays; not written to JSON); a cross-encoder adds
        ``"first_stage"`` (the first stage's overall metrics) and ``"rerank_k"``.
    """
    from .metrics import retrieval_metrics, streaming_retrieval_metrics

    query_ids = np.asarray(view.query_ids, dtype=np.int64)
    gallery_ids = np.asarray(view.gallery_ids, dtype=np.int64)
    queries = list(view.queries)
    num_q, num_g = len(queries), len(gallery_ids)
    if num_q == 0 or num_g == 0:
        raise ValueError(f"Nothing to evaluate: {num_q} queries and {num_g} gallery images")
    if len(query_ids) != num_q:
        raise ValueError(f"The view has {num_q} queries but {len(query_ids)} query ids")
    sim_range = tuple(model.similarity_range)
    if output_dir is not None:
        output_dir = prepare_output_dir(output_dir)

    timings = {}
    start = time.perf_counter()
    image_features = encode_images(model, processor, view.gallery_images, batch_size, device, progress)
    timings["encode_images_s"] = time.perf_counter() - start
    start = time.perf_counter()
    text_features = encode_texts(model, processor, queries, batch_size, device, progress)
    timings["encode_texts_s"] = time.perf_counter() - start

    if streaming is None:
        streaming = num_q * num_g > DENSE_MAX_SCORES
    start = time.perf_counter()
    similarity = None
    score_fn, first_stage = model.similarity, None
    cross_encoder = bool(getattr(model.config, "is_cross_encoder", False))
    if cross_encoder:  # two-stage retrieval: the first stage's metrics, then the re-ranked ones as `overall`
        from .reranking import check_rerank_k, rerank_similarity

        rerank_k = check_rerank_k(int(model.config.rerank_k) if rerank_k is None else rerank_k, num_g)

        def score_fn(text_block, image_block):
            return rerank_similarity(model, text_block, image_block, model.similarity(text_block, image_block), rerank_k)

    with torch.inference_mode():
        if cross_encoder:
            first_stage = _first_stage_metrics(model, text_features, image_features, query_ids, gallery_ids, ks, streaming)
            sim_range = tuple(model.config.rerank_range)
        if streaming:
            metrics = streaming_retrieval_metrics(
                text_features,
                image_features,
                query_ids,
                gallery_ids,
                similarity_fn=score_fn,
                ks=tuple(ks),
                similarity_range=sim_range,
                return_per_query=True,
            )
        else:
            similarity = score_fn(text_features, image_features).float().cpu().numpy()
            metrics = retrieval_metrics(
                similarity, query_ids, gallery_ids, ks=tuple(ks), similarity_range=sim_range, return_per_query=True
            )
    timings["metrics_s"] = time.perf_counter() - start

    per_query = metrics.pop("per_query")
    groups = group_breakdown(per_query, getattr(view, "query_groups", None) or {}, ks)
    results: dict[str, Any] = {
        "overall": {k: (float(v) if isinstance(v, (float, np.floating)) else int(v)) for k, v in metrics.items()},
        "groups": groups,
        "num_queries": num_q,
        "num_gallery": num_g,
        "model": _model_info(model),
        "dataset": dict(dataset_info or {}),
        "streaming": bool(streaming),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "files": {},
    }
    if cross_encoder:
        results["first_stage"] = first_stage
        results["rerank_k"] = rerank_k

    if output_dir is not None:
        try:
            _write_outputs(model, processor, view, results, per_query, similarity, score_fn, text_features,
                           image_features, query_ids, gallery_ids, queries, grid_queries, output_dir)
        except OSError as err:  # a full disk, a folder removed meanwhile …: the numbers are not lost
            results["per_query"] = per_query
            raise OutputWriteError(
                f"could not write the results in {output_dir} ({err.strerror or err}); the metrics were computed",
                results,
            ) from err

    results["per_query"] = per_query
    return results


def _write_outputs(model, processor, view, results, per_query, similarity, score_fn, text_features, image_features,
                   query_ids, gallery_ids, queries, grid_queries, output_dir: Path) -> None:
    """metrics.json and the plots of :func:`evaluate_model` (files recorded in ``results["files"]``)."""
    from .metrics.plots import plot_cmc, plot_sd_distribution
    from .visualization import retrieval_grid

    num_q, num_g = len(queries), len(gallery_ids)
    files = results["files"]
    files["metrics"] = str(output_dir / "metrics.json")
    _write_json_atomic(output_dir / "metrics.json", results)  # the numbers first: plots are the lesser loss
    files["cmc"] = str(plot_cmc(per_query["first_positive_rank"], output_dir / "cmc.png") or output_dir / "cmc.png")
    files["sd_distribution"] = str(
        plot_sd_distribution(per_query["sd"], output_dir / "sd_distribution.png") or output_dir / "sd_distribution.png"
    )
    rows = _grid_rows(num_q, grid_queries)
    if len(rows):
        k = min(10, num_g)
        with torch.inference_mode():
            if similarity is not None:
                row_sim = torch.from_numpy(similarity[rows])
            else:
                row_sim = score_fn(slice_features(text_features, torch.from_numpy(rows)), image_features)
                row_sim = row_sim.float().cpu()
        # Stable descending order (ties: lower gallery index first, as in the metric core).
        order = np.argsort(-row_sim.numpy(), axis=1, kind="stable")[:, :k]
        top_scores = np.take_along_axis(row_sim.numpy(), order, axis=1)
        matches = gallery_ids[order] == query_ids[rows][:, None]
        files["retrieval_grid"] = str(
            retrieval_grid(
                [queries[i] for i in rows],
                view.gallery_images,
                order,
                matches,
                output_dir / "retrieval_grid.png",
                max_queries=len(rows),
                k=k,
                scores=top_scores,
            )
        )
        attention = _attention_grid(model, processor, view.gallery_images, order[:, 0], output_dir / "attention_maps.png")
        if attention is not None:
            files["attention_maps"] = str(attention)
        if hasattr(model, "get_phrase_attention_maps") and hasattr(processor, "phrase_inputs"):
            phrase_maps = _phrase_map_grid(model, processor, queries, rows, view.gallery_images, order[:, 0], output_dir)
            if phrase_maps is not None:
                files["phrase_maps"] = str(phrase_maps)
    _write_json_atomic(output_dir / "metrics.json", results)  # again, now listing every file


def _write_json_atomic(path: Path, obj: Any) -> None:
    """Write then rename: a failed write (full disk) never leaves a truncated ``metrics.json`` behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(_to_jsonable(obj), indent=2))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _first_stage_metrics(model, text_features, image_features, query_ids, gallery_ids, ks, streaming) -> dict:
    """A cross-encoder's first-stage (`model.similarity`) metrics, reported beside the re-ranked ones."""
    from .metrics import retrieval_metrics, streaming_retrieval_metrics

    common = dict(ks=tuple(ks), similarity_range=tuple(model.similarity_range))
    if streaming:
        metrics = streaming_retrieval_metrics(
            text_features, image_features, query_ids, gallery_ids, similarity_fn=model.similarity, **common
        )
    else:
        first = model.similarity(text_features, image_features).float().cpu().numpy()
        metrics = retrieval_metrics(first, query_ids, gallery_ids, **common)
    metrics.pop("per_query", None)
    return {k: (float(v) if isinstance(v, (float, np.floating)) else int(v)) for k, v in metrics.items()}


def _phrase_map_grid(model, processor, queries, rows, gallery_images, top1, output_dir: Path) -> Path | None:
    """LAIP: per noun phrase of the first grid query that has one, the forward and the bidirectional attention maps
    over its top-1 hit (``phrase_maps.png``); None when no grid query has a noun phrase."""
    from .retrieval import load_image
    from .visualization import attention_grid

    for row, hit in zip(rows, top1):
        try:
            inputs = processor.phrase_inputs(queries[int(row)])
        except ValueError:  # no noun phrase in this caption
            continue
        image = load_image(gallery_images[int(hit)])
        device = next(model.parameters()).device
        pixels = processor(images=[image], return_tensors="pt")["pixel_values"].to(device)
        maps = model.get_phrase_attention_maps(
            inputs["input_ids"].to(device), inputs["attention_mask"].to(device), pixels, labels=inputs["labels"].to(device)
        )
        phrases = list(inputs["phrases"])
        both = torch.cat([maps.forward_maps, maps.bidirectional_maps]).cpu()
        short = [p if len(p) <= 12 else p[:11] + "…" for p in phrases]  # one column each: keep labels apart
        titles = [f"F {p}" for p in short] + [f"B {p}" for p in short]
        return attention_grid(
            [image] * len(titles), both, output_dir / "phrase_maps.png", titles=titles,
            heading=f"q{int(row) + 1}: forward (F) vs bidirectional (B) attention per noun phrase",
        )  # fmt: skip
    return None


def _attention_grid(model, processor, gallery_images, indices: np.ndarray, path: Path) -> Path | None:
    """The model's attention maps on the given gallery images (the grid's top-1 hits), or None when it has none."""
    from .retrieval import load_image
    from .visualization import attention_grid

    images = [load_image(gallery_images[int(i)]) for i in indices]
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            maps = model.get_image_attention_maps(pixel_values.to(next(model.parameters()).device))
    finally:
        model.train(was_training)
    if maps is None:
        return None
    return attention_grid(images, maps, path, titles=[f"top-1 of q{r + 1}" for r in range(len(images))])


def format_table(results: dict[str, Any], title: str | None = None) -> str:
    """A plain-text table: the overall row, then one row per group value."""
    keys = [k for k in results["overall"] if k.startswith("R@")] + ["mAP", "mINP", "mSD"]
    rows = [("overall", results["overall"])]
    for grouping, values in results.get("groups", {}).items():
        rows += [(f"{grouping}={value}", metrics) for value, metrics in values.items()]
    name_w = max(len(r[0]) for r in rows + [("", None)]) + 2
    header = "".ljust(name_w) + "".join(k.rjust(8) for k in keys) + "queries".rjust(9)
    lines = [title] if title else []
    lines += [header, "-" * len(header)]
    for name, metrics in rows:
        cells = "".join(f"{metrics.get(k, float('nan')):8.2f}" for k in keys)
        lines.append(name.ljust(name_w) + cells + f"{int(metrics.get('num_queries', 0)):9d}")
    skipped = results["overall"].get("num_skipped_queries", 0)
    lines.append(
        f"{results['num_queries']} queries ({skipped} without a positive, skipped), {results['num_gallery']} gallery images"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------- CLI
def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``tbps evaluate``."""
    parser.description = (
        "Evaluate a saved tbps-hf model on a benchmark split: encodes gallery and queries, prints R@1/5/10, mAP, "
        "mINP and mSD (overall and per query group), and writes metrics.json, cmc.png, sd_distribution.png, "
        "retrieval_grid.png and attention_maps.png (where the image side looks on the top hits)."
    )
    parser.add_argument(
        "--model", required=True, metavar="DIR_OR_ID",
        help="folder written by save_pretrained (config.json + model.safetensors + processor files), e.g. runs/ivt, "
        "or a hub id (org/name) loaded with AutoModel / AutoProcessor",
    )
    parser.add_argument(
        "--dataset", required=True, metavar="NAME",
        help="benchmark name: cuhk-pedes, icfg-pedes, rstpreid, ufine6926, ufine3c or procpedes",
    )
    parser.add_argument("--data_dir", default=None, help="folder of the release (annotation JSON + images); not needed for procpedes")
    parser.add_argument(
        "--split", nargs="+", default=["test"],
        help="split(s) to evaluate (default: test; e.g. `--split test test_3c` for procpedes)",
    )
    parser.add_argument("--annotation_file", default=None, help="override the annotation file name/path")
    parser.add_argument("--output_dir", default=None, help="write metrics.json and plots here (per split if several)")
    parser.add_argument("--batch_size", type=int, default=64, help="images/captions per forward pass (default 64)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when available, else cpu)")
    parser.add_argument(
        "--streaming", action="store_true",
        help="never build the full query×gallery matrix (default: only when it would exceed 50M scores)",
    )
    parser.add_argument("--cache_dir", default=None, help="datasets cache folder")
    parser.add_argument(
        "--dataset_options", default=None, metavar="JSON",
        help='JSON of dataset options: ProcPEDES generator options (e.g. \'{"num_test_identities": 20}\'), or '
        '"download_mode" / "verification_mode" for the benchmarks',
    )
    parser.add_argument(
        "--rebuild_cache", action="store_true",
        help="prepare the benchmark's dataset cache again, checking every image (after image files were replaced, "
        "moved or removed); not needed after editing the annotation file",
    )
    parser.add_argument(
        "--rerank_k", type=int, default=None,
        help="cross-encoders (laip): first-stage candidates re-ranked per query (default: the model's config.rerank_k); "
        "metrics.json then holds the re-ranked `overall`, the `first_stage` metrics and `rerank_k`",
    )
    parser.add_argument("--no_progress", action="store_true", help="hide progress bars")
    return parser


# A hub repository id: "org/name" (what `from_pretrained` accepts besides a folder).
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
_MAX_KEYS_NAMED = 8


def _name_keys(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_KEYS_NAMED])
    return shown + (f" … ({len(keys)} in all)" if len(keys) > _MAX_KEYS_NAMED else "")


def _mismatched_shapes(folder: Path, model_class, config) -> list[str]:
    """``key: checkpoint [..] vs config [..]`` for every weight whose shape in the folder's safetensors differs
    from what ``config`` builds (the model is built on the meta device: no memory, no init)."""
    from safetensors import safe_open

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in model_class(config).state_dict().items()}
    found = []
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                shape = tuple(f.get_slice(key).get_shape())
                if key in expected and expected[key] != shape:
                    found.append(f"{key}: checkpoint {list(shape)} vs config {list(expected[key])}")
    return found


def _load_weights(source: str, local: bool):
    """``AutoModel.from_pretrained`` that refuses weights not matching the config instead of evaluating
    half-random weights (transformers only logs missing / unexpected keys and re-initializes them)."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its loading report is replaced by one error naming the keys
    try:
        try:
            model, info = AutoModel.from_pretrained(source, use_safetensors=True, output_loading_info=True)
        except RuntimeError as err:
            if "mismatched_sizes" not in str(err) and "size mismatch" not in str(err):
                raise
            detail = ""
            if local:
                config = AutoConfig.from_pretrained(source)
                model_class = AutoModel._model_mapping[type(config)]
                shapes = _mismatched_shapes(Path(source), model_class, config)
                detail = "; ".join(shapes[:_MAX_KEYS_NAMED])
                if len(shapes) > _MAX_KEYS_NAMED:
                    detail += f" … ({len(shapes)} in all)"
            raise WeightsMismatchError(
                f"--model {source}: the weights do not fit config.json (was the config edited?): shapes differ: "
                f"{detail or err}"
            ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing from the weights: {_name_keys(info['missing_keys'])}")
    if info.get("unexpected_keys"):
        problems.append(f"not in the model the config builds: {_name_keys(info['unexpected_keys'])}")
    if info.get("mismatched_keys"):
        problems.append(f"shapes differ: {_name_keys(str(k) for k in info['mismatched_keys'])}")
    if info.get("error_msgs"):
        problems.append("; ".join(map(str, info["error_msgs"])))
    if problems:
        raise WeightsMismatchError(
            f"--model {source}: the weights do not fit config.json (was the config edited, or the weights saved by "
            f"another version?); {'; '.join(problems)}"
        )
    return model


def load_model_and_processor(model_dir: str | os.PathLike, device: str | None = None):
    """``AutoModel`` / ``AutoProcessor`` from a saved folder or a hub id (``org/name``), safetensors weights only.

    Raises (one clear message each): `DeviceError` for a device this torch cannot use (checked first);
    `FileNotFoundError` for a folder that does not exist or lacks ``config.json`` / ``*.safetensors``;
    `WeightsMismatchError` when the weights do not fit the config (missing, unexpected or mis-shaped keys, named);
    `TBPSUserError` when a hub id cannot be loaded (unknown, private, or no network).
    """
    import tbps_hf  # noqa: F401  (registers the methods with the Auto classes)
    from transformers import AutoProcessor

    device = resolve_device(device)
    given = str(model_dir)
    path = Path(model_dir).expanduser()
    local = path.is_dir()
    if local:
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json; pass --model a folder written by save_pretrained")
        if not any(path.glob("*.safetensors")):
            raise FileNotFoundError(f"{path} has no *.safetensors weights (only safetensors checkpoints are loaded)")
        source = str(path)
    elif path.exists():
        raise FileNotFoundError(f"--model {given} is a file; pass a folder written by save_pretrained or a hub id")
    elif HUB_ID_PATTERN.match(given) and not (path.parent.is_dir() and str(path.parent) not in ("", ".")):
        source = given  # "org/name" with no local folder "org": a hub id
    else:
        raise FileNotFoundError(
            f"Model folder {given!r} does not exist; pass --model a folder written by save_pretrained "
            "(e.g. the --output_dir of `tbps train` or DIR/model of `tbps quickstart`) or a hub id (org/name)"
        )
    try:
        model = _load_weights(source, local)
        processor = AutoProcessor.from_pretrained(source)
    except WeightsMismatchError:
        raise
    except (OSError, ValueError) as err:
        reason = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        if local:
            raise TBPSUserError(f"--model {source}: cannot load the saved model or its processor: {reason}") from None
        raise TBPSUserError(
            f"--model {source}: no folder of that name, and the hub id cannot be loaded ({reason}); pass a folder "
            "written by save_pretrained, or check the id, your access and the network (HF_HUB_OFFLINE=1 reads only "
            "the local hub cache)"
        ) from None
    model.eval()
    return model.to(device), processor


def _evaluation_outputs(output_dir: str | None, splits: Sequence[str]) -> dict[str, Path | None]:
    if output_dir is None:
        return {split: None for split in splits}
    root = prepare_output_dir(output_dir)
    return {split: (prepare_output_dir(root / split) if len(splits) > 1 else root) for split in splits}


def run(args: argparse.Namespace) -> int:
    """``tbps evaluate``. Returns 0; errors caused by the input raise `TBPSUserError` / `ValueError` /
    `FileNotFoundError` (``tbps`` prints them as one line and exits with 1). Checked in the order that costs least:
    arguments, ``--output_dir``, ``--device``, the model, the dataset, then the encoding."""
    from datasets.exceptions import ManualDownloadError

    from .data import EvaluationView, load_tbps_dataset

    if args.batch_size < 1:
        raise TBPSUserError(f"--batch_size must be >= 1, got {args.batch_size}")
    options: dict[str, Any] = {}
    if getattr(args, "dataset_options", None):
        try:
            options = json.loads(args.dataset_options)
        except json.JSONDecodeError as err:
            raise TBPSUserError(f"--dataset_options is not valid JSON ({err})") from None
        if not isinstance(options, dict):
            raise TBPSUserError(f"--dataset_options must be a JSON object, got {args.dataset_options!r}")
    if getattr(args, "rebuild_cache", False):
        options["download_mode"] = "force_redownload"
    if getattr(args, "no_progress", False):  # the libraries' own bars too (loading weights, preparing splits)
        import datasets
        from transformers.utils import logging as hf_logging

        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()
    splits = list(dict.fromkeys(args.split))
    outputs = _evaluation_outputs(args.output_dir, splits)
    device = resolve_device(args.device)
    model, processor = load_model_and_processor(args.model, device)
    try:
        dataset = load_tbps_dataset(
            args.dataset, data_dir=args.data_dir, cache_dir=args.cache_dir, annotation_file=args.annotation_file,
            **options,
        )
    except (ValueError, TypeError, OSError, ManualDownloadError) as err:  # the loader's messages name the file/record
        reason = " | ".join(line.strip() for line in str(err).splitlines() if line.strip())
        raise TBPSUserError(f"--dataset {args.dataset}: {reason}") from None
    unknown = [s for s in splits if s not in dataset]
    if unknown:
        raise TBPSUserError(
            f"unknown split(s) {', '.join(map(repr, unknown))} for {args.dataset!r}; available: {', '.join(dataset.keys())}"
        )
    write_errors = []
    for split in splits:
        view = EvaluationView(dataset[split])
        out = outputs[split]
        try:
            results = evaluate_model(
                model,
                processor,
                view,
                batch_size=args.batch_size,
                device=device,
                progress=not getattr(args, "no_progress", False),
                output_dir=out,
                streaming=True if args.streaming else None,
                dataset_info={"name": args.dataset, "split": split, "data_dir": args.data_dir},
                rerank_k=getattr(args, "rerank_k", None),
            )
        except OutputWriteError as err:  # show the numbers anyway, then fail
            results = err.results
            write_errors.append(str(err))
        print(format_table(results, title=f"{args.dataset} / {split} — {args.model}"))
        if out is not None and results["files"] and len(write_errors) == 0:
            print(f"wrote {', '.join(sorted(Path(f).name for f in results['files'].values()))} in {out}")
    if write_errors:
        raise TBPSUserError(" | ".join(write_errors))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import report_user_errors

    parser = configure_parser(argparse.ArgumentParser(prog="tbps evaluate"))
    args = parser.parse_args(argv)
    return int(report_user_errors("tbps evaluate", run, args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
