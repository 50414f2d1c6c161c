"""Convert the IVT authors' checkpoints (TencentYoutuResearch/PersonRetrieval-IVT, MIT licence) to a tbps-hf folder.

The release's `UVT_Bert_IMG_TXT_MASK` (``model/backbones/vit_vl.py``) keeps everything under ``encoder_vl.``:
BERT embeddings (``embeddings.*``), ``cls_token``, ``pos_embed`` and ``type_embed`` (both ``[1, 1 + N, d]``, added
to image tokens only), ``patch_embed.proj`` (a conv of kernel 16 and stride ``STRIDE_SIZE``: 12 for the CUHK-PEDES
and ICFG-PEDES releases → 31x10 patches at 384x128), ``blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp_vis.*,
mlp_txt.*}`` and ``norm``. Outside it: ``temp``, ``classifier_img``, ``bottleneck_img`` (training heads, unused at
retrieval). The file is a ``{'state_dict': ...}`` (or ``'model'``) wrapper or a raw state dict, often with DDP's
``module.`` prefix, written with the legacy (non-zip) serialization.

Usage::

    tbps convert --model ivt --checkpoint ivt_cuhk.pth --output_dir ivt-cuhk --tokenizer /models/bert-base-uncased

The output folder holds ``model.safetensors`` + ``config.json``, the processor (384x128, mean = std = 0.5, the
bert-base-uncased tokenizer, text length 100), a model card naming the source and its licence, and
``conversion_report.json`` (ignored and missing keys).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ...errors import TBPSUserError
from .configuration_ivt import IVTConfig

SOURCE_REPO = "TencentYoutuResearch/PersonRetrieval-IVT"
SOURCE_LICENSE = "mit"
DEFAULT_TOKENIZER = "bert-base-uncased"
# Keys the release carries for training only: identity classifier, its BN bottleneck, the CMPM temperature.
IGNORED_PREFIXES = ("classifier", "bottleneck", "temp")
PREFIX = "encoder_vl."


class ConversionError(TBPSUserError, ValueError):
    """A checkpoint that is not (or not entirely) the layout a converter reads."""


# ----------------------------------------------------------------------------------------------------- reading
def load_original_state_dict(checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file with ``torch.load(weights_only=True)`` (never unsafe unpickling) or safetensors, unwrap
    ``state_dict`` / ``model`` and strip DDP's ``module.`` prefix."""
    path = Path(checkpoint)
    if not path.is_file():
        raise ConversionError(f"--checkpoint {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConversionError(
                f"--checkpoint {path}: torch.load(weights_only=True) refuses this file ({first}). tbps-hf never "
                "unpickles arbitrary objects; re-save only its tensors (torch.save(ckpt['state_dict'], 'weights.pth')) "
                "in an environment you trust, then convert that file"
            ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not state:
        raise ConversionError(f"--checkpoint {path}: expected a state dict (or a 'state_dict' / 'model' wrapper)")
    tensors = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"--checkpoint {path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        tensors[key[len("module."):] if key.startswith("module.") else key] = value
    return tensors


# --------------------------------------------------------------------------------------------------- inference
def _infer_stride(num_patches: int, image_size: tuple[int, int], patch: int) -> int:
    """The conv stride whose grid over ``image_size`` has ``num_patches`` cells (16 → 24x8, 12 → 31x10 at 384x128)."""
    height, width = image_size
    for stride in range(patch, 0, -1):
        if ((height - patch) // stride + 1) * ((width - patch) // stride + 1) == num_patches:
            return stride
    raise ConversionError(
        f"pos_embed has {num_patches} patch positions, which no stride <= {patch} gives at image_size {image_size}; "
        'pass the training crop size with --config_overrides \'{"image_size": [H, W]}\''
    )


def infer_config(state: Mapping[str, torch.Tensor], tokenizer: str, **overrides: Any) -> IVTConfig:
    """The `IVTConfig` of an original state dict: layers, width, MLP size, vocabulary, text positions and the image
    grid (hence the patch stride) come from the tensors; the rest is the paper's ``base`` preset."""
    def get(name: str) -> torch.Tensor:
        return state[PREFIX + name]

    hidden = get("cls_token").shape[-1]
    patch = get("patch_embed.proj.weight").shape[-1]
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(re.escape(PREFIX) + r"blocks\.(\d+)\.", k)))
    image_size = tuple(overrides.pop("image_size", (384, 128)))
    num_patches = get("pos_embed").shape[1] - 1
    stride = _infer_stride(num_patches, image_size, patch)
    text_positions = get("embeddings.position_embeddings.weight").shape[0]
    max_text_length = int(overrides.pop("max_text_length", min(100, text_positions)))
    if max_text_length > text_positions:
        raise ConversionError(f"max_text_length {max_text_length} exceeds the checkpoint's {text_positions} text positions")
    values: dict[str, Any] = dict(
        image_size=image_size,
        patch_size=patch,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),  # not stored in the tensors: ViT heads are 64 wide
        intermediate_size=get("blocks.0.mlp_vis.fc1.weight").shape[0],
        qkv_bias=PREFIX + "blocks.0.attn.qkv.bias" in state,
        vocab_size=get("embeddings.word_embeddings.weight").shape[0],
        type_vocab_size=get("embeddings.token_type_embeddings.weight").shape[0],
        max_text_length=max_text_length,
        tokenizer_name=tokenizer,
        drop_path_rate=0.0,
        final_layer_norm_init=1.0,
        backbone_checkpoints=None,  # the weights come from the release, not from the preset's ImageNet / BERT towers
    )
    if stride != patch:
        values["patch_stride"] = stride
    values.update(overrides)
    return IVTConfig.from_preset("base", **values)


