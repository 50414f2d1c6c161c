"""Benchmark builders on small fixtures written in each release's exact format, bad input, verify, CLI."""

import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from datasets import DatasetDict
from datasets.exceptions import ManualDownloadError
from PIL import Image

from tbps_hf.data import (
    BUILDERS,
    DATASET_NAMES,
    BadImageError,
    load_tbps_dataset,
    verify_dataset,
)
from tbps_hf.data.cli import main as data_cli

REPO = Path(__file__).resolve().parents[1]

# (mode, extension, colour) cycled over the fixture images: several formats and modes.
IMAGE_KINDS = [("RGB", "jpg", (200, 30, 30)), ("L", "png", 90), ("RGBA", "png", (10, 200, 10, 120)),
               ("RGB", "bmp", (5, 5, 250)), ("P", "png", 3)]


def write_image(path: Path, index: int) -> None:
    mode, _, colour = IMAGE_KINDS[index % len(IMAGE_KINDS)]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (6 + index % 3, 12), colour).save(path)


def image_name(index: int) -> str:
    return f"{index:04d}.{IMAGE_KINDS[index % len(IMAGE_KINDS)][1]}"


# Per benchmark: (annotation file, image root inside data_dir, record maker, split values used).
def cuhk_record(i, pid, split, captions):
    path = f"CUHK01/{image_name(i)}"
    return {"split": split, "captions": captions, "file_path": path,
            "processed_tokens": [c.lower().split() for c in captions], "id": pid}, "imgs/" + path


def rstp_record(i, pid, split, captions):
    path = image_name(i)
    return {"id": pid, "img_path": path, "captions": captions, "split": split}, "imgs/" + path


def ufine_record(i, pid, split, captions):
    path = f"images/{image_name(i)}"
    return {"split": split, "id": pid, "file_path": path, "captions": captions}, path


def ufine3c_record(i, pid, split, captions):
    path = f"images/{image_name(i)}"
    source = ["CUHK-PEDES", "ICFG-PEDES", "UFine6926"][pid % 3]
    return {"id": pid, "source": source, "split": split, "file_path": path, "captions": captions}, path


FORMATS = {
    "cuhk-pedes": ("reid_raw.json", cuhk_record, ("train", "val", "test")),
    "icfg-pedes": ("ICFG-PEDES.json", cuhk_record, ("train", "test")),
    "rstpreid": ("data_captions.json", rstp_record, ("train", "val", "test")),
    "ufine6926": ("UFine6926.json", ufine_record, ("train", "test")),
    "ufine3c": ("UFine3C.json", ufine3c_record, ("test",)),
}


