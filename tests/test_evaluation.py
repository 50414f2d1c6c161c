"""evaluate_model / format_table / `tbps evaluate` (tbps_hf.evaluation)."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from tbps_hf.evaluation import configure_parser, evaluate_model, format_table, run
from tbps_hf.metrics import retrieval_metrics
from tbps_hf.retrieval import encode_images, encode_texts
from test_retrieval import CAPTIONS, make_model, random_images, random_texts, save_tiny_pretrained


def make_view(num_ids=5, images_per_id=3, captions_per_image=2, seed=0):
    """A small EvaluationView-like object; one query's person is absent from the gallery (skipped)."""
    rng = np.random.default_rng(seed)
    gallery_ids = np.repeat(np.arange(num_ids) * 10 + 3, images_per_id).astype(np.int64)
    images = random_images(len(gallery_ids), seed=seed)
    queries = random_texts(len(gallery_ids) * captions_per_image, seed=seed + 1)
    query_ids = np.repeat(gallery_ids, captions_per_image)
    query_ids[-1] = 999  # no positive in the gallery
    styles = rng.choice(["short", "long", "poem"], size=len(queries)).tolist()
    sources = np.repeat(np.array(["CUHK", "ICFG"])[np.arange(len(gallery_ids)) % 2], captions_per_image).tolist()
    return SimpleNamespace(
        gallery_images=images,
        gallery_ids=gallery_ids,
        queries=queries,
        query_ids=query_ids,
        query_groups={"style": styles, "source": sources},
    )


def full_similarity(model, processor, view):
    t = encode_texts(model, processor, view.queries, progress=False)
    i = encode_images(model, processor, view.gallery_images, progress=False)
    return model.similarity(t, i).numpy()


@pytest.mark.parametrize("structured", [False, True])
def test_evaluate_model_matches_metric_core_and_writes_files(tmp_path, structured):
    model, processor = make_model(structured, seed=3)
    view = make_view()
    results = evaluate_model(model, processor, view, batch_size=4, progress=False, output_dir=tmp_path, grid_queries=3)

    sim = full_similarity(model, processor, view)
    expected = retrieval_metrics(sim, view.query_ids, view.gallery_ids, similarity_range=model.similarity_range)
    for key in ("R@1", "R@5", "R@10", "mAP", "mINP", "mSD"):
        assert results["overall"][key] == pytest.approx(expected[key], abs=1e-4), key
    assert results["overall"]["num_skipped_queries"] == 1 and results["overall"]["num_queries"] == len(view.queries) - 1
    assert results["num_queries"] == len(view.queries) and results["num_gallery"] == len(view.gallery_ids)
    assert results["streaming"] is False

    names = {p.name for p in tmp_path.iterdir()}
    assert {"metrics.json", "cmc.png", "sd_distribution.png", "retrieval_grid.png"} <= names
    assert "attention_maps.png" not in names  # this model has no attention maps (the interface's default: None)
    for png in ("cmc.png", "sd_distribution.png", "retrieval_grid.png"):
        with Image.open(tmp_path / png) as im:
            assert im.format == "PNG" and im.size[0] > 100
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["overall"] == pytest.approx(results["overall"])
    assert set(saved["groups"]) == {"style", "source"} and "per_query" not in saved
    assert saved["model"]["model_type"] == "tbps-test-tiny"
    assert saved["model"]["similarity_range"] == list(model.similarity_range)


def test_streaming_equals_dense():
    model, processor = make_model(True, seed=4)
    view = make_view(seed=5)
    dense = evaluate_model(model, processor, view, progress=False, streaming=False)
    streamed = evaluate_model(model, processor, view, progress=False, streaming=True)
    assert streamed["streaming"] is True
    assert streamed["overall"] == pytest.approx(dense["overall"], abs=1e-4)
    for name in dense["groups"]:
        for value in dense["groups"][name]:
            assert streamed["groups"][name][value] == pytest.approx(dense["groups"][name][value], abs=1e-4)


