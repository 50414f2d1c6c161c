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


# ------------------------------------------------------------------ the README's export → hub commands, round trip
README_EXPORT = (
    "tbps export --dataset procpedes --option num_train_identities=12 --option num_test_identities=4 "
    "--option num_test_3c_identities=4 --out exports/procpedes"
)
README_REEXPORT = (
    "tbps export --dataset procpedes --option num_train_identities=12 --option num_test_identities=4 "
    "--option num_test_3c_identities=4 --splits test --other_splits keep --out exports/procpedes"
)
README_PUSH_DATASET = "tbps push --dataset exports/procpedes --repo_id my-org/procpedes --private"


def test_readme_holds_these_commands_verbatim():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for command in (README_EXPORT, README_REEXPORT, README_PUSH_DATASET):
        assert command in readme, command


def _sizes(folder, cache):
    return {split: ds.num_rows for split, ds in load_dataset(str(folder), cache_dir=str(cache)).items()}


def test_export_round_trip_splits_with_and_without_card_and_partial_reexport(tmp_path, monkeypatch, capsys):
    import shlex

    import datasets
    import pytest

    from tbps_hf.cli import main as tbps

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    assert tbps(shlex.split(README_EXPORT)[1:]) == 0
    printed = dict(line.split(" rows")[0].split(": ") for line in capsys.readouterr().out.splitlines() if " rows -> " in line)
    out = tmp_path / "exports" / "procpedes"
    full = _sizes(out, tmp_path / "c1")
    assert full == {split: int(n) for split, n in printed.items()} and set(full) == {"train", "test", "test_3c"}

    # without the card, datasets' own file patterns give the same splits (test_3c is not filed under test)
    card = (out / "README.md").read_text()
    (out / "README.md").unlink()
    assert _sizes(out, tmp_path / "c2") == full
    (out / "README.md").write_text(card)

    # a partial re-export must say what happens to the other splits
    partial = shlex.split(README_REEXPORT)[1:]
    refused = [a for a in partial if a not in ("--other_splits", "keep")]
    assert tbps(refused) == 1
    assert "already holds an export of the split(s) test_3c, train" in capsys.readouterr().err
    assert tbps(partial) == 0
    assert _sizes(out, tmp_path / "c3") == full  # kept, and the card lists all three
    assert "split: train" in (out / "README.md").read_text()
    remove = [("remove" if a == "keep" else a) for a in partial]
    assert tbps(remove) == 0
    assert _sizes(out, tmp_path / "c4") == {"test": full["test"]}
    assert sorted(p.name.split("-")[0] for p in (out / "data").iterdir()) == ["test"]


def test_readme_push_dataset_command(tmp_path, monkeypatch):
    import shlex

    import huggingface_hub
    import pytest

    from tbps_hf.cli import main as tbps
    from tbps_hf.hub import PushError, push_dataset

    calls = []

    class FakeHfApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs["repo_type"], kwargs["private"]))

        def create_commit(self, repo_id, operations, commit_message, repo_type):
            calls.append(("create_commit", repo_id, sorted(op.path_in_repo for op in operations), repo_type))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    monkeypatch.chdir(tmp_path)
    ds = {"train": __import__("datasets").Dataset.from_dict({"x": [1, 2]}), "test": __import__("datasets").Dataset.from_dict({"x": [3]})}
    export_parquet(ds, "exports/procpedes")
    assert tbps(shlex.split(README_PUSH_DATASET)[1:]) == 0
    assert calls == [
        ("create_repo", "my-org/procpedes", "dataset", True),
        ("create_commit", "my-org/procpedes",
         ["README.md", "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"], "dataset"),
    ]
    with pytest.raises(PushError, match="not a `tbps export` folder"):
        push_dataset(tmp_path, "my-org/x")
