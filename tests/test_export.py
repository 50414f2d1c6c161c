"""Parquet export keeps the image bytes (not paths): the round trip restores features and pixels."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
from datasets import load_dataset
from PIL import Image

from tbps_hf.data import export_parquet, load_tbps_dataset


def make_ufine3c(root):
    """A tiny UFine3C release: PNG (RGBA, grayscale, palette), BMP and JPEG images."""
    data_dir = root / "UFine3C"
    (data_dir / "images").mkdir(parents=True)
    kinds = [("RGBA", "png", (1, 2, 3, 100)), ("L", "png", 77), ("RGB", "bmp", (9, 8, 7)),
             ("RGB", "jpg", (250, 10, 10)), ("P", "png", 5)]
    records = []
    for i, (mode, ext, colour) in enumerate(kinds):
        path = f"images/{i}.{ext}"
        Image.new(mode, (5, 9), colour).save(data_dir / path)
        records.append({"id": 10 + 2 * (i // 2), "source": ["CUHK-PEDES", "ICFG-PEDES", "UFine6926"][i % 3],
                        "split": "test", "file_path": path, "captions": [f"caption {i}.{c}" for c in range(i % 2 + 1)]})
    (data_dir / "UFine3C.json").write_text(json.dumps(records))
    return data_dir


def test_parquet_round_trip_keeps_images_and_features(tmp_path):
    data_dir = make_ufine3c(tmp_path)
    ds = load_tbps_dataset("ufine3c", data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"))
    originals = [np.asarray(row["image"]) for row in ds["test"]]
    modes = [row["image"].mode for row in ds["test"]]

    written = export_parquet(ds, str(tmp_path / "export"), max_shard_size=200)  # tiny: forces several shards
    assert len(written["test"]) > 1

    # The files hold bytes, not paths: the image column's "bytes" field is filled in every row.
    for path in written["test"]:
        images = pq.read_table(path).column("image").to_pylist()
        assert all(im["bytes"] for im in images)

    shutil.rmtree(data_dir)  # the source images are gone; the export must not need them
    shutil.rmtree(tmp_path / "cache")
    back = load_dataset("parquet", data_files={"test": written["test"]}, cache_dir=str(tmp_path / "cache2"))
    assert back["test"].features == ds["test"].features
    assert len(back["test"]) == len(originals)
    for row, pixels, mode, original in zip(back["test"], originals, modes, ds["test"].to_dict()["captions"]):
        assert row["image"].mode == mode
        assert np.array_equal(np.asarray(row["image"]), pixels)
        assert row["captions"] == original
    assert back["test"]["source"] == ["CUHK-PEDES", "ICFG-PEDES", "UFine6926", "CUHK-PEDES", "ICFG-PEDES"]
    assert back["test"]["person_id"] == [10, 10, 12, 12, 14]

    # The README's `configs:` block lets the folder load as a hub dataset too.
    folder = load_dataset(str(tmp_path / "export"), cache_dir=str(tmp_path / "cache3"))
    assert list(folder) == ["test"] and len(folder["test"]) == 5


def test_export_replaces_stale_shards(tmp_path):
    data_dir = make_ufine3c(tmp_path)
    ds = load_tbps_dataset("ufine3c", data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"))
    out = tmp_path / "export"
    first = export_parquet(ds, str(out), max_shard_size=200)
    second = export_parquet(ds, str(out))
    assert len(second["test"]) == 1 < len(first["test"])
    assert sorted(p.name for p in (out / "data").iterdir()) == ["test-00000-of-00001.parquet"]
