"""evaluate_model / format_table / `tbps evaluate` (tbps_hf.evaluation)."""

from __future__ import annotations

import argparse
import json
import os
import re
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


def tbps(argv, capsys):
    """`tbps <argv>` in process: (exit status, stdout, stderr)."""
    from tbps_hf.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str, command: str = "evaluate") -> str:
    lines = [line for line in err.replace("\r", "\n").splitlines() if "error" in line.lower()]  # not progress bars
    assert len(lines) == 1 and lines[0].startswith(f"tbps {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_cli_errors_are_one_line_with_exit_status_1(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TBPS_TRACEBACK", raising=False)
    code, _, err = tbps(["evaluate", "--model", str(tmp_path / "missing"), "--dataset", "ufine3c"], capsys)
    assert code == 1 and "pass --model a folder written by save_pretrained" in one_error_line(err)

    save_tiny_pretrained(tmp_path / "model")
    data = write_ufine3c(tmp_path / "UFine3C", num_ids=2, images_per_id=1)
    common = ["evaluate", "--model", str(tmp_path / "model"), "--data_dir", str(data), "--cache_dir",
              str(tmp_path / "cache"), "--no_progress", "--device", "cpu"]
    code, _, err = tbps(common + ["--dataset", "ufine3c", "--split", "validation"], capsys)
    assert code == 1 and "unknown split(s) 'validation' for 'ufine3c'; available: test" in one_error_line(err)
    code, _, err = tbps(common + ["--dataset", "no-such-set"], capsys)
    assert code == 1 and "--dataset no-such-set: Unknown dataset 'no-such-set'; valid names" in one_error_line(err)
    code, _, err = tbps(common + ["--dataset", "ufine3c", "--data_dir", str(tmp_path / "nowhere")], capsys)
    assert code == 1 and f"data_dir {str(tmp_path / 'nowhere')!r} does not exist" in one_error_line(err)
    code, _, err = tbps(common + ["--dataset", "ufine3c", "--dataset_options", "{bad"], capsys)
    assert code == 1 and "--dataset_options is not valid JSON" in one_error_line(err)
    code, _, err = tbps(common + ["--dataset", "ufine3c", "--batch_size", "0"], capsys)
    assert code == 1 and "--batch_size must be >= 1, got 0" in one_error_line(err)
    if not torch.cuda.is_available():  # a CPU build: the device is refused before the model is even read
        code, _, err = tbps(common + ["--dataset", "ufine3c", "--device", "cuda"], capsys)
        assert code == 1 and "--device cuda: CUDA is not available here" in one_error_line(err)
    with pytest.raises(SystemExit) as usage:  # argparse's usage errors keep status 2
        tbps(["evaluate", "--dataset", "ufine3c"], capsys)
    assert usage.value.code == 2


def test_output_dir_is_checked_before_encoding(tmp_path, capsys, monkeypatch):
    import tbps_hf.evaluation as evaluation

    save_tiny_pretrained(tmp_path / "model")
    data = write_ufine3c(tmp_path / "UFine3C", num_ids=2, images_per_id=1)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded before the output folder was checked")

    monkeypatch.setattr(evaluation, "encode_images", no_encoding)
    monkeypatch.setattr(evaluation, "load_model_and_processor", no_encoding)
    for output_dir, says in ((blocker, "exists and is not a folder"), (blocker / "sub", "cannot write there")):
        code, _, err = tbps(["evaluate", "--model", str(tmp_path / "model"), "--dataset", "ufine3c", "--data_dir",
                             str(data), "--output_dir", str(output_dir), "--device", "cpu"], capsys)
        assert code == 1 and f"--output_dir {output_dir}" in one_error_line(err) and says in err
    model, processor = make_model()
    with pytest.raises(evaluation.TBPSUserError, match="exists and is not a folder"):
        evaluate_model(model, processor, make_view(), progress=False, output_dir=blocker)