# ------------------------------------------------------------------------------------------------- conversion
def convert_state_dict(
    state: Mapping[str, torch.Tensor], config: IVTConfig
) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """Rename an original state dict to `IVTModel`'s parameters.

    Folds ``pos_embed + type_embed`` into the position table (the type embedding then is zero: the sum is what the
    release adds to every image token, class token included), splits the fused ``qkv`` into q / k / v (stacked in
    that order), slices BERT's position table to ``max_text_length`` and drops ``embeddings.position_ids``.

    Returns the new state dict and ``{"ignored": [...], "unexpected": [...]}`` (keys outside the documented layout).
    """
    hidden = config.hidden_size
    new: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        used.add(PREFIX + name)
        return state[PREFIX + name]

    new["image_embeddings.cls_token"] = take("cls_token")
    new["image_embeddings.position_embeddings"] = take("pos_embed") + take("type_embed")
    new["image_embeddings.type_embedding"] = torch.zeros(1, 1, hidden, dtype=new["image_embeddings.cls_token"].dtype)
    new["image_embeddings.patch_embedding.weight"] = take("patch_embed.proj.weight")
    new["image_embeddings.patch_embedding.bias"] = take("patch_embed.proj.bias")

    new["text_embeddings.word_embeddings.weight"] = take("embeddings.word_embeddings.weight")
    new["text_embeddings.position_embeddings.weight"] = take("embeddings.position_embeddings.weight")[
        : config.max_text_length
    ]
    new["text_embeddings.token_type_embeddings.weight"] = take("embeddings.token_type_embeddings.weight")
    new["text_embeddings.layer_norm.weight"] = take("embeddings.LayerNorm.weight")
    new["text_embeddings.layer_norm.bias"] = take("embeddings.LayerNorm.bias")
    used.add(PREFIX + "embeddings.position_ids")

    for i in range(config.num_hidden_layers):
        block, ours = f"blocks.{i}.", f"layers.{i}."
        for suffix in ("weight", "bias"):
            new[f"{ours}layernorm_before.{suffix}"] = take(f"{block}norm1.{suffix}")
            new[f"{ours}layernorm_after.{suffix}"] = take(f"{block}norm2.{suffix}")
            new[f"{ours}attention.out_proj.{suffix}"] = take(f"{block}attn.proj.{suffix}")
            for theirs, mine in (("mlp_vis", "mlp_image"), ("mlp_txt", "mlp_text")):
                for fc in ("fc1", "fc2"):
                    new[f"{ours}{mine}.{fc}.{suffix}"] = take(f"{block}{theirs}.{fc}.{suffix}")
            if suffix == "bias" and PREFIX + f"{block}attn.qkv.bias" not in state:
                continue
            q, k, v = take(f"{block}attn.qkv.{suffix}").chunk(3, dim=0)
            new[f"{ours}attention.q_proj.{suffix}"] = q
            new[f"{ours}attention.k_proj.{suffix}"] = k
            new[f"{ours}attention.v_proj.{suffix}"] = v
    new["layernorm.weight"] = take("norm.weight")
    new["layernorm.bias"] = take("norm.bias")

    leftover = [k for k in state if k not in used]
    ignored = [k for k in leftover if k.startswith(IGNORED_PREFIXES)]
    unexpected = [k for k in leftover if not k.startswith(IGNORED_PREFIXES)]
    return {k: v.contiguous() for k, v in new.items()}, {"ignored": ignored, "unexpected": unexpected}


