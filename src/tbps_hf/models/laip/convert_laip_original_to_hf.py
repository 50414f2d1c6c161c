"""Convert ALBEF (`salesforce/ALBEF`: `ALBEF.pth`, `ALBEF_4M.pth`, `mscoco.pth`, `flickr30k.pth`) and RaSa
(`Flame-Chasers/RaSa`) checkpoints to a LAIP folder that `AutoModel` / `AutoProcessor` load.

Layouts (DESIGN.md → "Checkpoint layouts"), read with `torch.load(weights_only=True)` only:

- `{"model": state_dict, ...}` (or a bare state dict; a DDP `module.` prefix is stripped);
- `visual_encoder.{cls_token, pos_embed [1, 1+N, 768] (square grid), patch_embed.proj, blocks.i.{norm1, attn.qkv
  (q, k, v stacked), attn.proj, norm2, mlp.fc1, mlp.fc2}, norm}` → `vision_model.*` (qkv split, the position table
  resized bilinearly to the crop's grid, e.g. 24x24 → 24x8);
- BERT under `text_encoder.bert.` (pre-training: `ALBEF.pth`, `ALBEF_4M.pth`, RaSa, with the MLM head
  `text_encoder.cls.*`) or `text_encoder.` (retrieval: `mscoco.pth`): `embeddings.*`, `encoder.layer.0-5` → the text
  encoder, `encoder.layer.6-11` (the ones with `crossattention`) → `fusion_layers.0-5`;
- `vision_proj`, `text_proj`, `itm_head`, `temp` as they are.

Dropped: the momentum copies `*_m.*`, the queues (`image_queue`, `text_queue`, `idx_queue`, `queue_ptr`),
`embeddings.position_ids`, a BERT pooler, and RaSa's `prd_head` / `mrtd_head`. The MLM head (absent from retrieval
checkpoints) keeps its random transform and is tied to the word embeddings. Any other key, or a missing one, is an
error naming them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from ...errors import TBPSUserError
from ...modeling_utils import resize_position_table

SOURCE_REPO = "salesforce/ALBEF"
SOURCE_LICENSE = "bsd-3-clause"

DROPPED = re.compile(
    r"(^|\.)\w+_m\.|^(image_queue|text_queue|idx_queue|queue_ptr)$|position_ids$|(^|\.)pooler\.|^(prd_head|mrtd_head)\."
)


class CheckpointLayoutError(TBPSUserError, ValueError):
    """The checkpoint is not in ALBEF's / RaSa's layout (unreadable, other keys, missing keys, other shapes)."""


def resize_position_embeddings(position_embeddings: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """`[1, 1 + s*s, d]` (a square grid, class token first) → `[1, 1 + rows*cols, d]`, bilinear; the class-token row
    is kept (as ALBEF's `interpolate_pos_embed`, but to a non-square person-crop grid). The shared
    `resize_position_table` does the work; a non-square table is a layout error of the checkpoint."""
    try:
        return resize_position_table(position_embeddings, tuple(grid_size))
    except ValueError as err:
        raise CheckpointLayoutError(str(err)) from err


def load_original_state_dict(checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of an ALBEF / RaSa `.pth` (`torch.load(weights_only=True)`; `model` / `state_dict` entry or a
    bare dict; `module.` stripped)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickles with code objects are refused by weights_only, by design
        raise CheckpointLayoutError(f"{path}: cannot be read with torch.load(weights_only=True): {err}") from err
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointLayoutError(f"{path}: expected a state dict (or a dict with a 'model' state dict)")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in obj.items()}


def _text_prefix(state: dict[str, torch.Tensor]) -> str:
    if any(k.startswith("text_encoder.bert.") for k in state):
        return "text_encoder.bert."
    return "text_encoder."


def infer_config_values(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Tower sizes read from the tensors (vocabulary, widths, layer counts, the fusion split). Head counts are not
    stored in a state dict: ALBEF's BERT and ViT use 64-dimensional heads, so heads = width / 64
    (`--config_overrides` changes them for another release)."""
    prefix = _text_prefix(state)
    layers = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"encoder\.layer\.(\d+)\.", k))}
    fusion = {i for i in layers if f"{prefix}encoder.layer.{i}.crossattention.self.query.weight" in state}
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"visual_encoder\.blocks\.(\d+)\.", k))}
    required = [f"{prefix}embeddings.word_embeddings.weight", "visual_encoder.patch_embed.proj.weight", "vision_proj.weight"]
    missing = [k for k in required if k not in state]
    if missing or not layers or not fusion or not blocks:
        raise CheckpointLayoutError(
            "not an ALBEF / RaSa checkpoint: missing "
            + ", ".join(missing or [f"{prefix}encoder.layer.N (with crossattention)", "visual_encoder.blocks.N"])
            + f"; found keys such as {', '.join(sorted(state)[:6])}"
        )
    word = state[f"{prefix}embeddings.word_embeddings.weight"]
    patch = state["visual_encoder.patch_embed.proj.weight"]
    fc1 = state["visual_encoder.blocks.0.mlp.fc1.weight"] if "visual_encoder.blocks.0.mlp.fc1.weight" in state else None
    return dict(
        vocab_size=word.shape[0],
        hidden_size=word.shape[1],
        num_attention_heads=max(1, word.shape[1] // 64),
        max_position_embeddings=state[f"{prefix}embeddings.position_embeddings.weight"].shape[0],
        num_text_layers=len(layers - fusion),
        num_fusion_layers=len(fusion),
        intermediate_size=state[f"{prefix}encoder.layer.0.intermediate.dense.weight"].shape[0],
        vision_hidden_size=patch.shape[0],
        vision_num_attention_heads=max(1, patch.shape[0] // 64),
        patch_size=patch.shape[-1],
        vision_num_hidden_layers=len(blocks),
        vision_intermediate_size=fc1.shape[0] if fc1 is not None else 4 * patch.shape[0],
        embed_dim=state["vision_proj.weight"].shape[0],
    )


def convert_state_dict(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """Rename ALBEF / RaSa keys to LAIP's; raise `CheckpointLayoutError` listing unexpected keys."""
    prefix = _text_prefix(state)
    n_text = config.num_text_layers
    out: dict[str, torch.Tensor] = {}
    unexpected = []
    vit_names = {
        "norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.o_proj",
        "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
    }  # fmt: skip
    for key, value in state.items():
        if DROPPED.search(key):
            continue
        if key in ("vision_proj.weight", "vision_proj.bias", "text_proj.weight", "text_proj.bias", "itm_head.weight",
                   "itm_head.bias", "temp"):  # fmt: skip
            out[key] = value
        elif key == "visual_encoder.cls_token":
            out["vision_model.embeddings.cls_token"] = value
        elif key == "visual_encoder.pos_embed":
            out["vision_model.embeddings.position_embeddings"] = resize_position_embeddings(value, config.grid_size)
        elif key.startswith("visual_encoder.patch_embed.proj."):
            out["vision_model.embeddings.patch_embeddings.projection." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("visual_encoder.norm."):
            out["vision_model.layernorm." + key.rsplit(".", 1)[1]] = value
        elif m := re.match(r"visual_encoder\.blocks\.(\d+)\.(.+)\.(weight|bias)$", key):
            block, name, kind = m.groups()
            if name == "attn.qkv":
                for part, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"vision_model.layers.{block}.attention.{part}.{kind}"] = chunk.clone()
            elif name in vit_names:
                out[f"vision_model.layers.{block}.{vit_names[name]}.{kind}"] = value
            else:
                unexpected.append(key)
        elif key.startswith(prefix + "embeddings."):
            out["text_encoder." + key[len(prefix) :]] = value
        elif m := re.match(re.escape(prefix) + r"encoder\.layer\.(\d+)\.(.+)$", key):
            layer, rest = int(m.group(1)), m.group(2)
            if layer < n_text:
                out[f"text_encoder.encoder.layer.{layer}.{rest}"] = value
            else:
                out[f"fusion_layers.{layer - n_text}.{rest}"] = value
        elif key.startswith("text_encoder.cls.predictions."):
            rest = key[len("text_encoder.cls.predictions.") :]
            if rest.startswith("decoder."):
                continue  # tied to the word embeddings / the head's bias
            out["mlm_head.predictions." + rest] = value
        else:
            unexpected.append(key)
    if unexpected:
        raise CheckpointLayoutError(
            f"unexpected key(s) for an ALBEF / RaSa checkpoint: {', '.join(sorted(unexpected)[:20])}"
            + (f" (+{len(unexpected) - 20} more)" if len(unexpected) > 20 else "")
        )
    return out


def convert(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    tokenizer: str | os.PathLike | None = None,
    config_overrides: dict[str, Any] | None = None,
):
    """Convert an ALBEF / RaSa `.pth` into `output_dir` (config.json, model.safetensors, processor files).

    Args:
        checkpoint: the `.pth` file.
        output_dir: folder to write.
        tokenizer: hub id or folder of the BERT tokenizer (default: the preset's `bert-base-uncased`).
        config_overrides: `LAIPConfig` fields on top of the `albef-b16` preset and the sizes read from the tensors
            (e.g. `{"image_size": [384, 384]}`).

    Returns:
        The conversion report (also written to `conversion_report.json`): `{"checkpoint", "sha256", "source",
        "text_prefix", "dropped", "missing", "grid"}` (`dropped`: momentum copies, queues … not kept; `missing`: LAIP
        weights the file lacks, i.e. the MLM head of a retrieval checkpoint, left at their initialization).
    """
    from ...model_card import write_model_card
    from .configuration_laip import LAIPConfig
    from .modeling_laip import LAIPModel
    from .processing_laip import LAIPProcessor

    state = load_original_state_dict(checkpoint)
    values = infer_config_values(state)
    overrides = dict(config_overrides or {})
    for key in ("vocab_size", "hidden_size", "num_text_layers", "num_fusion_layers", "vision_hidden_size"):
        if key in overrides and overrides[key] != values[key]:
            raise ValueError(f"config_overrides[{key!r}] = {overrides[key]} contradicts the checkpoint ({values[key]})")
    values.update(overrides)
    if tokenizer is not None:
        values["tokenizer_name"] = str(tokenizer)
    values.setdefault("bidiratt_layer", min(2, values["num_fusion_layers"] - 2) if values["num_fusion_layers"] > 1 else 0)
    if values["num_fusion_layers"] == 1:
        values.setdefault("use_bidiratt", False)
    config = LAIPConfig.from_preset("albef-b16", **values)
    converted = convert_state_dict(state, config)

    model = LAIPModel(config)
    expected = set(model.state_dict()) - {"mlm_head.predictions.decoder.weight", "mlm_head.predictions.decoder.bias"}
    optional = {k for k in expected if k.startswith("mlm_head.")}  # retrieval checkpoints have no MLM head
    missing = sorted(expected - optional - set(converted))
    if missing:
        raise CheckpointLayoutError(
            f"{checkpoint}: missing key(s) for LAIP: {', '.join(missing[:20])}" + (f" (+{len(missing) - 20} more)" if len(missing) > 20 else "")
        )
    ours = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(ours[k].shape)}" for k, v in converted.items() if ours[k].shape != v.shape]
    if wrong:
        raise CheckpointLayoutError(f"{checkpoint}: shape mismatch: {'; '.join(wrong[:10])}")
    model.load_state_dict(converted, strict=False)
    model.tie_weights()

    try:
        processor = LAIPProcessor.from_config(config)  # the tokenizer from config.tokenizer_name
    except Exception as err:
        raise ValueError(
            f"could not load the tokenizer {config.tokenizer_name!r} ({err}); pass tokenizer= (--tokenizer) a local "
            "folder of ALBEF's bert-base-uncased tokenizer"
        ) from err
    if len(processor.tokenizer) > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(processor.tokenizer)} tokens but the checkpoint's vocabulary is {config.vocab_size}"
        )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    dropped = sorted(k for k in state if DROPPED.search(k))
    report = {
        "checkpoint": Path(checkpoint).name,
        "sha256": digest,
        "source": f"https://github.com/{SOURCE_REPO}",
        "text_prefix": _text_prefix(state),
        "dropped": dropped,
        "missing": sorted(k for k in optional if k not in converted),
        "grid": list(config.grid_size),
    }
    (output_dir / "conversion_report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_model_card(
        output_dir,
        "laip",
        preset="converted",
        dataset=None,
        model_name=f"laip-{Path(checkpoint).stem}",
        source=(
            f"converted from an ALBEF-layout release ([{SOURCE_REPO}](https://github.com/{SOURCE_REPO}), BSD-3-Clause; "
            f"RaSa checkpoints share the layout), file `{Path(checkpoint).name}` (sha256 `{digest[:16]}…`) with "
            f"`tbps convert --model laip`. Position table resized to {config.grid_size[0]}x{config.grid_size[1]} "
            f"patches at {config.image_size[0]}x{config.image_size[1]}; momentum copies and queues "
            f"({len(dropped)} tensors) are not kept."
        ),
        license=SOURCE_LICENSE,
    )
    return report


__all__ = ["convert", "convert_state_dict", "infer_config_values", "load_original_state_dict", "resize_position_embeddings", "CheckpointLayoutError"]
