"""Model cards: ``write_model_card`` renders the packaged template (``tbps_hf/templates/model_card.md``) into a saved model folder's ``README.md``.

The YAML header (library, tags, datasets, metrics and a ``model-index`` with the evaluation results) is built with
``huggingface_hub.ModelCardData`` / ``EvalResult`` so the hub parses it as it does any transformers model card.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Inside the package (package data), so a wheel install renders the same card as a source checkout.
TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "model_card.md"

DATASET_NAMES = {
    "cuhk-pedes": "CUHK-PEDES",
    "icfg-pedes": "ICFG-PEDES",
    "rstpreid": "RSTPReid",
    "ufine6926": "UFine6926",
    "ufine3c": "UFine3C",
    "procpedes": "ProcPEDES",
}
METRIC_TYPES = {"mAP": "map", "mINP": "minp", "mSD": "msd"}  # R@k → recall_at_k


def _metric_type(name: str) -> str | None:
    if name.startswith("R@"):
        return f"recall_at_{name[2:]}"
    return METRIC_TYPES.get(name)


def _by_split(metrics: Mapping[str, Any] | None) -> dict[str, dict[str, float]]:
    """Accept ``{R@1: ...}`` (one split, "test") or ``{split: {R@1: ...}}``; keep the reported metrics only."""
    if not metrics:
        return {}
    if all(isinstance(v, Mapping) for v in metrics.values()):
        nested = {str(split): dict(values) for split, values in metrics.items()}
    else:
        nested = {"test": dict(metrics)}
    return {
        split: {k: float(v) for k, v in values.items() if _metric_type(k) and isinstance(v, (int, float))}
        for split, values in nested.items()
    }


def _markdown_table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _metrics_table(by_split: Mapping[str, Mapping[str, float]]) -> str:
    if not by_split:
        return "_Not evaluated yet._"
    names = sorted({n for values in by_split.values() for n in values})
    names.sort(key=lambda n: (0, int(n[2:])) if n.startswith("R@") and n[2:].isdigit() else (1, n))
    rows = [[split] + [f"{values.get(n, float('nan')):.2f}" for n in names] for split, values in by_split.items()]
    return _markdown_table(rows, ["split"] + names)


def build_card_data(
    method: str,
    dataset: str | None,
    metrics: Mapping[str, Any] | None,
    model_name: str,
    preset: str,
    license: str = "apache-2.0",
):
    from huggingface_hub import EvalResult, ModelCardData

    dataset_key = dataset.lower().replace("_", "-") if dataset else None
    pretty = DATASET_NAMES.get(dataset_key, dataset) if dataset else None
    eval_results = [
        EvalResult(
            task_type="text-based-person-search",
            task_name="Text-based person search (text-to-image retrieval)",
            dataset_type=dataset_key,
            dataset_name=pretty,
            dataset_split=split,
            metric_type=_metric_type(name),
            metric_name=name,
            metric_value=round(value, 2),
        )
        for split, values in (_by_split(metrics) if dataset_key else {}).items()
        for name, value in values.items()
    ]
    return ModelCardData(
        model_name=model_name,
        library_name="transformers",
        license=license,
        tags=["text-based-person-search", "person-retrieval", "image-text-retrieval", "tbps-hf", method, f"preset-{preset}"],
        datasets=[dataset_key] if dataset_key else None,
        metrics=["recall", "map", "minp", "msd"],
        eval_results=eval_results or None,
    )


def write_model_card(
    output_dir: str | os.PathLike,
    method: str,
    preset: str,
    dataset: str | None,
    metrics: Mapping[str, Any] | None = None,
    training_args: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    repo_id: str | None = None,
    template_path: str | os.PathLike | None = None,
    source: str | None = None,
    license: str = "apache-2.0",
) -> Path:
    """Write ``README.md`` (a model card) into a saved model folder.

    Args:
        output_dir: the folder holding the saved model (``save_pretrained``).
        method: ``"ivt"``, ``"pcc"``, ``"cfam"`` or ``"laip"``.
        preset: the config preset trained (``"tiny"``, ``"base"`` …).
        dataset: the training/evaluation dataset name (``"cuhk-pedes"``, ``"procpedes"`` …); ``None`` when unknown
            (a converted release).
        metrics: ``{"R@1": .., "R@5": .., "R@10": .., "mAP": .., "mINP": .., "mSD": ..}`` for the test split, or
            ``{split: {...}}`` for several splits (percent values). Other keys are ignored.
        training_args: hyperparameters to list (learning rate, epochs, batch size …); values must be JSON-able.
        model_name: card title (default ``"<method>-<preset>-<dataset>"``).
        repo_id: the hub id / folder used in the usage snippet (default: the folder name).
        template_path: a Jinja template (default: the packaged ``tbps_hf/templates/model_card.md``).
        source: where the weights come from, in markdown (a converted release: its repository, file, checksum and
            licence); default: "trained with tbps-hf".
        license: the card's licence (SPDX id): the licence of the weights, e.g. ``"mit"`` for the IVT release.

    Returns:
        The path of the written ``README.md``.
    """
    from huggingface_hub import ModelCard

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    method_key = method.lower()
    info = _method_info(method_key)
    dataset_pretty = DATASET_NAMES.get(dataset.lower().replace("_", "-"), dataset) if dataset else "an unnamed dataset"
    model_name = model_name or f"{method_key}-{preset}-{(dataset or 'model').lower()}"
    card_data = build_card_data(method_key, dataset, metrics, model_name, preset, license=license)

    metrics_table = _metrics_table(_by_split(metrics))
    training_table = (
        _markdown_table([[f"`{k}`", f"`{json.dumps(v, default=str)}`"] for k, v in training_args.items()], ["argument", "value"])
        if training_args
        else "_No training arguments recorded._"
    )
    similarity_range = "[-1, 1]"
    config_file = output_dir / "config.json"
    if config_file.is_file():
        sim = json.loads(config_file.read_text()).get("similarity_range")
        if sim:
            similarity_range = f"[{sim[0]:g}, {sim[1]:g}]"

    template = Path(template_path) if template_path else TEMPLATE_PATH
    kwargs = dict(
        model_name=model_name,
        method_title=info["title"],
        paper=info["paper"],
        architecture=info["architecture"],
        citation=info["citation"],
        preset=preset,
        dataset_pretty=dataset_pretty,
        repo_id=repo_id or output_dir.name,
        similarity_range=similarity_range,
        metrics_table=metrics_table,
        training_table=training_table,
        source=source or f"trained with tbps-hf (preset `{preset}`) on {dataset_pretty}.",
    )
    card = ModelCard.from_template(card_data, template_path=str(template), **kwargs)
    path = output_dir / "README.md"
    card.save(path)
    return path


def add_eval_results(
    model_dir: str | os.PathLike, metrics: Mapping[str, Any], dataset: str
) -> Path:
    """Record evaluation results in an existing model card: the ``model-index`` gains (or updates) one entry per
    split and metric, and the card's metrics table is rewritten from all of them.

    Args:
        model_dir: a folder whose ``README.md`` was written by `write_model_card`.
        metrics: ``{split: {"R@1": .., "mAP": .., ...}}`` (or one split's flat dict, taken as ``"test"``), percent.
        dataset: the evaluation dataset (``"procpedes"``, ``"cuhk-pedes"`` …).
    """
    import re

    from huggingface_hub import EvalResult, ModelCard

    path = Path(model_dir) / "README.md"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no model card to add evaluation results to (write_model_card first)")
    card = ModelCard.load(path)
    dataset_key = dataset.lower().replace("_", "-")
    new = {
        (split, name): value for split, values in _by_split(metrics).items() for name, value in values.items()
    }
    kept = [r for r in (card.data.eval_results or [])
            if not (r.dataset_type == dataset_key and (r.dataset_split, r.metric_name) in new)]
    added = [
        EvalResult(
            task_type="text-based-person-search",
            task_name="Text-based person search (text-to-image retrieval)",
            dataset_type=dataset_key,
            dataset_name=DATASET_NAMES.get(dataset_key, dataset),
            dataset_split=split,
            metric_type=_metric_type(name),
            metric_name=name,
            metric_value=round(value, 2),
        )
        for (split, name), value in new.items()
    ]
    card.data.eval_results = kept + added
    card.data.model_name = card.data.model_name or Path(model_dir).name
    if not card.data.datasets or dataset_key not in card.data.datasets:
        card.data.datasets = [*(card.data.datasets or []), dataset_key]
    by_split: dict[str, dict[str, float]] = {}
    for result in card.data.eval_results:
        label = result.dataset_split if result.dataset_type == dataset_key else f"{result.dataset_name} {result.dataset_split}"
        by_split.setdefault(label, {})[result.metric_name] = float(result.metric_value)
    table = _metrics_table(by_split)
    text, count = re.subn(
        r"(<!-- metrics:[^\n]*-->\n).*?(\n<!-- /metrics -->)", lambda m: m.group(1) + table + m.group(2), card.text,
        flags=re.S,
    )
    if not count:  # a card from an older template: append the table
        text = card.text.rstrip() + "\n\n## Evaluation\n\n" + table + "\n"
    card.text = text
    card.save(path)
    return path


def _method_info(method_key: str) -> dict[str, str]:
    """Title, paper, architecture and citation from the method registry (``MethodInfo``)."""
    from .models import get_method

    try:
        info = get_method(method_key).info
    except ValueError:
        return {"title": method_key, "paper": "", "architecture": "", "citation": ""}
    return {"title": info.title, "paper": info.paper, "architecture": info.architecture, "citation": info.citation}


__all__ = ["add_eval_results", "write_model_card", "build_card_data", "TEMPLATE_PATH"]
