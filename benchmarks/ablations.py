"""Measure a paper's key switch on ProcPEDES: train the same preset with the switch on and off (several seeds) and
print test / test_3c metrics side by side, with the mean over seeds.

Each run is ``tbps train --config_overrides '{"<switch>": <value>}'`` followed by ``tbps evaluate`` on both test
splits, so a row here is reproducible with those two commands. Training uses whatever accelerate finds (a GPU when
there is one); the device is printed with the table.

    python benchmarks/ablations.py --model pcc --switch use_cmr --max_steps 500 --seeds 0 1 2
    python benchmarks/ablations.py --model cfam --switch share_decoder --max_steps 500 --seeds 0 1 2 \\
        --json runs/ablations/cfam_share_decoder.json

Cross-encoders (LAIP) re-rank at evaluation: ``--rerank_ks 4 16 64`` evaluates every trained model with each k and
adds the first stage alone (``k=0``: re-ranking off) as extra rows, without training again:

    python benchmarks/ablations.py --model laip --switch use_bidiratt --max_steps 400 --seeds 0 1 2 \\
        --rerank_ks 4 16 64
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from tbps_hf.models import method_names

SPLITS = ("test", "test_3c")
KEYS = ("R@1", "R@5", "mAP", "mSD")


def _value(text: str):
    """Command-line switch value → JSON value (true/false/numbers/strings)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run_one(model: str, preset: str, overrides: dict, seed: int, args, out: Path) -> dict:
    from transformers import AutoModel, AutoProcessor

    from tbps_hf.data import EvaluationView, load_tbps_dataset
    from tbps_hf.evaluation import evaluate_model
    from tbps_hf.training import DataArguments, ModelArguments, TrainingArguments, train

    data_args = DataArguments(dataset="procpedes", cache_dir=args.cache_dir, eval_split="none")
    summary = train(
        ModelArguments(model=model, preset=preset, config_overrides=json.dumps(overrides)),
        data_args,
        TrainingArguments(
            output_dir=str(out),
            overwrite_output_dir=True,  # a benchmark re-run replaces its own earlier run
            save_strategy="no",
            seed=seed,
            max_steps=args.max_steps,
            report_to="none",
            logging_steps=max(1, args.max_steps // 10),
            dataloader_num_workers=args.dataloader_num_workers,
        ),
    )
    dataset = load_tbps_dataset("procpedes", cache_dir=args.cache_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    trained = AutoModel.from_pretrained(out).to(device).eval()
    processor = AutoProcessor.from_pretrained(out)
    metrics, by_k = {}, {}
    for split in SPLITS:
        overall = evaluate_model(trained, processor, EvaluationView(dataset[split]), batch_size=128, progress=False)
        metrics[split] = {k: round(float(overall["overall"][k]), 2) for k in KEYS}
        if "first_stage" in overall and args.rerank_ks:
            by_k.setdefault("0", {})[split] = {k: round(float(overall["first_stage"][k]), 2) for k in KEYS}
            for rerank_k in args.rerank_ks:
                again = overall  # the model's own rerank_k was just evaluated
                if rerank_k != overall["rerank_k"]:
                    again = evaluate_model(
                        trained, processor, EvaluationView(dataset[split]), batch_size=128, progress=False,
                        rerank_k=rerank_k,
                    )
                by_k.setdefault(str(rerank_k), {})[split] = {k: round(float(again["overall"][k]), 2) for k in KEYS}
    run = {"overrides": overrides, "seed": seed, "train_seconds": summary["train_seconds"], "metrics": metrics}
    if by_k:
        run["metrics_by_rerank_k"] = by_k
    return run


def _mean_std(metrics: list[dict]) -> tuple[dict, dict]:
    """Mean and population std over runs of `{split: {key: value}}` metrics."""
    mean = {s: {k: statistics.fmean(m[s][k] for m in metrics) for k in KEYS} for s in SPLITS}
    spread = {s: {k: statistics.pstdev(m[s][k] for m in metrics) for k in KEYS} for s in SPLITS}
    return mean, spread


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=method_names(), help="registered method: %(choices)s")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--switch", required=True, help="config field to vary, e.g. use_cmr or share_decoder")
    parser.add_argument("--values", nargs="+", default=["true", "false"], help="values of the switch (JSON)")
    parser.add_argument("--base_overrides", default="{}", help="JSON of other config fields, the same in every run")
    parser.add_argument("--max_steps", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--dataloader_num_workers", type=int, default=0)
    parser.add_argument(
        "--rerank_ks", type=int, nargs="*", default=[],
        help="cross-encoders: also evaluate every trained model re-ranking these k (and the first stage alone, k=0)",
    )
    parser.add_argument("--cache_dir", default="runs/ablations/data_cache", help="ProcPEDES cache (built once)")
    parser.add_argument("--out", default="runs/ablations", help="one model folder per run is written under it")
    parser.add_argument("--json", default=None, help="also write all runs and the means to this JSON file")
    args = parser.parse_args(argv)

    import tbps_hf

    config = tbps_hf.get_method(args.model).config_class.from_preset(args.preset)
    if not hasattr(config, args.switch):
        parser.error(f"{type(config).__name__} has no field {args.switch!r}")
    base = json.loads(args.base_overrides)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"

    runs = []
    for value in map(_value, args.values):
        for seed in args.seeds:
            overrides = {**base, args.switch: value}
            t0 = time.perf_counter()
            out = Path(args.out) / f"{args.model}_{args.switch}={value}_seed{seed}"
            runs.append(run_one(args.model, args.preset, overrides, seed, args, out))
            runs[-1]["seconds"] = round(time.perf_counter() - t0, 1)
            print(f"{args.switch}={value} seed {seed}: {json.dumps(runs[-1]['metrics'])}", flush=True)

    header = f"{args.switch:>16} {'seed':>5} " + " ".join(f"{s}:{k:>4}".rjust(12) for s in SPLITS for k in KEYS)
    lines = [f"{args.model}/{args.preset} on ProcPEDES, {args.max_steps} steps, {device}", header]
    means = {}
    for value in map(_value, args.values):
        chosen = [r for r in runs if r["overrides"][args.switch] == value]
        for r in chosen:
            lines.append(f"{json.dumps(value):>16} {r['seed']:>5} " + " ".join(f"{r['metrics'][s][k]:12.2f}" for s in SPLITS for k in KEYS))
        mean, spread = _mean_std([r["metrics"] for r in chosen])
        means[json.dumps(value)] = {"mean": mean, "std": spread}
        lines.append(f"{json.dumps(value):>16} {'mean':>5} " + " ".join(f"{mean[s][k]:12.2f}" for s in SPLITS for k in KEYS))
    if any("metrics_by_rerank_k" in r for r in runs):
        lines += ["", "re-ranking (same models; k=0: first stage only, re-ranking off)", header.replace(f"{args.switch:>16}", f"{args.switch + ' / k':>16}")]
        for value in map(_value, args.values):
            chosen = [r for r in runs if r["overrides"][args.switch] == value and "metrics_by_rerank_k" in r]
            for rerank_k in ["0", *map(str, args.rerank_ks)]:
                mean, spread = _mean_std([r["metrics_by_rerank_k"][rerank_k] for r in chosen])
                label = f"{json.dumps(value)} k={rerank_k}"
                means[label] = {"mean": mean, "std": spread}
                lines.append(f"{label:>16} {'mean':>5} " + " ".join(f"{mean[s][k]:12.2f}" for s in SPLITS for k in KEYS))
    print("\n".join(lines))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"model": args.model, "preset": args.preset, "switch": args.switch,
                                               "max_steps": args.max_steps, "device": device, "runs": runs,
                                               "means": means}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