def test_group_breakdown_equals_metrics_of_each_subset():
    model, processor = make_model(seed=6)
    view = make_view(num_ids=6, seed=7)
    results = evaluate_model(model, processor, view, progress=False)
    sim = full_similarity(model, processor, view)
    for name, values in view.query_groups.items():
        values = np.asarray(values)
        got = results["groups"][name]
        # Groups list only values with evaluated queries; the skipped query (last) may leave a value out.
        evaluated_values = set(values[:-1].tolist())
        assert set(got) == evaluated_values
        for value in evaluated_values:
            rows = np.flatnonzero((values == value) & (view.query_ids != 999))
            expected = retrieval_metrics(sim[rows], view.query_ids[rows], view.gallery_ids)
            for key in ("R@1", "R@5", "R@10", "mAP", "mINP", "mSD"):
                assert got[value][key] == pytest.approx(expected[key], abs=1e-4), (name, value, key)
            assert got[value]["num_queries"] == len(rows)
    table = format_table(results, title="tiny")
    assert table.splitlines()[0] == "tiny"
    assert "overall" in table and "style=poem" in table and "source=ICFG" in table
    assert f"{results['overall']['R@1']:8.2f}" in table


def test_evaluate_model_rejects_empty_view():
    model, processor = make_model()
    view = SimpleNamespace(gallery_images=[], gallery_ids=np.zeros(0), queries=["a"], query_ids=np.ones(1), query_groups={})
    with pytest.raises(ValueError, match="Nothing to evaluate"):
        evaluate_model(model, processor, view, progress=False)


