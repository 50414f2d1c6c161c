"""`tbps quickstart`: the README's main job, end to end on this machine in about ten minutes.

Builds ProcPEDES (generated, nothing downloaded), trains a method's ``tiny`` preset with a WordPiece tokenizer
trained on the training captions, evaluates on ``test`` (same rendering domain) and ``test_3c`` (shifted domain,
mixed granularity and style), and writes ``report.json``, ``report.md`` and plots.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

METRIC_KEYS = ("R@1", "R@5", "R@10", "mAP", "mINP", "mSD")
EVAL_SPLITS = ("test", "test_3c")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0] + " " + " ".join(__doc__.splitlines()[2:5])
    from .models import method_names

    parser.add_argument("--model", default="ivt", help=f"Method to train (default ivt): {', '.join(method_names())}.")
    parser.add_argument("--out", default="runs/quickstart", help="Output folder (model, report, plots).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the data, weights and training.")
    parser.add_argument(
        "--num_train_epochs", type=float, default=None, help="Override the tiny preset's epochs (default: preset's)."
    )
    parser.add_argument(
        "--train_minutes",
        type=float,
        default=6.5,
        help="Training budget: a few timed calibration steps set the number of steps (and the learning-rate "
        "schedule) to fit it, capped at the preset's epochs (default 6.5, so the whole job fits in 10 minutes).",
    )
    parser.add_argument(
        "--dataset_options", default=None, help='JSON of ProcPEDES options, e.g. \'{"num_train_identities": 800}\'.'
    )


def run(args: argparse.Namespace) -> int:
    report = quickstart(
        model=args.model,
        out=args.out,
        seed=args.seed,
        num_train_epochs=args.num_train_epochs,
        train_minutes=args.train_minutes,
        dataset_options=args.dataset_options,
    )
    print(format_summary(report))
    print(f"\nReport: {Path(args.out) / 'report.md'}")
    return 0


def quickstart(
    model: str = "ivt",
    out: str | Path = "runs/quickstart",
    seed: int = 0,
    num_train_epochs: float | None = None,
    train_minutes: float | None = 6.5,
    dataset_options: str | None = None,
) -> dict:
    from .data import EvaluationView, load_tbps_dataset
    from .evaluation import evaluate_model
    from .models import get_method
    from .training import DataArguments, ModelArguments, TrainingArguments, train

    start = time.perf_counter()
    get_method(model)  # unknown names list the valid ones before any work
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_args = DataArguments(
        dataset="procpedes", cache_dir=str(out / "data_cache"), dataset_options=dataset_options, eval_split="none"
    )

    t0 = time.perf_counter()
    dataset = load_tbps_dataset("procpedes", cache_dir=data_args.cache_dir, **data_args.parsed_dataset_options())
    data_seconds = time.perf_counter() - t0

    max_steps = -1
    if train_minutes:
        seconds_per_step = _calibrate(model, data_args, out / "calibration", seed)
        max_steps = max(1, int(train_minutes * 60 / seconds_per_step))
    summary = train(
        ModelArguments(model=model, preset="tiny"),
        data_args,
        TrainingArguments(
            output_dir=str(out / "model"),
            overwrite_output_dir=True,  # a quickstart run replaces the previous one
            save_strategy="no",  # a short demo run: its folder is the model, without checkpoint-N beside it
            seed=seed,
            num_train_epochs=num_train_epochs,
            max_steps=max_steps,
            # the preset's epochs stay the upper bound: a fast machine does not train longer than the recipe
            max_steps_cap_epochs=True,
            max_train_minutes=train_minutes * 1.25 if train_minutes else None,  # safety net if the machine slows
            report_to="tensorboard",
            logging_steps=10,
        ),
    )

    from transformers import AutoModel, AutoProcessor

    trained = AutoModel.from_pretrained(out / "model").eval()
    processor = AutoProcessor.from_pretrained(out / "model")
    metrics, groups = {}, {}
    for split in EVAL_SPLITS:
        results = evaluate_model(
            trained, processor, EvaluationView(dataset[split]), batch_size=128, output_dir=out / "eval" / split
        )
        metrics[split] = {k: round(float(results["overall"][k]), 2) for k in METRIC_KEYS}
        groups[split] = results.get("groups", {})
    from .model_card import add_eval_results

    add_eval_results(out / "model", metrics, "procpedes")  # the saved model's card shows what was measured here

    report = {
        "model": model,
        "preset": "tiny",
        "dataset": "procpedes",
        "total_seconds": round(time.perf_counter() - start, 1),
        "data_seconds": round(data_seconds, 1),
        "train_seconds": summary["train_seconds"],
        "global_step": summary["global_step"],
        "epochs": summary["epochs"],
        "stopped_early": summary["stopped_early"],
        "num_train_identities": len(set(dataset["train"]["person_id"])),
        "gallery_sizes": {s: dataset[s].num_rows for s in EVAL_SPLITS},
        "metrics": metrics,
        "groups": groups,
        "model_dir": str(out / "model"),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(_report_markdown(report))
    return report


def _calibrate(model: str, data_args, out: Path, seed: int, steps: int = 8) -> float:
    """Seconds per optimizer step of the tiny preset on this machine: median of a short throwaway run's steps
    (the first two, which pay for allocations and warm-up, are left out)."""
    import shutil
    import statistics

    from .training import ModelArguments, TrainingArguments, train

    stamps: list[float] = []
    train(
        ModelArguments(model=model, preset="tiny"),
        data_args,
        TrainingArguments(
            output_dir=str(out), overwrite_output_dir=True, seed=seed, max_steps=steps, report_to="none",
            logging_steps=steps,
        ),
        step_callback=lambda step, logs: stamps.append(time.perf_counter()),
    )
    shutil.rmtree(out, ignore_errors=True)
    return statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:]))


def format_summary(report: dict) -> str:
    lines = [f"{'split':<10}" + "".join(f"{k:>8}" for k in METRIC_KEYS)]
    for split, values in report["metrics"].items():
        lines.append(f"{split:<10}" + "".join(f"{values[k]:>8.2f}" for k in METRIC_KEYS))
    lines.append(
        f"total {report['total_seconds']:.0f} s (data {report['data_seconds']:.0f} s, train {report['train_seconds']:.0f} s)"
    )
    return "\n".join(lines)


def _report_markdown(report: dict) -> str:
    rows = "\n".join(
        f"| {split} | {report['gallery_sizes'][split]} | " + " | ".join(f"{v[k]:.2f}" for k in METRIC_KEYS) + " |"
        for split, v in report["metrics"].items()
    )
    group_rows = []
    for split, groups in report["groups"].items():
        for grouping, values in groups.items():
            for name, m in values.items():
                group_rows.append(
                    f"| {split} | {grouping}={name} | " + " | ".join(f"{float(m.get(k, float('nan'))):.2f}" for k in METRIC_KEYS) + " |"
                )
    group_table = "\n".join(group_rows) or "| – | – |" + " – |" * len(METRIC_KEYS)
    return f"""# tbps quickstart report — {report['model']} (tiny) on ProcPEDES