def test_table_is_printed_even_when_writing_fails(tmp_path, capsys, monkeypatch):
    import errno

    import tbps_hf.evaluation as evaluation

    save_tiny_pretrained(tmp_path / "model")
    data = write_ufine3c(tmp_path / "UFine3C", num_ids=2, images_per_id=2)

    def full_disk(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(evaluation, "_write_json_atomic", full_disk)
    out = tmp_path / "eval"
    code, printed, err = tbps(["evaluate", "--model", str(tmp_path / "model"), "--dataset", "ufine3c", "--data_dir",
                               str(data), "--output_dir", str(out), "--device", "cpu", "--cache_dir",
                               str(tmp_path / "c"), "--no_progress"], capsys)
    assert code == 1
    assert "ufine3c / test" in printed and "R@1" in printed and "overall" in printed  # the numbers are not lost
    assert f"could not write the results in {out} (No space left on device)" in one_error_line(err)


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update({k: (v(config[k]) if callable(v) else v) for k, v in changes.items()})
    (folder / "config.json").write_text(json.dumps(config))


def test_weights_that_do_not_fit_the_config_are_refused_with_the_keys_named(tmp_path, capsys):
    from test_retrieval import build_method

    from tbps_hf.errors import WeightsMismatchError
    from tbps_hf.evaluation import load_model_and_processor

    model, processor = build_method("ivt", seed=0)
    layers = model.config.num_hidden_layers
    folder = tmp_path / "ivt"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    load_model_and_processor(folder, "cpu")  # untouched: loads
    _edit_config(folder, num_hidden_layers=layers + 1)
    with pytest.raises(WeightsMismatchError, match=rf"missing from the weights: layers\.{layers}\.\S+"):
        load_model_and_processor(folder, "cpu")
    _edit_config(folder, num_hidden_layers=layers - 1)
    with pytest.raises(WeightsMismatchError, match=rf"not in the model the config builds: layers\.{layers - 1}\."):
        load_model_and_processor(folder, "cpu")
    _edit_config(folder, num_hidden_layers=layers, intermediate_size=lambda v: 2 * v)
    code, _, err = tbps(["evaluate", "--model", str(folder), "--dataset", "ufine3c", "--device", "cpu"], capsys)
    line = one_error_line(err)
    assert code == 1 and "the weights do not fit config.json" in line
    assert re.search(r"shapes differ: layers\.0\.\S+: checkpoint \[[\d, ]+\] vs config \[[\d, ]+\]", line)


@pytest.mark.slow
def test_model_from_a_hub_id(tmp_path):
    """`--model org/name` loads through AutoModel / AutoProcessor (from the hub cache, offline here); an id that
    cannot be had is one line."""
    import subprocess
    import sys

    from test_retrieval import build_method

    model, processor = build_method("ivt", seed=0)
    snapshot = tmp_path / "hub" / "models--tbps--tiny-ivt" / "snapshots" / ("0" * 40)
    model.save_pretrained(snapshot)
    processor.save_pretrained(snapshot)
    (tmp_path / "hub" / "models--tbps--tiny-ivt" / "refs").mkdir()
    (tmp_path / "hub" / "models--tbps--tiny-ivt" / "refs" / "main").write_text("0" * 40)
    data = write_ufine3c(tmp_path / "UFine3C", num_ids=2, images_per_id=1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "TBPS_TRACEBACK": ""}
    env.pop("TBPS_TRACEBACK")
    common = ["--dataset", "ufine3c", "--data_dir", str(data), "--device", "cpu", "--no_progress", "--cache_dir",
              str(tmp_path / "c")]
    # One interpreter for both calls (the hub's offline switch is read when huggingface_hub is imported).
    script = (
        "import sys; from tbps_hf.cli import main; common = sys.argv[1:]; "
        "ok = main(['evaluate', '--model', 'tbps/tiny-ivt', *common]); print('EXIT', ok, file=sys.stderr); "
        "sys.exit(10 * ok + main(['evaluate', '--model', 'tbps/no-such-model', *common]))"
    )
    done = subprocess.run([sys.executable, "-c", script, *common], capture_output=True, text=True, env=env)
    assert "EXIT 0" in done.stderr, done.stderr
    assert "ufine3c / test — tbps/tiny-ivt" in done.stdout
    assert done.returncode == 1, done.stderr
    line = one_error_line(done.stderr)
    assert "--model tbps/no-such-model: no folder of that name, and the hub id cannot be loaded" in line


def test_vanished_image_says_rebuild_and_rebuild_cache_prepares_again(tmp_path, capsys):
    save_tiny_pretrained(tmp_path / "model")
    data = write_ufine3c(tmp_path / "UFine3C", num_ids=2, images_per_id=2)
    common = ["evaluate", "--model", str(tmp_path / "model"), "--dataset", "ufine3c", "--data_dir", str(data),
              "--device", "cpu", "--cache_dir", str(tmp_path / "c"), "--no_progress"]
    assert tbps(common, capsys)[0] == 0
    (data / "images" / "2_1.jpg").unlink()
    code, _, err = tbps(common, capsys)
    assert code == 1 and "2_1.jpg) no longer exists; restore the file, or rebuild" in one_error_line(err)
    code, _, err = tbps(common + ["--rebuild_cache"], capsys)  # the rebuild checks every image again
    assert code == 1 and "2_1.jpg' does not exist" in one_error_line(err)


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


def test_dataset_options_reach_procpedes(tmp_path, capsys):
    """`--dataset_options` (a small ProcPEDES here); `--rebuild_cache` does not apply to a generated dataset."""
    save_tiny_pretrained(tmp_path / "model")
    small = json.dumps({"num_train_identities": 4, "num_test_identities": 3, "num_test_3c_identities": 3,
                        "images_per_identity": 2})
    common = ["evaluate", "--model", str(tmp_path / "model"), "--dataset", "procpedes", "--dataset_options", small,
              "--device", "cpu", "--cache_dir", str(tmp_path / "c"), "--no_progress"]
    code, printed, err = tbps(common + ["--split", "test_3c"], capsys)
    assert code == 0, err
    assert "procpedes / test_3c" in printed and "granularity=" in printed
    assert printed.strip().splitlines()[-1].endswith("6 gallery images")  # 3 identities x 2 images: the options held
    code, _, err = tbps(common + ["--rebuild_cache"], capsys)
    assert code == 1 and "download_mode does not apply" in one_error_line(err)
