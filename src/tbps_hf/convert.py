"""`tbps convert`: bring a method's officially released checkpoint into a folder `AutoModel` / `AutoProcessor` load.

Each method that has a converter ships it beside its model, in the transformers convention:
``tbps_hf.models.<method>.convert_<method>_original_to_hf.convert(checkpoint, output_dir, tokenizer=None,
config_overrides=None)`` (returning a report dict of ignored / missing keys, or the converted model).
"""

from __future__ import annotations

import argparse
import importlib
import json

from .errors import TBPSUserError


def _converter(method: str):
    from .models import get_method

    get_method(method)  # an unknown method lists the valid ones
    try:
        return importlib.import_module(f"tbps_hf.models.{method}.convert_{method}_original_to_hf").convert
    except ModuleNotFoundError:
        raise TBPSUserError(f"--model {method}: no converter for this method's original checkpoints") from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Convert a method's officially released checkpoint (e.g. the IVT authors' .pth) into a tbps-hf model folder: "
        "safetensors weights + config, the processor with the release's preprocessing, a model card naming the "
        "source and its licence, and conversion_report.json (ignored / missing keys). Files are read with "
        "torch.load(weights_only=True) only."
    )
    parser.add_argument("--model", required=True, help="method whose release this is (ivt; laip: ALBEF-style files)")
    parser.add_argument("--checkpoint", required=True, help="the released checkpoint file (.pth / .safetensors)")
    parser.add_argument("--output_dir", required=True, help="folder to write the converted model into")
    parser.add_argument(
        "--tokenizer", default=None, help="hub id or local folder of the tokenizer (default: the one the release used)"
    )
    parser.add_argument(
        "--config_overrides",
        default=None,
        help='JSON object of config fields to set, e.g. \'{"image_size": [384, 128], "max_text_length": 100}\'',
    )


def run(args: argparse.Namespace) -> int:
    overrides = None
    if args.config_overrides:
        try:
            overrides = json.loads(args.config_overrides)
        except json.JSONDecodeError as err:
            raise TBPSUserError(f"--config_overrides is not valid JSON ({err.msg} at char {err.pos})") from None
        if not isinstance(overrides, dict):
            raise TBPSUserError("--config_overrides must be a JSON object of config fields")
    report = _converter(args.model)(args.checkpoint, args.output_dir, tokenizer=args.tokenizer, config_overrides=overrides)
    print(f"converted {args.checkpoint} → {args.output_dir}")
    if isinstance(report, dict):  # the unused / missing keys report (converters that return the model print theirs)
        print(json.dumps(report, indent=2))
    return 0
