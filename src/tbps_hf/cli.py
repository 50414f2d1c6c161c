"""The `tbps` console script.

    tbps quickstart                 build ProcPEDES, train a tiny model, evaluate, write a report (≈10 min on CPU)
    tbps train ...                  same arguments as `accelerate launch train.py ...` (one process)
    tbps evaluate --model DIR --dataset NAME
    tbps export --dataset NAME --data_dir D --out O     Parquet with embedded images, for the hub
    tbps verify --dataset NAME --data_dir D             compare split sizes with the published ones
    tbps demo --model DIR --gallery FOLDER              Gradio search over a folder of person crops
    tbps convert --model ivt --checkpoint F --output_dir D   an authors' release → a model folder
    tbps push --model DIR | --metric NAME | --dataset DIR --repo_id ORG/NAME   one commit to the hub

Each subcommand's module is imported only when it runs, so `tbps --help` stays fast. Errors caused by the input
print one `tbps <command>: error: …` line and exit with status 1 (`TBPS_TRACEBACK=1` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import report_user_errors  # noqa: F401  (re-exported: `tbps_hf.cli.report_user_errors`)

# subcommand → (module, parser configurator, runner, one-line help)
SUBCOMMANDS = {
    "quickstart": ("tbps_hf.quickstart", "configure_parser", "run", "Build ProcPEDES, train, evaluate and report."),
    "evaluate": ("tbps_hf.evaluation", "configure_parser", "run", "Evaluate a saved model on a dataset split."),
    "export": ("tbps_hf.data.cli", "configure_export_parser", "run_export", "Export a dataset to Parquet for the hub."),
    "verify": ("tbps_hf.data.cli", "configure_verify_parser", "run_verify", "Check split sizes against the published ones."),
    "demo": ("tbps_hf.demo", "configure_demo_parser", "run_demo", "Launch the Gradio search demo over a gallery folder."),
    "convert": ("tbps_hf.convert", "configure_parser", "run", "Convert an officially released checkpoint to a model folder."),
    "push": ("tbps_hf.hub", "configure_parser", "run", "Upload a model folder or a metric to the Hugging Face Hub."),
}


def build_parser() -> argparse.ArgumentParser:
    from .models import method_names  # lists the method folders without importing them

    parser = argparse.ArgumentParser(
        prog="tbps",
        description=f"Text-based person search on the Hugging Face stack (models: {', '.join(method_names())}).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `tbps <command> --help` for the arguments of a command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    sub.add_parser(
        "train",
        help="Train a model (arguments as train.py; use `accelerate launch train.py` for several processes).",
        add_help=False,
    )
    for name, (_, _, _, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        from .training import main as train_main

        import tbps_hf  # noqa: F401

        return train_main(argv[1:])
    if not argv or argv[0] not in SUBCOMMANDS:
        parser = build_parser()
        if not argv:
            parser.print_help()
            return 0
        parser.parse_args(argv)  # prints the error and the valid commands
        return 2
    name = argv[0]
    module, configure, run, help_text = SUBCOMMANDS[name]
    mod = importlib.import_module(module)
    parser = argparse.ArgumentParser(prog=f"tbps {name}", description=help_text)
    getattr(mod, configure)(parser)
    args = parser.parse_args(argv[1:])
    import tbps_hf  # noqa: F401  (register the models before any Auto class is used)

    try:
        return int(report_user_errors(f"tbps {name}", getattr(mod, run), args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's status for SIGINT
        if os.environ.get("TBPS_TRACEBACK"):
            raise
        print(f"tbps {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
