"""`tbps export` and `tbps verify`: argparse pieces wired into the `tbps` console script (`tbps_hf.cli`).

Also runnable alone: `python -m tbps_hf.data.cli {export,verify} ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

from datasets.exceptions import ManualDownloadError

from ..errors import format_user_error
from . import DATASET_NAMES

_LOAD_ERRORS = (ManualDownloadError, ValueError, FileNotFoundError, TypeError, ImportError)


def _parse_option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = json.loads(value)  # numbers, true/false, null, lists
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def _add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, type=str.lower, choices=DATASET_NAMES,
                        help="benchmark name")
    parser.add_argument("--data_dir", default=None,
                        help="folder holding the release (annotation JSON + images); not used by procpedes")
    parser.add_argument("--annotation_file", default=None,
                        help="annotation JSON if not the release's name (absolute or relative to --data_dir)")
    parser.add_argument("--cache_dir", default=None, help="datasets cache root (default: the HF datasets cache)")
    parser.add_argument("--skip_bad_images", action="store_true",
                        help="skip records whose image is missing or unreadable (reported) instead of failing")
    parser.add_argument("--option", action="append", default=[], type=_parse_option, metavar="KEY=VALUE",
                        help="extra loader option, repeatable (e.g. procpedes generator options; "
                             "download_mode=force_redownload)")


def _load(args):
    from . import load_tbps_dataset

    return load_tbps_dataset(
        args.dataset, data_dir=args.data_dir, cache_dir=args.cache_dir, annotation_file=args.annotation_file,
        skip_bad_images=args.skip_bad_images, **dict(args.option),
    )


def configure_export_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of `tbps export`: load a benchmark and write Parquet shards with embedded images."""
    parser.description = (
        "Load a benchmark from its published layout and write it as Parquet with the image bytes embedded "
        "(out/data/<split>-NNNNN-of-NNNNN.parquet + README.md), ready for `huggingface-cli upload` or "
        "`load_dataset('parquet', ...)`. Mind the dataset's licence before publishing it."
    )
    _add_dataset_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--max_shard_size", default="500MB", help="largest Parquet shard (default 500MB)")
    parser.add_argument("--splits", nargs="+", default=None, help="export only these splits (default: all)")
    parser.add_argument("--other_splits", choices=("keep", "remove"), default=None,
                        help="when --out already holds other splits' shards: keep them (and list them in the README) "
                             "or remove them (default: refuse, naming them)")
    return parser


def run_export(args: argparse.Namespace) -> int:
    """Run `tbps export`; returns the exit status (0 ok, 1 the data could not be loaded / exported)."""
    from .export import export_parquet

    try:
        dataset_dict = _load(args)
        if args.splits:
            missing = [s for s in args.splits if s not in dataset_dict]
            if missing:
                raise ValueError(f"split(s) {missing} not in {args.dataset}; available: {list(dataset_dict)}")
            dataset_dict = {s: dataset_dict[s] for s in args.splits}
        written = export_parquet(dataset_dict, args.out, max_shard_size=args.max_shard_size,
                                 pretty_name=args.dataset, other_splits=args.other_splits)
    except _LOAD_ERRORS as err:
        if os.environ.get("TBPS_TRACEBACK"):
            raise
        print(format_user_error("tbps export", err), file=sys.stderr)  # one line, as every command
        return 1
    for split, paths in written.items():
        print(f"{split}: {len(dataset_dict[split])} rows -> {len(paths)} file(s) in {args.out}/data")
    return 0


def configure_verify_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of `tbps verify`: compare a loaded benchmark with its published sizes."""
    parser.description = (
        "Load a benchmark and compare its identity / image / caption counts (per split and in total) with the "
        "published sizes. Exit status 0 when they all match, 1 when any differs or the data cannot be loaded."
    )
    _add_dataset_arguments(parser)
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON here")
    return parser


def run_verify(args: argparse.Namespace) -> int:
    """Run `tbps verify`; prints the report, returns 0 if every published size matches, else 1."""
    from .verify import verify_dataset

    try:
        report = verify_dataset(args.dataset, _load(args))
    except _LOAD_ERRORS as err:
        if os.environ.get("TBPS_TRACEBACK"):
            raise
        print(format_user_error("tbps verify", err), file=sys.stderr)  # one line, as every command
        return 1
    print(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=2)
    return 0 if report.ok else 1


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tbps_hf.data.cli", description="Benchmark data tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    configure_export_parser(sub.add_parser("export", help="export a benchmark to Parquet with embedded images"))
    configure_verify_parser(sub.add_parser("verify", help="compare a benchmark with its published sizes"))
    args = parser.parse_args(argv)
    return run_export(args) if args.command == "export" else run_verify(args)


if __name__ == "__main__":
    sys.exit(main())
