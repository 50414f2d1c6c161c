"""Export a `DatasetDict` to Parquet shards with the image bytes embedded (ready for the hub).

`Dataset.to_parquet` alone writes an `Image` column that still points at local paths; here each shard goes through
`datasets.table.embed_table_storage` first (what `push_to_hub` does), so the files are self-contained. The layout
(`data/<split>-NNNNN-of-NNNNN.parquet` + a README with `configs:`) is the hub's (`push_to_hub` writes the same names),
so `load_dataset(out_dir)` reads every split back under its own name with or without the README: `datasets` tries
the sharded pattern `data/{split}-NNNNN-of-NNNNN.*` before its keyword patterns, which would otherwise file
`test_3c-*` under `test`. `load_dataset("parquet", data_files=...)` reads it too, with the same features.

Exporting some splits into a folder that holds an earlier export of others is explicit: `other_splits="keep"`
leaves their shards and lists them in the README, `"remove"` deletes them; by default it is refused, naming them.
"""

from __future__ import annotations

import glob
import math
import os
import re
from typing import Literal, Optional, Union

import datasets
from datasets.table import embed_table_storage
from datasets.utils.py_utils import convert_file_size_to_int


def _estimate_nbytes(dataset: datasets.Dataset) -> int:
    # Private helper of `datasets` (used by push_to_hub) that counts the size of external image files too.
    try:
        return int(dataset._estimate_nbytes())
    except Exception:  # noqa: BLE001 - an estimate only decides the shard count
        return int(dataset.data.nbytes)


_SHARD = re.compile(r"^(?P<split>.+)-\d{5}-of-\d{5}\.parquet$")


def _splits_on_disk(data_dir: str) -> list[str]:
    """Splits with shards in `data_dir` (file names `<split>-NNNNN-of-NNNNN.parquet`), in name order."""
    if not os.path.isdir(data_dir):
        return []
    return sorted({m.group("split") for name in os.listdir(data_dir) if (m := _SHARD.match(name))})


def _shards(data_dir: str, split: str) -> list[str]:
    pattern = os.path.join(glob.escape(data_dir), f"{glob.escape(split)}-[0-9][0-9][0-9][0-9][0-9]-of-*.parquet")
    return sorted(glob.glob(pattern))


def export_parquet(
    dataset_dict: Union[datasets.DatasetDict, dict],
    out_dir: str,
    max_shard_size: Union[int, str] = "500MB",
    write_readme: bool = True,
    pretty_name: Optional[str] = None,
    other_splits: Optional[Literal["keep", "remove"]] = None,
) -> dict[str, list[str]]:
    """Write every split of `dataset_dict` to `out_dir/data/<split>-NNNNN-of-NNNNN.parquet`, images embedded.

    Args:
        dataset_dict: splits to export (`DatasetDict` or a dict of `Dataset`).
        out_dir: output folder (created). Earlier shards of the same splits are removed first.
        max_shard_size: upper bound per shard, e.g. `"500MB"` or bytes.
        write_readme: write `out_dir/README.md` with the hub `configs:` block mapping the splits to the files.
        pretty_name: title for that README.
        other_splits: what to do with shards of splits already in `out_dir/data` that are not exported now:
            `"keep"` (listed in the README with the new ones) or `"remove"`; `None` refuses when there are any.

    Returns:
        split -> list of written Parquet paths. Read back with
        `load_dataset("parquet", data_files={split: paths, ...})`.
    """
    if not dataset_dict:
        raise ValueError("export_parquet: nothing to export (no splits)")
    if other_splits not in (None, "keep", "remove"):
        raise ValueError(f"export_parquet: other_splits must be 'keep', 'remove' or None, got {other_splits!r}")
    max_bytes = convert_file_size_to_int(max_shard_size)
    data_dir = os.path.join(out_dir, "data")
    others = sorted(set(_splits_on_disk(data_dir)) - set(dataset_dict))
    if others and other_splits is None:
        raise ValueError(
            f"{out_dir} already holds an export of the split(s) {', '.join(others)}, which are not being exported now; "
            "pass --other_splits keep (keep them and list them in the README) or --other_splits remove (delete them)"
        )
    if others and other_splits == "remove":
        for split in others:
            for stale in _shards(data_dir, split):
                os.remove(stale)
    os.makedirs(data_dir, exist_ok=True)
    written: dict[str, list[str]] = {}
    for split, dataset in dataset_dict.items():
        if not isinstance(dataset, datasets.Dataset):
            raise TypeError(f"export_parquet: split {split!r} is a {type(dataset).__name__}, expected datasets.Dataset")
        for stale in _shards(data_dir, split):
            os.remove(stale)
        num_shards = max(1, math.ceil(_estimate_nbytes(dataset) / max_bytes)) if len(dataset) else 1
        num_shards = min(num_shards, max(1, len(dataset)))
        paths = []
        for index in range(num_shards):
            shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True)
            shard = shard.with_format("arrow").map(embed_table_storage, batched=True, batch_size=1000,
                                                   keep_in_memory=True)
            path = os.path.join(data_dir, f"{split}-{index:05d}-of-{num_shards:05d}.parquet")
            shard.to_parquet(path)
            paths.append(path)
        written[split] = paths

    if write_readme:
        lines = ["---", "configs:", "- config_name: default", "  data_files:"]
        kept = [s for s in _splits_on_disk(data_dir) if s not in written]
        for split in [*written, *kept]:
            lines += [f"  - split: {split}", f"    path: data/{split}-*"]
        lines += ["---", "", f"# {pretty_name or os.path.basename(os.path.abspath(out_dir))}", "",
                  "Parquet export (images embedded) written by `tbps_hf.data.export_parquet`.", ""]
        with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
    return written
