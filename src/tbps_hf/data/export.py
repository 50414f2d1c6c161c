"""Export a `DatasetDict` to Parquet shards with the image bytes embedded (ready for the hub).

`Dataset.to_parquet` alone writes an `Image` column that still points at local paths; here each shard goes through
`datasets.table.embed_table_storage` first (what `push_to_hub` does), so the files are self-contained. The layout
(`data/<split>-NNNNN-of-NNNNN.parquet` + a README with `configs:`) is the hub's, so `load_dataset(out_dir)` and
`load_dataset("parquet", data_files=...)` both read it back with the same features.
"""

from __future__ import annotations

import glob
import math
import os
from typing import Optional, Union

import datasets
from datasets.table import embed_table_storage
from datasets.utils.py_utils import convert_file_size_to_int


def _estimate_nbytes(dataset: datasets.Dataset) -> int:
    # Private helper of `datasets` (used by push_to_hub) that counts the size of external image files too.
    try:
        return int(dataset._estimate_nbytes())
    except Exception:  # noqa: BLE001 - an estimate only decides the shard count
        return int(dataset.data.nbytes)


def export_parquet(
    dataset_dict: Union[datasets.DatasetDict, dict],
    out_dir: str,
    max_shard_size: Union[int, str] = "500MB",
    write_readme: bool = True,
    pretty_name: Optional[str] = None,
) -> dict[str, list[str]]:
    """Write every split of `dataset_dict` to `out_dir/data/<split>-NNNNN-of-NNNNN.parquet`, images embedded.

    Args:
        dataset_dict: splits to export (`DatasetDict` or a dict of `Dataset`).
        out_dir: output folder (created). Earlier shards of the same splits are removed first.
        max_shard_size: upper bound per shard, e.g. `"500MB"` or bytes.
        write_readme: write `out_dir/README.md` with the hub `configs:` block mapping the splits to the files.
        pretty_name: title for that README.

    Returns:
        split -> list of written Parquet paths. Read back with
        `load_dataset("parquet", data_files={split: paths, ...})`.
    """
    if not dataset_dict:
        raise ValueError("export_parquet: nothing to export (no splits)")
    max_bytes = convert_file_size_to_int(max_shard_size)
    data_dir = os.path.join(out_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    written: dict[str, list[str]] = {}
    for split, dataset in dataset_dict.items():
        if not isinstance(dataset, datasets.Dataset):
            raise TypeError(f"export_parquet: split {split!r} is a {type(dataset).__name__}, expected datasets.Dataset")
        for stale in glob.glob(os.path.join(data_dir, f"{glob.escape(split)}-*-of-*.parquet")):
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
        for split in written:
            lines += [f"  - split: {split}", f"    path: data/{split}-*"]
        lines += ["---", "", f"# {pretty_name or os.path.basename(os.path.abspath(out_dir))}", "",
                  "Parquet export (images embedded) written by `tbps_hf.data.export_parquet`.", ""]
        with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
    return written