# ------------------------------------------------------------------------------------------------------ CLI
def write_ufine3c(folder, num_ids=4, images_per_id=2):
    """A UFine3C-format folder (UFine3C.json + images/), the real on-disk layout, tiny."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    records = []
    for pid in range(1, num_ids + 1):
        for j in range(images_per_id):
            name = f"images/{pid}_{j}.jpg"
            Image.fromarray(rng.integers(0, 256, (24, 12, 3), dtype=np.uint8)).save(folder / name)
            records.append(
                {
                    "id": pid,
                    "source": ["CUHK-PEDES", "ICFG-PEDES"][pid % 2],
                    "split": "test",
                    "file_path": name,
                    "captions": [CAPTIONS[(pid + j) % 4], CAPTIONS[(pid + 2 * j + 1) % 4]],
                }
            )
    (folder / "UFine3C.json").write_text(json.dumps(records))
    return folder


def parse(argv):
    return configure_parser(argparse.ArgumentParser(prog="tbps evaluate")).parse_args(argv)


def test_cli_run_on_saved_model_and_dataset_folder(tmp_path, capsys):
    save_tiny_pretrained(tmp_path / "model")
    data = write_ufine3c(tmp_path / "UFine3C")
    out = tmp_path / "eval"
    args = parse(
        ["--model", str(tmp_path / "model"), "--dataset", "ufine3c", "--data_dir", str(data), "--output_dir", str(out),
         "--batch_size", "3", "--device", "cpu", "--cache_dir", str(tmp_path / "cache"), "--no_progress"]
    )
    assert run(args) == 0
    printed = capsys.readouterr().out
    assert "ufine3c / test" in printed and "source=CUHK-PEDES" in printed and "source=ICFG-PEDES" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_gallery"] == 8 and metrics["num_queries"] == 16
    assert metrics["groups"]["source"]["CUHK-PEDES"]["num_queries"] == 8
    assert metrics["dataset"] == {"name": "ufine3c", "split": "test", "data_dir": str(data)}
    assert (out / "retrieval_grid.png").is_file() and (out / "cmc.png").is_file()


def test_cli_errors_are_helpful(tmp_path, capsys):
    assert run(parse(["--model", str(tmp_path / "missing"), "--dataset", "ufine3c"])) == 2
    assert "pass --model a folder written by save_pretrained" in capsys.readouterr().err

    save_tiny_pretrained(tmp_path / "model")
    data = write_ufine3c(tmp_path / "UFine3C", num_ids=2, images_per_id=1)
    common = ["--model", str(tmp_path / "model"), "--data_dir", str(data), "--cache_dir", str(tmp_path / "cache")]
    assert run(parse(common + ["--dataset", "ufine3c", "--split", "validation"])) == 2
    err = capsys.readouterr().err
    assert "unknown split(s) 'validation'" in err and "available: test" in err

    assert run(parse(common + ["--dataset", "no-such-set"])) == 2
    assert "no-such-set" in capsys.readouterr().err

    with pytest.raises(SystemExit):  # --model and --dataset are required
        parse(["--dataset", "ufine3c"])


# ------------------------------------------------------------------------------------------------ model card
def test_write_model_card(tmp_path):
    from huggingface_hub import ModelCard

    from tbps_hf.model_card import write_model_card

    save_tiny_pretrained(tmp_path / "ivt-tiny", structured=True)
    metrics = {
        "test": {"R@1": 55.123, "R@5": 80.0, "R@10": 90.0, "mAP": 50.0, "mINP": 20.0, "mSD": 30.0, "num_queries": 9},
        "test_3c": {"R@1": 40.0, "mAP": 33.3},
    }
    path = write_model_card(tmp_path / "ivt-tiny", "ivt", "tiny", "procpedes", metrics, {"learning_rate": 0.001})
    assert path == tmp_path / "ivt-tiny" / "README.md"
    card = ModelCard.load(path)
    assert card.data.library_name == "transformers" and "text-based-person-search" in card.data.tags
    assert card.data.datasets == ["procpedes"]
    results = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results[("test", "R@1")] == 55.12 and results[("test_3c", "mAP")] == 33.3 and len(results) == 8
    text = path.read_text()
    assert "| test | 55.12 | 80.00 | 90.00 | 50.00 | 20.00 | 30.00 |" in text  # R@1, R@5, R@10, mAP, mINP, mSD
    assert "range [-3, 3]" in text and "`learning_rate` | `0.001`" in text and "{{" not in text
    # A flat dict means the test split; no metrics → the card says so.
    flat = write_model_card(tmp_path / "b", "cfam", "clip-b16", "ufine6926", {"R@1": 1.0})
    assert ModelCard.load(flat).data.eval_results[0].dataset_split == "test"
    assert "_Not evaluated yet._" in write_model_card(tmp_path / "c", "pcc", "tiny", "cuhk-pedes").read_text()


# -------------------------------------------------------------------------------------------- retrieval grid
def test_retrieval_grid_marks_matches(tmp_path):
    from tbps_hf.visualization import MATCH_COLOR, MISS_COLOR, retrieval_grid

    images = [Image.new("RGB", (10, 30), (0, 0, 255 - 20 * i)) for i in range(6)]
    top = np.array([[2, 0, 5], [1, 3, 4]])
    matches = np.array([[True, False, False], [False, False, True]])
    path = retrieval_grid(["a very long caption " * 20, "short"], images, top, matches, tmp_path / "g.png", k=3,
                          thumb_size=(20, 40))
    grid = np.asarray(Image.open(path).convert("RGB"))
    # Scan the first thumbnail row for border colors: one green and two red borders in row 0.
    colors = {tuple(px) for px in grid.reshape(-1, 3)}
    assert MATCH_COLOR in colors and MISS_COLOR in colors
    with pytest.raises(ValueError, match=r"\[Q, k\]"):
        retrieval_grid(["q"], images, top[:1], matches, tmp_path / "x.png")


def test_tbps_evaluate_with_ivt_tiny(tmp_path, capsys):
    """The `tbps evaluate` console entry on a saved IVT tiny folder (random weights) and a UFine3C-format folder."""
    from tbps_hf.cli import main
    from test_retrieval import build_method

    model, processor = build_method("ivt", seed=1)
    model.save_pretrained(tmp_path / "ivt")
    processor.save_pretrained(tmp_path / "ivt")
    data = write_ufine3c(tmp_path / "UFine3C", num_ids=3)
    out = tmp_path / "eval"
    code = main(["evaluate", "--model", str(tmp_path / "ivt"), "--dataset", "ufine3c", "--data_dir", str(data),
                 "--output_dir", str(out), "--device", "cpu", "--streaming", "--cache_dir", str(tmp_path / "c"),
                 "--no_progress"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["model_type"] == "ivt" and metrics["streaming"] is True
    assert metrics["num_gallery"] == 6 and metrics["overall"]["num_queries"] == 12
    assert 0 <= metrics["overall"]["R@1"] <= metrics["overall"]["R@5"] <= metrics["overall"]["R@10"] == 100.0
    # IVT has attention maps: drawn for the grid's top-1 hits next to the other plots
    assert metrics["files"]["attention_maps"] == str(out / "attention_maps.png")
    with Image.open(out / "attention_maps.png") as im:
        assert im.format == "PNG" and im.size[0] > 100