Total {report['total_seconds']:.0f} s on this machine: data {report['data_seconds']:.0f} s, training
{report['train_seconds']:.0f} s ({report['global_step']} steps, {report['epochs']:.1f} epochs){' — ' + report['stopped_early'] if report['stopped_early'] else ''}.
The trained model and processor are in `{report['model_dir']}` (load them with `AutoModel.from_pretrained` /
`AutoProcessor.from_pretrained` after `import tbps_hf`).

| split | gallery images | {' | '.join(METRIC_KEYS)} |
|---|---|{'---|' * len(METRIC_KEYS)}
{rows}

## What the numbers mean
Each caption of the split is a query; the gallery is every image of the split; a match is an image of the same
person. **R@k**: share of queries whose first correct image is in the top k. **mAP**: mean average precision over
all correct images. **mINP**: how far down the *last* correct image is (1/rank-of-last × number correct).
**mSD** (UFineBench): how well similarity scores separate correct from wrong images, beyond their order. All in
percent. Chance R@1 is about 1/identities in the split (under 1 %). ProcPEDES identities come in *twins* differing in
one attribute, so a model must read fine details, not only colours.

`test` is rendered like the training data; `test_3c` shifts the domain (backgrounds, lighting, scale, blur) and mixes
coarse / medium / fine captions in several styles, like UFine3C; the breakdown below splits it by granularity and
style:

| split | group | {' | '.join(METRIC_KEYS)} |
|---|---|{'---|' * len(METRIC_KEYS)}
{group_table}

Plots: `eval/<split>/cmc.png` (CMC curve), `eval/<split>/sd_distribution.png`, `eval/<split>/retrieval_grid.png`
(queries with their top-10 images; true matches framed green), `eval/<split>/attention_maps.png` (where the image
side looks on each grid query's top hit).

## Running on a real benchmark
Download the dataset under its licence (see `dataset_scripts/<name>/README.md` for the layout), then:

```bash
accelerate launch train.py --model {report['model']} --preset <paper preset> --dataset cuhk-pedes --data_dir /data/CUHK-PEDES --output_dir runs/{report['model']}-cuhk
tbps evaluate --model runs/{report['model']}-cuhk --dataset cuhk-pedes --data_dir /data/CUHK-PEDES
```
The paper presets expect pretrained backbones (`from_backbones(...)`) and a GPU; the tiny preset trained here is a
smoke-scale model, not a reproduction of the paper's numbers.
"""
