"""`tbps push`: publish a saved model folder, or one of the evaluate metric modules, to the Hugging Face Hub.

Each push is one commit (`HfApi.create_commit` with every file as an operation), so a failed upload leaves the repo
as it was, never half-written. A model folder must hold weights (``model.safetensors``), its config, the processor
and a model card; a metric is uploaded as a Gradio Space (module, card with the Space header, ``app.py`` for the
widget, ``requirements.txt``), after which ``evaluate.load("ORG/msd")`` loads it.

Datasets go through ``tbps export`` (Parquet with embedded images and a dataset card) and then
``tbps push --dataset FOLDER`` (the same files ``datasets.load_dataset(folder).push_to_hub("ORG/name")`` would write).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .errors import TBPSUserError

METRICS_DIR = Path(__file__).resolve().parent / "metrics" / "modules"
METRIC_NAMES = ("rank_k", "map", "msd")
# Files a training run may leave beside the model that are not part of it.
_SKIP_DIRS = {"checkpoints", "logs", "runs", "adapter"}


class PushError(TBPSUserError, ValueError):
    """A push refused before anything was uploaded."""


def model_files(folder: str | Path) -> list[Path]:
    """The files of a model folder to upload; raises `PushError` naming what is missing (weights, config,
    processor or card)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PushError(f"--model {folder}: no such folder")
    names = {p.name for p in folder.iterdir() if p.is_file()}
    needs = {
        "weights (model.safetensors)": {"model.safetensors", "model.safetensors.index.json"},
        "config (config.json)": {"config.json"},
        "processor (processor_config.json / preprocessor_config.json)": {"processor_config.json", "preprocessor_config.json"},
        "tokenizer (tokenizer_config.json)": {"tokenizer_config.json"},
        "model card (README.md)": {"README.md"},
    }
    missing = [what for what, files in needs.items() if not names & files]
    if missing:
        raise PushError(
            f"--model {folder}: not a complete model folder, it lacks {', '.join(missing)}; save it with "
            "`save_pretrained` (model and processor) and write its card (tbps train / tbps convert do both)"
        )
    if any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in names):
        bad = sorted(n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl")))
        raise PushError(f"--model {folder}: holds pickled weights ({', '.join(bad)}); tbps-hf publishes safetensors only")
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in _SKIP_DIRS):
        files += [p for p in sorted(sub.rglob("*")) if p.is_file() and not any(part.startswith(".") for part in p.parts)]
    return files


def metric_files(name: str) -> list[Path]:
    """The files of the hub metric Space for ``name`` (module, card, ``app.py``, ``requirements.txt``)."""
    if name not in METRIC_NAMES:
        raise PushError(f"--metric {name!r}: valid metrics: {', '.join(METRIC_NAMES)}")
    folder = METRICS_DIR / name
    files = [folder / f"{name}.py", folder / "README.md", folder / "app.py", folder / "requirements.txt"]
    absent = [p.name for p in files if not p.is_file()]
    if absent:  # pragma: no cover - a broken install
        raise PushError(f"metric {name}: the package lacks {', '.join(absent)} in {folder}")
    return files


def _token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise PushError(
            "no Hugging Face token: run `hf auth login` or set HF_TOKEN (a token with write access); nothing was uploaded"
        )
    return token


def _commit(repo_id: str, files: list[Path], root: Path, message: str, repo_type: str, private: bool,
            token: str | None, space_sdk: str | None = None) -> Any:
    from huggingface_hub import CommitOperationAdd, HfApi

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PushError(f"--repo_id {repo_id!r}: expected ORG/NAME")
    api = HfApi(token=_token(token))
    operations = [
        CommitOperationAdd(path_in_repo=path.relative_to(root).as_posix(), path_or_fileobj=str(path)) for path in files
    ]
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, space_sdk=space_sdk)
    return api.create_commit(repo_id, operations=operations, commit_message=message, repo_type=repo_type)


def dataset_files(folder: str | Path) -> list[Path]:
    """The files of a `tbps export` folder (README.md with its `configs:` block + ``data/*.parquet``)."""
    folder = Path(folder)
    shards = sorted((folder / "data").glob("*.parquet")) if (folder / "data").is_dir() else []
    if not shards or not (folder / "README.md").is_file():
        raise PushError(
            f"--dataset {folder}: not a `tbps export` folder (it needs README.md and data/<split>-*.parquet); "
            "write one with `tbps export --dataset NAME --out FOLDER`"
        )
    return [folder / "README.md", *shards]


def push_dataset(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> Any:
    """Upload a `tbps export` folder (Parquet with embedded images + dataset card) as a hub dataset in one commit."""
    folder = Path(folder)
    files = dataset_files(folder)
    return _commit(repo_id, files, folder, f"Upload {folder.name} with tbps push", "dataset", private, token)


def push_model(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> Any:
    """Upload a saved model folder (weights, config, processor, card) to ``repo_id`` in one commit."""
    folder = Path(folder)
    files = model_files(folder)
    return _commit(repo_id, files, folder, f"Upload {folder.name} with tbps push", "model", private, token)


def push_metric(name: str, repo_id: str, private: bool = False, token: str | None = None) -> Any:
    """Upload the ``name`` evaluate module as a Gradio metric Space to ``repo_id`` in one commit."""
    files = metric_files(name)
    return _commit(repo_id, files, files[0].parent, f"Upload the {name} metric with tbps push", "space", private,
                   token, space_sdk="gradio")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Publish to the Hugging Face Hub in one commit: a saved model folder (weights, config, processor and model "
        "card; anything less is refused) with --model, an evaluate metric as a hub metric Space with --metric, or a "
        "`tbps export` folder as a hub dataset with --dataset (mind the dataset's licence). "
        "Needs a token with write access (`hf auth login` or HF_TOKEN)."
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="a saved model folder (tbps train / tbps convert output)")
    what.add_argument("--metric", choices=METRIC_NAMES, help="an evaluate module: rank_k, map or msd")
    what.add_argument("--dataset", help="a `tbps export` folder (Parquet with embedded images + dataset card)")
    parser.add_argument("--repo_id", required=True, help="ORG/NAME on the hub (created if absent)")
    parser.add_argument("--private", action="store_true", help="create the repo private")


def run(args: argparse.Namespace) -> int:
    if args.model:
        info = push_model(args.model, args.repo_id, private=args.private)
    elif args.dataset:
        info = push_dataset(args.dataset, args.repo_id, private=args.private)
    else:
        info = push_metric(args.metric, args.repo_id, private=args.private)
    print(f"pushed to {getattr(info, 'commit_url', None) or args.repo_id}")
    return 0


__all__ = ["PushError", "dataset_files", "metric_files", "model_files", "push_dataset", "push_metric", "push_model"]
