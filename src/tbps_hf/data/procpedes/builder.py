"""The ProcPEDES `datasets` builder and ``load_procpedes``.

``datasets`` 5.x runs no loading scripts, so the builder is a class in the package, instantiated directly::

    builder = ProcPedesBuilder(cache_dir=..., config_name=..., **options)
    builder.download_and_prepare()
    dataset_dict = builder.as_dataset()

``load_procpedes`` does exactly this after validating the options; the config name is a hash of the options and of
the generator's source, so different options (or a changed generator) never share a cache entry. ``datasets``
writes into ``<dir>.incomplete`` and renames it only once every split is written, so an interrupted generation
leaves nothing a later load trusts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Iterator
from typing import Any

import datasets
import numpy as np

from .attributes import VIEWS, sample_split_identities
from .captions import GRANULARITIES, STYLES, write_caption
from .render import render_person

SPLITS = ("train", "test", "test_3c")
_SPLIT_INDEX = {name: i for i, name in enumerate(SPLITS)}
_IN_DOMAIN_GRANULARITIES = ("fine", "medium", "coarse")  # caption k of a train/test image has granularity k % 3


@dataclasses.dataclass
class ProcPedesConfig(datasets.BuilderConfig):
    """Options of a ProcPEDES build (all sizes are counts; ``image_size`` is ``(height, width)``)."""

    num_train_identities: int = 500
    num_test_identities: int = 100
    num_test_3c_identities: int = 100
    images_per_identity: int = 4
    captions_per_image: int = 2
    image_size: tuple = (128, 64)
    twin_fraction: float = 0.3
    seed: int = 0


OPTION_NAMES: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(ProcPedesConfig) if f.name not in {f.name for f in dataclasses.fields(datasets.BuilderConfig)}
)
DEFAULT_OPTIONS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(ProcPedesConfig) if f.name in OPTION_NAMES}


def validate_options(options: dict[str, Any]) -> dict[str, Any]:
    """Complete ``options`` with the defaults and check them; raises ``ValueError`` naming the bad option."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise ValueError(f"Unknown ProcPEDES option(s) {unknown}; valid options: {list(OPTION_NAMES)}")
    opts = {**DEFAULT_OPTIONS, **options}

    def is_int(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    for name in ("num_train_identities", "num_test_identities", "num_test_3c_identities", "images_per_identity"):
        if not is_int(opts[name]) or opts[name] < 1:
            raise ValueError(f"ProcPEDES option {name} must be a positive int, got {opts[name]!r}")
        opts[name] = int(opts[name])
    cpi = opts["captions_per_image"]
    if not is_int(cpi) or not 2 <= cpi <= len(GRANULARITIES) * len(STYLES):
        raise ValueError(f"ProcPEDES option captions_per_image must be an int in [2, 12], got {cpi!r}")
    opts["captions_per_image"] = int(cpi)
    size = opts["image_size"]
    if isinstance(size, (int, np.integer)) or len(size) != 2 or not all(is_int(s) for s in size):
        raise ValueError(f"ProcPEDES option image_size must be (height, width) ints, got {size!r}")
    if size[0] < 32 or size[1] < 16:
        raise ValueError(f"ProcPEDES option image_size must be at least (32, 16), got {tuple(size)!r}")
    opts["image_size"] = (int(size[0]), int(size[1]))
    tf = opts["twin_fraction"]
    if isinstance(tf, bool) or not isinstance(tf, (int, float)) or not 0.0 <= float(tf) <= 1.0:
        raise ValueError(f"ProcPEDES option twin_fraction must be a number in [0, 1], got {tf!r}")
    opts["twin_fraction"] = float(tf)
    if not is_int(opts["seed"]) or opts["seed"] < 0:
        raise ValueError(f"ProcPEDES option seed must be a non-negative int, got {opts['seed']!r}")
    opts["seed"] = int(opts["seed"])
    return opts


def _generator_fingerprint() -> str:
    """Hash of the generator's source: a changed renderer or caption writer must not reuse an old cache."""
    h = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("attributes.py", "captions.py", "render.py", "builder.py"):
        with open(os.path.join(here, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def config_name_for(options: dict[str, Any]) -> str:
    """``procpedes-<hash>``: a hash of the complete, validated options and of the generator source."""
    payload = json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in sorted(options.items())}, sort_keys=True)
    digest = hashlib.sha256((payload + _generator_fingerprint()).encode()).hexdigest()[:16]
    return f"procpedes-{digest}"


def plan_identities(config: ProcPedesConfig) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    """``split -> [(person_id, attributes)]``; ids are contiguous over train, test, test_3c and never shared."""
    rng = np.random.default_rng([config.seed, 7])
    taken: set = set()
    counts = {
        "train": config.num_train_identities,
        "test": config.num_test_identities,
        "test_3c": config.num_test_3c_identities,
    }
    plan, next_id = {}, 0
    for split in SPLITS:
        idents = sample_split_identities(rng, counts[split], config.twin_fraction, taken)
        plan[split] = [(next_id + i, a) for i, a in enumerate(idents)]
        next_id += len(idents)
    return plan


def _views(rng: np.random.Generator, n: int) -> list[str]:
    """Views of one identity: cycles through front / back / side in a random order (side = left or right)."""
    out: list[str] = []
    while len(out) < n:
        for v in rng.permutation(["front", "back", "side"]):
            out.append(str(v) if v != "side" else ("left", "right")[int(rng.integers(2))])
    return out[:n]


def generate_rows(config: ProcPedesConfig, split: str, plan=None) -> Iterator[dict[str, Any]]:
    """The rows of one split, images as PNG bytes. Every image draws from its own generator seeded by
    ``(seed, split, person_id, image_index)``, so rows do not depend on generation order."""
    plan = plan if plan is not None else plan_identities(config)
    s = _SPLIT_INDEX[split]
    for pid, attrs in plan[split]:
        views = _views(np.random.default_rng([config.seed, 100 + s, pid]), config.images_per_identity)
        attributes_json = json.dumps(attrs)
        for k, view in enumerate(views):
            rng = np.random.default_rng([config.seed, s, pid, k])
            image = render_person(attrs, view, rng, tuple(config.image_size), "shifted" if split == "test_3c" else "street")
            buf = io.BytesIO()
            image.save(buf, format="PNG", compress_level=1)
            if split == "test_3c":  # mixed queries: a different (granularity, style) pair for every caption
                combos = [(g, st) for g in GRANULARITIES for st in STYLES]
                picks = [combos[int(i)] for i in rng.permutation(len(combos))[: config.captions_per_image]]
            else:
                picks = [
                    (_IN_DOMAIN_GRANULARITIES[j % len(_IN_DOMAIN_GRANULARITIES)], "descriptive")
                    for j in range(config.captions_per_image)
                ]
            captions = [write_caption(attrs, view, g, st, rng)[0] for g, st in picks]
            yield {
                "image": {"bytes": buf.getvalue(), "path": None},
                "person_id": pid,
                "captions": captions,
                "caption_granularity": [g for g, _ in picks],
                "caption_style": [st for _, st in picks],
                "attributes": attributes_json,
                "view": view,
                "file_path": f"{split}/{pid:05d}_{k}.png",
            }


class ProcPedesBuilder(datasets.GeneratorBasedBuilder):
    """Procedurally rendered pedestrians: splits ``train``, ``test`` (same domain) and ``test_3c`` (shifted domain,
    mixed caption granularity and style)."""

    BUILDER_CONFIG_CLASS = ProcPedesConfig
    VERSION = datasets.Version("1.0.0")

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("dataset_name", "procpedes")
        super().__init__(*args, **kwargs)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="ProcPEDES: procedurally rendered pedestrians with exact attributes and captions at three "
            "granularities and four styles (tbps_hf).",
            features=datasets.Features(
                {
                    "image": datasets.Image(),
                    "person_id": datasets.Value("int64"),
                    "captions": datasets.List(datasets.Value("string")),
                    "caption_granularity": datasets.List(datasets.Value("string")),
                    "caption_style": datasets.List(datasets.Value("string")),
                    "attributes": datasets.Value("string"),
                    "view": datasets.Value("string"),
                    "file_path": datasets.Value("string"),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        validate_options({k: getattr(self.config, k) for k in OPTION_NAMES})
        plan = plan_identities(self.config)
        names = {"train": datasets.Split.TRAIN, "test": datasets.Split.TEST, "test_3c": datasets.NamedSplit("test_3c")}
        return [datasets.SplitGenerator(name=names[s], gen_kwargs={"split": s, "plan": plan}) for s in SPLITS]

    def _generate_examples(self, split: str, plan):
        for i, row in enumerate(generate_rows(self.config, split, plan)):
            yield i, row


def _check_cache_dir(cache_dir: str | os.PathLike | None) -> str | None:
    if cache_dir is None:
        return None
    path = os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise OSError(f"ProcPEDES cache directory {path!r} cannot be created: {e}") from e
    if not os.path.isdir(path):
        raise OSError(f"ProcPEDES cache directory {path!r} is not a directory")
    probe = os.path.join(path, f".procpedes-write-test-{os.getpid()}")
    try:
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as e:
        raise OSError(f"ProcPEDES cache directory {path!r} is not writable: {e}") from e
    return path


def load_procpedes(cache_dir: str | os.PathLike | None = None, **options) -> datasets.DatasetDict:
    """Build (once per distinct options, cached) and load ProcPEDES.

    Args:
        cache_dir: where ``datasets`` caches the generated Arrow files (default: the ``datasets`` cache).
        **options: any of ``num_train_identities`` (500), ``num_test_identities`` (100), ``num_test_3c_identities``
            (100), ``images_per_identity`` (4), ``captions_per_image`` (2), ``image_size`` ((128, 64), height x
            width), ``twin_fraction`` (0.3: share of a split's identities that belong to a twin pair), ``seed`` (0).

    Returns:
        ``DatasetDict`` with ``train``, ``test`` and ``test_3c``; one row per image with ``image``, ``person_id``,
        ``captions``, ``caption_granularity``, ``caption_style``, ``attributes`` (JSON), ``view`` and ``file_path``.

    Raises:
        ValueError: unknown option names (the valid ones are listed) or bad values.
        OSError: ``cache_dir`` cannot be created or written.
    """
    opts = validate_options(options)
    path = _check_cache_dir(cache_dir)
    name = config_name_for(opts)
    builder = ProcPedesBuilder(cache_dir=path, config_name=name, config_id=name, **opts)
    builder.download_and_prepare()
    return builder.as_dataset()