def _check_layout(state: Mapping[str, torch.Tensor], checkpoint: Path) -> None:
    required = ["cls_token", "pos_embed", "type_embed", "patch_embed.proj.weight", "embeddings.word_embeddings.weight",
                "blocks.0.attn.qkv.weight", "blocks.0.mlp_txt.fc1.weight", "norm.weight"]
    missing = [PREFIX + name for name in required if PREFIX + name not in state]
    if missing:
        first = ", ".join(list(state)[:5])
        raise ConversionError(
            f"--checkpoint {checkpoint} is not an IVT release checkpoint (UVT_Bert_IMG_TXT_MASK): it lacks "
            f"{', '.join(missing[:3])}; its first keys are {first}. Is it another method's checkpoint?"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    tokenizer: str | None = None,
    config_overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Convert an IVT release checkpoint into a folder that `AutoModel` / `AutoProcessor` load.

    Args:
        checkpoint: the ``.pth`` file (``state_dict`` / ``model`` wrapper or raw; ``module.`` prefixes allowed).
        output_dir: the folder to write (model, processor, ``README.md``, ``conversion_report.json``).
        tokenizer: hub id or folder of the tokenizer (default ``bert-base-uncased``, as the release).
        config_overrides: `IVTConfig` fields to set (e.g. ``{"image_size": [384, 128]}`` when the crop size differs).

    Returns:
        The conversion report: ``{"checkpoint", "sha256", "ignored", "missing", "config"}``.

    Raises:
        ConversionError: unreadable file, another layout, keys outside the documented layout, or missing weights.
    """
    from transformers import AutoTokenizer

    from ...model_card import write_model_card
    from .modeling_ivt import IVTModel
    from .processing_ivt import IVTProcessor

    checkpoint = Path(checkpoint)
    state = load_original_state_dict(checkpoint)
    _check_layout(state, checkpoint)
    tokenizer = tokenizer or DEFAULT_TOKENIZER
    try:  # before any conversion work: offline, the default hub id may not be cached
        text_tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    except (OSError, ValueError) as err:
        raise ConversionError(
            f"--tokenizer {tokenizer}: cannot be loaded ({str(err).splitlines()[0]}); pass a local folder holding "
            "the bert-base-uncased tokenizer"
        ) from None
    config = infer_config(state, tokenizer, **dict(config_overrides or {}))
    new_state, report = convert_state_dict(state, config)
    if report["unexpected"]:
        raise ConversionError(
            f"--checkpoint {checkpoint}: {len(report['unexpected'])} keys outside the IVT release layout, first: "
            f"{', '.join(report['unexpected'][:5])}"
        )
    model = IVTModel(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in new_state]
    wrong = [f"{k} {tuple(new_state[k].shape)} vs {tuple(expected[k].shape)}" for k in new_state
             if k in expected and new_state[k].shape != expected[k].shape]
    unknown = [k for k in new_state if k not in expected]
    if missing or wrong or unknown:
        raise ConversionError(
            f"--checkpoint {checkpoint}: the converted weights do not fit IVTModel: missing {missing[:5]}, "
            f"mis-shaped {wrong[:5]}, unknown {unknown[:5]}"
        )
    model.load_state_dict(new_state)

    if len(text_tokenizer) > config.vocab_size:
        raise ConversionError(
            f"--tokenizer {tokenizer} has {len(text_tokenizer)} tokens but the checkpoint's vocabulary has "
            f"{config.vocab_size}: not the tokenizer this model was trained with"
        )
    image_processor, _ = IVTProcessor._build_components(config)
    processor = IVTProcessor(image_processor=image_processor, tokenizer=text_tokenizer,
                             max_text_length=int(config.max_text_length))

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    digest = _sha256(checkpoint)
    result = {
        "checkpoint": checkpoint.name,
        "sha256": digest,
        "source": f"https://github.com/{SOURCE_REPO}",
        "ignored": report["ignored"],
        "missing": missing,
        "patch_stride": getattr(config, "patch_stride", None) or config.patch_size,
        "grid": list(config.grid_size),
    }
    (output_dir / "conversion_report.json").write_text(json.dumps(result, indent=2) + "\n")
    write_model_card(
        output_dir,
        "ivt",
        preset="converted",
        dataset=None,
        model_name=f"ivt-{checkpoint.stem}",
        source=(
            f"converted from the IVT authors' release ([{SOURCE_REPO}](https://github.com/{SOURCE_REPO}), "
            f"MIT licence), file `{checkpoint.name}` (sha256 `{digest[:16]}…`) with `tbps convert --model ivt`. "
            f"Patch stride {result['patch_stride']} ({config.grid_size[0]}x{config.grid_size[1]} patches at "
            f"{config.image_size[0]}x{config.image_size[1]}). The training heads "
            f"({', '.join(sorted({k.split('.')[0] for k in report['ignored']})) or 'none'}) are not kept."
        ),
        license=SOURCE_LICENSE,
    )
    return result


__all__ = ["ConversionError", "convert", "convert_state_dict", "infer_config", "load_original_state_dict"]