def make_release(root: Path, name: str, num_images: int = 10, annotation_name=None):
    """Write a tiny release of `name` under root/name: ids with gaps (1-based, step 3), 1-3 captions per image.

    Returns (data_dir, records as written, image paths relative to data_dir).
    """
    annotation, maker, splits = FORMATS[name]
    data_dir = root / name
    records, image_paths = [], []
    for i in range(num_images):
        pid = 1 + 3 * (i // 2)  # two images per identity, gaps in the ids
        split = splits[(i // 2) % len(splits)]
        captions = [f"{name} person {pid} image {i} caption {c}" for c in range(1 + i % 3)]
        record, rel = maker(i, pid, split, captions)
        write_image(data_dir / rel, i)
        records.append(record)
        image_paths.append(rel)
    (data_dir / (annotation_name or annotation)).write_text(json.dumps(records))
    return data_dir, records, image_paths


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_benchmark_loads_its_exact_format(tmp_path, name):
    data_dir, records, image_paths = make_release(tmp_path, name)
    ds = load_tbps_dataset(name, data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"))
    assert isinstance(ds, DatasetDict)

    split_map = {"train": "train", "val": "validation", "test": "test"}
    expected_splits = [s for s in ("train", "validation", "test") if s in {split_map[r["split"]] for r in records}]
    assert list(ds) == expected_splits
    columns = {"image", "person_id", "captions", "file_path"} | ({"source"} if name == "ufine3c" else set())
    for split in ds:
        assert set(ds[split].column_names) == columns

    path_key = "img_path" if name == "rstpreid" else "file_path"
    for split in ds:
        want = [(r, p) for r, p in zip(records, image_paths) if split_map[r["split"]] == split]
        assert len(ds[split]) == len(want)
        for row, (record, rel) in zip(ds[split], want):
            assert row["person_id"] == record["id"]  # raw id, not remapped
            assert row["captions"] == record["captions"]
            assert row["file_path"] == record[path_key]
            if name == "ufine3c":
                assert row["source"] == record["source"]
            with Image.open(data_dir / rel) as original:
                assert row["image"].size == original.size
                assert row["image"].mode == original.mode
                assert np.array_equal(np.asarray(row["image"]), np.asarray(original))


def test_names_and_dispatch_errors(tmp_path):
    assert set(BUILDERS) | {"procpedes"} == set(DATASET_NAMES)
    with pytest.raises(ValueError) as err:
        load_tbps_dataset("cuhk-pedez", data_dir=str(tmp_path))
    for name in DATASET_NAMES:
        assert name in str(err.value)
    data_dir, _, _ = make_release(tmp_path, "rstpreid", num_images=2)
    ds = load_tbps_dataset("RSTPReid", data_dir=str(data_dir), cache_dir=str(tmp_path / "c"))  # case-insensitive
    assert ds["train"].num_rows == 2
    with pytest.raises(TypeError, match="bogus"):
        load_tbps_dataset("rstpreid", data_dir=str(data_dir), cache_dir=str(tmp_path / "c"), bogus=1)


def test_procpedes_dispatches_lazily(tmp_path, monkeypatch):
    calls = {}

    def fake_load_procpedes(cache_dir=None, **options):
        calls.update(cache_dir=cache_dir, **options)
        return DatasetDict()

    fake = types.ModuleType("tbps_hf.data.procpedes")
    fake.load_procpedes = fake_load_procpedes
    monkeypatch.setitem(sys.modules, "tbps_hf.data.procpedes", fake)
    result = load_tbps_dataset("procpedes", cache_dir=str(tmp_path), num_identities=7)
    assert isinstance(result, DatasetDict)
    assert calls == {"cache_dir": str(tmp_path), "num_identities": 7}
    with pytest.raises(ValueError, match="data_dir does not apply"):
        load_tbps_dataset("procpedes", data_dir=str(tmp_path))


def test_icfg_alternative_file_name_and_annotation_override(tmp_path):
    data_dir, records, _ = make_release(tmp_path, "icfg-pedes", num_images=4, annotation_name="ICFG_PEDES.json")
    ds = load_tbps_dataset("icfg-pedes", data_dir=str(data_dir), cache_dir=str(tmp_path / "c"))
    assert sum(len(ds[s]) for s in ds) == 4

    os.rename(data_dir / "ICFG_PEDES.json", data_dir / "my_annotations.json")
    with pytest.raises(ManualDownloadError) as err:
        load_tbps_dataset("icfg-pedes", data_dir=str(data_dir), cache_dir=str(tmp_path / "c"))
    message = str(err.value)
    assert "ICFG-PEDES.json" in message and "ICFG_PEDES.json" in message and str(data_dir) in message
    assert "imgs/" in message  # the expected layout is spelled out
    ds = load_tbps_dataset("icfg-pedes", data_dir=str(data_dir), cache_dir=str(tmp_path / "c"),
                           annotation_file="my_annotations.json")
    assert sum(len(ds[s]) for s in ds) == 4


def test_missing_folder_and_annotation_file(tmp_path):
    with pytest.raises(ManualDownloadError, match="no data_dir"):
        load_tbps_dataset("ufine6926", cache_dir=str(tmp_path / "c"))
    with pytest.raises(ManualDownloadError, match="does not exist"):
        load_tbps_dataset("ufine6926", data_dir=str(tmp_path / "nowhere"), cache_dir=str(tmp_path / "c"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManualDownloadError) as err:
        load_tbps_dataset("cuhk-pedes", data_dir=str(tmp_path / "empty"), cache_dir=str(tmp_path / "c"))
    assert "reid_raw.json" in str(err.value) and str(tmp_path / "empty") in str(err.value)
    assert "github.com" in str(err.value)  # where to request the data


def _rewrite(data_dir: Path, annotation: str, edit):
    records = json.loads((data_dir / annotation).read_text())
    edit(records)
    (data_dir / annotation).write_text(json.dumps(records))


@pytest.mark.parametrize(
    "edit, error, pattern",
    [
        (lambda r: r[3].pop("captions"), ValueError, r"record 3 .*missing key 'captions'"),
        (lambda r: r[2].pop("img_path"), ValueError, r"record 2 .*missing key 'img_path'"),
        (lambda r: r[1].update(split="dev"), ValueError, r"record 1 .*unknown split 'dev'"),
        (lambda r: r[4].update(captions=[]), ValueError, r"record 4 .*empty caption list"),
        (lambda r: r[4].update(captions="a string"), ValueError, r"record 4 .*list of strings"),
        (lambda r: r[3].update(captions=["fine", ""]), ValueError, r"record 3 of .*data_captions.json: caption 1 is empty"),
        (lambda r: r[2].update(captions=[" \t\n"]), ValueError, r"record 2 of .*data_captions.json: caption 0 is empty or whitespace"),
        (lambda r: r[5].update(img_path=r[0]["img_path"]), ValueError, r"record 5 .*duplicate img_path .*record 0"),
        (lambda r: r[0].update(id="abc"), ValueError, r"record 0 .*'id' must be an integer"),
    ],
    ids=["missing-captions", "missing-path", "unknown-split", "empty-captions", "captions-not-list", "empty-caption",
         "whitespace-caption", "duplicate",
         "bad-id"],
)
def test_malformed_records_are_named(tmp_path, edit, error, pattern):
    data_dir, _, _ = make_release(tmp_path, "rstpreid", num_images=6)
    _rewrite(data_dir, "data_captions.json", edit)
    with pytest.raises(error, match=pattern):
        load_tbps_dataset("rstpreid", data_dir=str(data_dir), cache_dir=str(tmp_path / "c"))


def test_bad_images_raise_or_are_skipped(tmp_path, caplog):
    data_dir, records, image_paths = make_release(tmp_path, "ufine6926", num_images=6)
    missing = data_dir / image_paths[1]
    missing.unlink()
    corrupt = data_dir / image_paths[2]
    corrupt.write_bytes(b"not an image at all")
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_tbps_dataset("ufine6926", data_dir=str(data_dir), cache_dir=str(tmp_path / "c"))

    write_image(missing, 1)  # now only the corrupt one is bad
    with pytest.raises(BadImageError, match=str(corrupt)):
        load_tbps_dataset("ufine6926", data_dir=str(data_dir), cache_dir=str(tmp_path / "c"))

    missing.unlink()
    with caplog.at_level("WARNING"):
        ds = load_tbps_dataset("ufine6926", data_dir=str(data_dir), cache_dir=str(tmp_path / "c"),
                               skip_bad_images=True)
    assert sorted(ds.skipped_images) == sorted([str(missing), str(corrupt)])
    assert "skipped 2" in caplog.text
    kept = {row for s in ds for row in ds[s]["file_path"]}
    assert kept == {r["file_path"] for r in records} - {image_paths[1], image_paths[2]}
    assert "Skipped 2" in ds["train"].info.description
    # The cached reload still reports them.
    again = load_tbps_dataset("ufine6926", data_dir=str(data_dir), cache_dir=str(tmp_path / "c"),
                              skip_bad_images=True)
    assert len(again.skipped_images) == 2


def test_truncated_jpeg_is_unreadable(tmp_path):
    data_dir, _, image_paths = make_release(tmp_path, "cuhk-pedes", num_images=1)
    jpeg = data_dir / image_paths[0]
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    with pytest.raises(BadImageError, match=str(jpeg)):
        load_tbps_dataset("cuhk-pedes", data_dir=str(data_dir), cache_dir=str(tmp_path / "c"))


def test_failed_preparation_leaves_no_trusted_cache(tmp_path):
    cache = tmp_path / "cache"
    data_dir, records, image_paths = make_release(tmp_path, "cuhk-pedes", num_images=4)
    moved = tmp_path / "aside.png"
    os.rename(data_dir / image_paths[1], moved)  # same annotation file => same cache id on the retry
    with pytest.raises(FileNotFoundError):
        load_tbps_dataset("cuhk-pedes", data_dir=str(data_dir), cache_dir=str(cache))
    assert not list(cache.rglob("dataset_info.json"))
    assert not list(cache.rglob("*.arrow"))
    os.rename(moved, data_dir / image_paths[1])
    ds = load_tbps_dataset("cuhk-pedes", data_dir=str(data_dir), cache_dir=str(cache))
    assert sorted(p for s in ds for p in ds[s]["file_path"]) == sorted(r["file_path"] for r in records)


def test_edited_annotation_file_is_not_served_from_cache(tmp_path):
    cache = tmp_path / "cache"
    data_dir, _, _ = make_release(tmp_path, "rstpreid", num_images=4)
    first = load_tbps_dataset("rstpreid", data_dir=str(data_dir), cache_dir=str(cache))
    assert first["train"][0]["captions"][0].startswith("rstpreid person 1")

    def edit(records):
        records[0]["captions"] = ["an edited caption"]

    _rewrite(data_dir, "data_captions.json", edit)
    second = load_tbps_dataset("rstpreid", data_dir=str(data_dir), cache_dir=str(cache))
    assert second["train"][0]["captions"] == ["an edited caption"]


def test_annotation_file_edited_in_place_with_same_size_and_mtime_is_read_again(tmp_path):
    cache = tmp_path / "cache"
    data_dir, _, _ = make_release(tmp_path, "rstpreid", num_images=4)
    annotation = data_dir / "data_captions.json"
    before = os.stat(annotation)
    first = load_tbps_dataset("rstpreid", data_dir=str(data_dir), cache_dir=str(cache))
    assert first["train"][0]["captions"][0] == "rstpreid person 1 image 0 caption 0"
    text = annotation.read_text()
    annotation.write_text(text.replace("person 1 image 0 caption 0", "person 1 image 0 caption X", 1))  # same size
    os.utime(annotation, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the same mtime
    assert os.stat(annotation).st_size == before.st_size and os.stat(annotation).st_mtime_ns == before.st_mtime_ns
    second = load_tbps_dataset("rstpreid", data_dir=str(data_dir), cache_dir=str(cache))
    assert second["train"][0]["captions"][0] == "rstpreid person 1 image 0 caption X"


def test_verify_reports_differences(tmp_path):
    data_dir, records, _ = make_release(tmp_path, "rstpreid", num_images=6)
    ds = load_tbps_dataset("rstpreid", data_dir=str(data_dir), cache_dir=str(tmp_path / "c"))
    report = verify_dataset("rstpreid", ds)
    assert not report.ok
    # Independent count of the fixture: 6 images, ids 1,1,4,4,7,7, 1+2+3+1+2+3 captions; test = images 4, 5.
    assert report.counts["all"] == {"identities": 3, "images": 6, "captions": 12}
    assert report.counts["test"] == {"identities": 1, "images": 2, "captions": 5}
    diffs = {(c.split, c.quantity): (c.expected, c.actual) for c in report.differences}
    assert diffs[("all", "images")] == (20505, 6)
    assert diffs[("test", "captions")] == (2000, 5)
    assert "DIFFERS" in str(report) and "20505" in str(report)


def test_verify_passes_when_sizes_match(monkeypatch, tmp_path):
    data_dir, _, _ = make_release(tmp_path, "ufine3c", num_images=5)
    ds = load_tbps_dataset("ufine3c", data_dir=str(data_dir), cache_dir=str(tmp_path / "c"))
    monkeypatch.setattr(BUILDERS["ufine3c"], "PUBLISHED_SIZES",
                        {"all": {"identities": 3, "images": 5, "captions": 1 + 2 + 3 + 1 + 2}})
    report = verify_dataset("ufine3c", ds)
    assert report.ok, str(report)
    assert report.to_dict()["differences"] == []


def test_published_sizes_match_the_design():
    sizes = {name: cls.PUBLISHED_SIZES for name, cls in BUILDERS.items()}
    assert sizes["cuhk-pedes"] == {"all": {"identities": 13003, "images": 40206, "captions": 80440},
                                   "test": {"identities": 1000, "images": 3074, "captions": 6156}}
    assert sizes["icfg-pedes"] == {"all": {"identities": 4102, "images": 54522, "captions": 54522},
                                   "test": {"identities": 1000, "images": 19848}}
    assert sizes["rstpreid"] == {"all": {"identities": 4101, "images": 20505, "captions": 41010},
                                 "test": {"identities": 200, "images": 1000, "captions": 2000}}
    assert sizes["ufine6926"] == {"all": {"identities": 6926, "images": 26206, "captions": 52412},
                                  "test": {"identities": 2000, "images": 7629, "captions": 15258}}
    assert sizes["ufine3c"] == {"all": {"identities": 2250, "images": 7446, "captions": 37939}}


def test_cli_verify_and_export(tmp_path, capsys):
    data_dir, _, _ = make_release(tmp_path, "cuhk-pedes", num_images=6)
    common = ["--dataset", "cuhk-pedes", "--data_dir", str(data_dir), "--cache_dir", str(tmp_path / "c")]
    assert data_cli(["verify", *common, "--json", str(tmp_path / "report.json")]) == 1  # tiny data differs
    assert "DIFFERS" in capsys.readouterr().out
    assert json.loads((tmp_path / "report.json").read_text())["ok"] is False

    assert data_cli(["export", *common, "--out", str(tmp_path / "out"), "--splits", "train", "test"]) == 0
    assert sorted(os.listdir(tmp_path / "out" / "data")) == ["test-00000-of-00001.parquet",
                                                             "train-00000-of-00001.parquet"]
    assert data_cli(["verify", "--dataset", "cuhk-pedes", "--data_dir", str(tmp_path / "none"),
                     "--cache_dir", str(tmp_path / "c")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_cli_help_mentions_arguments(capsys):
    with pytest.raises(SystemExit):
        data_cli(["export", "--help"])
    text = capsys.readouterr().out
    for flag in ("--dataset", "--data_dir", "--annotation_file", "--cache_dir", "--out", "--skip_bad_images"):
        assert flag in text


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_dataset_card_points_to_the_package_builder(name):
    # datasets >= 4 (the pinned range) runs no loading scripts: the builders live only in the package
    assert not list((REPO / "dataset_scripts" / name).glob("*.py"))
    card = (REPO / "dataset_scripts" / name / "README.md").read_text()
    assert card.startswith("---\n") and "license" in card and "tbps_hf" in card
