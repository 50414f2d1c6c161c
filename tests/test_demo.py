"""The Gradio demo (tbps_hf.demo / spaces/tbps-demo): the engine called directly, the page through gradio_client.

A tiny untrained IVT model with a WordPiece tokenizer trained on a small ProcPEDES stands in for the quickstart
model: judging and explaining are checked against independent computations, not against what the model learned.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import sys
import time
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import tbps_hf
from tbps_hf.demo import (
    EMPTY_QUERY_MESSAGE,
    MAX_QUERY_CHARS,
    build_demo,
    build_engine,
    configure_demo_parser,
    demo_from_args,
    load_or_build_index,
    resolve_model,
    ModelUnavailable,
)
from tbps_hf.metrics import retrieval_metrics
from tbps_hf.processing.phrases import noun_phrases
from tbps_hf.retrieval import GalleryIndex, encode_images, encode_texts

REPO = Path(__file__).resolve().parents[1]
SMALL = {"num_train_identities": 20, "num_test_identities": 6, "num_test_3c_identities": 6, "images_per_identity": 2}


def make_demo_model(path: Path, cache_dir: Path):
    """An untrained IVT tiny model whose tokenizer is trained on the small ProcPEDES's captions, saved to ``path``."""
    from tbps_hf.data import load_tbps_dataset

    data = load_tbps_dataset("procpedes", cache_dir=cache_dir, **SMALL)
    method = tbps_hf.get_method("ivt")
    config = method.config_class.from_preset("tiny")
    processor = method.processor_class.from_config(config, captions=[c for cs in data["train"]["captions"] for c in cs])
    config.vocab_size = len(processor.tokenizer)
    torch.manual_seed(0)
    model = method.model_class(config).eval()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return data


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    data = make_demo_model(root / "model", root / "data")
    engine = build_engine(
        root / "model", dataset="procpedes", cache_dir=root / "data", dataset_options=SMALL, progress=False,
        device="cpu",
    )  # fmt: skip
    return root, data, engine


def test_judging_matches_the_metric_core_on_the_full_similarity(world):
    root, data, engine = world
    g = engine.gallery("procpedes test")
    assert list(engine.galleries) == ["procpedes test", "procpedes test_3c"] and g.labelled
    examples = engine.example_queries("procpedes test")
    assert len(examples) == 6 and len({g.query_person(q) for q in examples}) == 6  # six different people
    query = examples[2]
    result = engine.search(query, k=5, gallery="procpedes test")

    # Independent: the model's own similarity over every crop of the split, then the metric core.
    split = data["test"]
    sim = engine.model.similarity(
        encode_texts(engine.model, engine.processor, [query], progress=False),
        encode_images(engine.model, engine.processor, split["image"], progress=False),
    )
    pid = g.query_person(query)
    owner = next(r["person_id"] for r in split if query in r["captions"])
    assert pid == owner
    ref = retrieval_metrics(sim, [owner], split["person_id"], return_per_query=True)["per_query"]
    assert result.first_true_rank == int(ref["first_positive_rank"][0])
    assert result.ap == pytest.approx(float(ref["ap"][0]), abs=1e-6)
    expected = torch.argsort(sim[0], descending=True, stable=True)[:5].tolist()
    assert [h.position for h in result.hits] == expected
    assert [h.match for h in result.hits] == [split[i]["person_id"] == owner for i in expected]
    assert f"rank **{result.first_true_rank}**" in result.message and "AP" in result.message
    # A free-text query is not judged.
    free = engine.search("a man in a red shirt", k=3, gallery="procpedes test")
    assert free.first_true_rank is None and all(h.match is None for h in free.hits) and "no ground truth" in free.message


def test_random_query_comes_from_the_split_and_is_judged(world):
    _, _, engine = world
    g = engine.gallery("procpedes test_3c")
    query = engine.random_query("procpedes test_3c")
    assert query in g.queries
    result = engine.search(query, k=3, gallery="procpedes test_3c")
    assert result.first_true_rank is not None and all(h.match is not None for h in result.hits)


def test_explain_shows_the_attention_map_and_noun_phrases(world):
    _, _, engine = world
    query = engine.example_queries(None)[0]
    result = engine.search(query, k=4)
    out = engine.explain(result, 1)
    assert out["phrases"] == noun_phrases(query) and out["phrases"]
    assert out["crop"].height >= 256  # large enough to see the clothes
    assert out["attention"] is not None and out["attention"].size == out["crop"].size
    # the overlay is the crop blended with the model's own map: it differs from the crop
    assert np.abs(np.asarray(out["attention"], dtype=int) - np.asarray(out["crop"], dtype=int)).mean() > 5
    assert all(f"*{p}*" in out["markdown"] for p in out["phrases"])
    with pytest.raises(ValueError, match="result number"):
        engine.explain(result, 10)


def test_bad_queries_get_a_message_not_a_ranking(world):
    _, _, engine = world
    assert engine.search("   ", 5).message == EMPTY_QUERY_MESSAGE
    for unreadable in ("黑色外套的女人", "😀👜🧥"):
        result = engine.search(unreadable, 5)
        assert result.hits == [] and "vocabulary" in result.message
    mixed = engine.search("a woman 黑色外套", 5)
    assert len(mixed.hits) == 5 and "黑色外套" in mixed.message
    long = engine.search("a man in a red shirt " * 200, 3)
    assert len(long.hits) == 3 and f"first {MAX_QUERY_CHARS} characters" in long.message
    many = engine.search("a man", 500)
    assert len(many.hits) == 12 and "holds 12 crops" in many.message
    plain = engine.search("a man", 3, rerank=True)
    assert "cross-encoder" in plain.message and not plain.first_stage


def test_uploads_join_the_search_and_non_images_are_reported(world, tmp_path):
    _, data, engine = world
    crop = data["test"][0]["image"]
    crop.save(tmp_path / "mine.png")
    (tmp_path / "notes.txt").write_text("not an image")
    uploads, problems = engine.encode_uploads([tmp_path / "mine.png", tmp_path / "notes.txt"])
    assert len(uploads) == 1 and problems == ["`notes.txt` is not an image Pillow can read: skipped."]
    query = data["test"][0]["captions"][0]
    result = engine.search(query, 13, uploads=uploads)
    up = [h for h in result.hits if h.upload]
    assert len(result.hits) == 13 and len(up) == 1 and up[0].label == "upload mine.png"
    twin = next(h for h in result.hits if not h.upload and h.position == 0)  # the same crop in the gallery
    assert up[0].score == pytest.approx(twin.score, abs=1e-5)
    assert "left out of rank and AP" in result.message
    items = engine.images_for(result, result.hits, uploads)
    assert len(items) == 13 and items[0][1].startswith("#1 ")


def _gallery_folder(root: Path, data, n=6) -> Path:
    folder = root / "crops"
    (folder / "cam1").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        data["test"][i]["image"].save(folder / ("cam1" if i % 2 else ".") / f"p{i}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return folder


def test_saved_index_follows_the_gallery_contents(world, tmp_path):
    root, data, engine = world
    folder = _gallery_folder(tmp_path, data)
    index_dir = tmp_path / "idx"
    args = (engine.model, engine.processor, root / "model", folder, index_dir)
    index, message = load_or_build_index(*args, progress=False)
    assert len(index) == 6 and "Indexed 6 crops" in message and "Skipped 1 unreadable" in message
    stamp = (index_dir / "index.faiss").stat().st_mtime_ns

    index, message = load_or_build_index(*args, progress=False)
    assert "gallery unchanged" in message and (index_dir / "index.faiss").stat().st_mtime_ns == stamp
    assert "Skipped 1 unreadable" in message  # still counted on a reused index

    # A new crop is found, a deleted one is never returned, a rewritten one is re-encoded.
    data["test"][7]["image"].save(folder / "new.png")
    (folder / "cam1" / "p1.png").unlink()
    time.sleep(0.01)
    data["test"][8]["image"].save(folder / "p2.png")
    index, message = load_or_build_index(*args, progress=False)
    assert "2 new or changed crop(s) added, 2 vanished or changed crop(s) dropped" in message
    assert len(index) == 6
    live = sorted(index.ids[i] for i in range(index.ntotal) if i not in index.removed)
    assert live == ["cam1/p3.png", "cam1/p5.png", "new.png", "p0.png", "p2.png", "p4.png"]
    target = encode_images(engine.model, engine.processor, [folder / "p2.png"], progress=False)
    _, idx = index.search(target, k=1)
    assert index.ids[idx[0, 0]] == "p2.png" and index.ntotal - 1 not in index.removed
    _, idx = index.search(target, k=6)
    assert "cam1/p1.png" not in [index.ids[i] for i in idx[0]]

    # A damaged index file is rebuilt, not a crash.
    (index_dir / "index.faiss").write_bytes(b"garbage")
    index, message = load_or_build_index(*args, progress=False)
    assert "damaged" in message and len(index) == 6 and GalleryIndex.load(index_dir).ntotal == 6
    # Another index type → rebuilt with it.
    index, message = load_or_build_index(*args, progress=False, index_factory="HNSW8")
    assert "another model, gallery or index type" in message and index.index_factory == "HNSW8"


def test_crop_deleted_after_start_is_skipped(world, tmp_path):
    root, data, engine0 = world
    folder = _gallery_folder(tmp_path, data, n=4)
    engine = build_engine(root / "model", gallery_dir=folder, progress=False, device="cpu")
    assert list(engine.galleries) == ["folder crops"]
    first = engine.search("a woman", 4)
    gone = first.hits[0].label
    (folder / gone).unlink()
    again = engine.search("a woman", 4)
    assert gone not in [h.label for h in again.hits] and len(again.hits) == 3
    assert "1 indexed crop(s) no longer exist" in again.message
    assert len(engine.images_for(again, again.hits)) == 3


def test_index_factory_rejected_by_faiss_names_its_reason(world):
    root, *_ = world
    with pytest.raises(ValueError, match="FAISS rejected index_factory 'IVF4,Bogus'.*Bogus"):
        build_engine(root / "model", dataset="procpedes", index_factory="IVF4,Bogus")


def test_model_resolution_pages(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelUnavailable) as missing:
        resolve_model(None)
    assert "tbps quickstart" in missing.value.page and "--train_if_missing" in missing.value.page
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network here: fail fast
    with pytest.raises(ModelUnavailable) as hub:
        resolve_model("nobody-here/no-such-model")
    assert "Could not load `nobody-here/no-such-model` from the Hugging Face Hub" in hub.value.page
    with pytest.raises(ModelUnavailable, match="neither a folder nor a hub id"):
        resolve_model("./no/such/dir")
    # The app serves the page instead of a traceback.
    demo = build_demo("nobody-here/no-such-model")
    assert "Could not load" in demo.problem


def test_hub_id_loads_from_the_hub_cache(world, tmp_path, monkeypatch):
    """`--model org/name` goes through huggingface_hub (offline here: a cache laid out as the hub writes it)."""
    import huggingface_hub.constants
    from test_hub import populate_hub_cache

    from tbps_hf.evaluation import load_model_and_processor

    root, *_ = world
    populate_hub_cache(tmp_path / "hub", "tbps/demo-tiny", root / "model")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    path = resolve_model("tbps/demo-tiny")
    assert path.parent.name == "snapshots" and (path / "model.safetensors").is_file()
    model, _ = load_model_and_processor(path, "cpu")
    assert type(model).__name__ == "IVTModel"


def test_train_if_missing_trains_the_quickstart_model(world, tmp_path, monkeypatch):
    """--train_if_missing runs `tbps quickstart` into runs/ (its training loop shows the progress bar)."""
    import tbps_hf.quickstart

    root, *_ = world
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(
        tbps_hf.quickstart, "quickstart",
        lambda out, **kw: calls.append(Path(out)) or shutil.copytree(root / "model", Path(out) / "model"),
    )  # fmt: skip
    assert resolve_model(None, train_if_missing=True) == Path("runs/quickstart/model")
    assert calls == [Path("runs/quickstart")] and (tmp_path / "runs/quickstart/model/config.json").is_file()
    assert resolve_model(None, train_if_missing=True) == Path("runs/quickstart/model") and len(calls) == 1


def test_no_arguments_serve_procpedes_with_the_quickstart_model(world, tmp_path, monkeypatch):
    """`tbps demo` with no arguments: runs/quickstart/model and its data cache, test + test_3c galleries."""
    root, *_ = world
    monkeypatch.chdir(tmp_path)
    for name in ("TBPS_MODEL", "TBPS_GALLERY", "TBPS_DATASET", "TBPS_INDEX"):
        monkeypatch.delenv(name, raising=False)
    parser = configure_demo_parser(argparse.ArgumentParser())
    demo = demo_from_args(parser.parse_args([]))
    assert "tbps quickstart" in demo.problem  # no model yet: the page says the one command
    shutil.copytree(root / "model", tmp_path / "runs" / "quickstart" / "model")
    shutil.copytree(root / "data", tmp_path / "runs" / "quickstart" / "data_cache")  # what quickstart generated
    monkeypatch.setenv("TBPS_DATASET_OPTIONS", json.dumps(SMALL))  # the small build, so the test takes seconds
    demo = demo_from_args(parser.parse_args([]))
    assert list(demo.engine.galleries) == ["procpedes test", "procpedes test_3c"]

    # The README's two demo lines through the `tbps` console script (launch recorded instead of serving).
    import gradio as gr

    from tbps_hf.cli import main as tbps

    launched = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: launched.append((self, kw)))
    lines = [l.split("#")[0].split() for l in (REPO / "README.md").read_text().splitlines() if l.startswith("tbps demo")]
    assert len(lines) == 2 and lines[0] == ["tbps", "demo"]
    assert tbps(lines[0][1:]) == 0
    assert list(launched[-1][0].engine.galleries) == ["procpedes test", "procpedes test_3c"]
    # The Space's launcher with no arguments, as a Space runs it (in-process: a subprocess re-imports torch).
    monkeypatch.setattr(sys, "argv", ["app.py"])
    monkeypatch.setenv("SYSTEM", "spaces")
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "spaces" / "tbps-demo" / "app.py"), run_name="__main__")
    assert exit_info.value.code == 0 and launched[-1][1]["server_name"] == "0.0.0.0"
    assert list(launched[-1][0].engine.galleries) == ["procpedes test", "procpedes test_3c"]
    monkeypatch.delenv("SYSTEM")
    _gallery_folder(tmp_path / "data", {"test": [{"image": im} for im in world[1]["test"]["image"]]})
    argv = [a.replace("/data/", str(tmp_path / "data") + "/") for a in lines[1][1:]]
    assert tbps(argv) == 0
    engine = launched[-1][0].engine
    assert list(engine.galleries) == ["folder crops"] and engine.gallery(None).index.index_factory == "HNSW32"
    assert (tmp_path / "data" / "crops-index" / "index.faiss").is_file()


def test_demo_api_via_gradio_client(world, tmp_path):
    from gradio_client import Client

    _, data, engine = world
    demo = build_demo(engine=engine, top_k=4)
    query = engine.example_queries("procpedes test_3c")[1]
    expected = engine.search(query, 4, "procpedes test_3c")
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        items, message, before = client.predict(query, 4, "procpedes test_3c", False, api_name="/search")
        captions = [item["caption"] for item in items]
        assert [c.split(" · ")[0] for c in captions] == [f"#{h.rank} {h.label}" for h in expected.hits]
        assert [c.endswith("✓") for c in captions] == [h.match for h in expected.hits]
        scores = [float(c.split(" · ")[1]) for c in captions]
        assert scores == pytest.approx([h.score for h in expected.hits], abs=2e-3)
        assert all(Image.open(item["image"]).height >= 256 for item in items)
        assert f"rank **{expected.first_true_rank}**" in message

        crop, attention, phrase_maps, explanation = client.predict(
            query, 4, "procpedes test_3c", False, 2, api_name="/explain"
        )
        assert Path(crop).is_file() and Path(attention).is_file()
        assert f"**Result #3** `{expected.hits[2].label}`" in explanation and "Noun phrases" in explanation

        items, message, _ = client.predict("   ", 4, "procpedes test", False, api_name="/search")
        assert items == [] and message == EMPTY_QUERY_MESSAGE

        # Uploads through the page join this session's searches; a file that is not an image is named, not fatal.
        from gradio_client import handle_file

        folder = _gallery_folder(tmp_path, data, n=1)
        (folder / "fake.png").write_bytes(b"not a png")
        note = client.predict([handle_file(str(folder / "p0.png")), handle_file(str(folder / "fake.png"))], api_name="/upload")
        assert "`fake.png` is not an image" in note and "1 uploaded crop(s)" in note
        items, message, _ = client.predict(query, 13, "procpedes test_3c", False, api_name="/search")
        assert len(items) == 13 and sum(" upload p0.png " in item["caption"] for item in items) == 1
    finally:
        demo.close()


def test_space_folder_deploys_as_is(capsys, monkeypatch):
    space = REPO / "spaces" / "tbps-demo"
    readme = (space / "README.md").read_text()
    header = yaml.safe_load(readme.split("---")[1])
    assert header["sdk"] == "gradio" and header["app_file"] == "app.py" and (space / header["app_file"]).is_file()
    import gradio

    assert header["sdk_version"] == gradio.__version__
    assert "Privacy" in readme and "](demo.png)" in readme and (space / "demo.png").is_file()
    requirements = [l.strip() for l in (space / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert any(l.startswith("tbps-hf[demo,faiss]") for l in requirements)
    # Run the Space's app.py in-process (a subprocess would re-import torch/transformers: slow on 2 cores).
    monkeypatch.setattr(sys, "argv", ["app.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(space / "app.py"), run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--gallery", "--dataset", "--split", "--index", "--index_dir", "--train_if_missing"):
        assert flag in out


def test_laip_rerank_toggle_and_phrase_maps(world, tmp_path):
    """A cross-encoder: the re-ranked order and its rank/AP equal tbps_hf.reranking on the full matrix."""
    from tbps_hf.reranking import rerank_similarity

    root, data, _ = world
    method = tbps_hf.get_method("laip")
    config = method.config_class.from_preset("tiny")
    processor = method.processor_class.from_config(config, captions=[c for cs in data["train"]["captions"] for c in cs])
    config.vocab_size = len(processor.tokenizer)
    torch.manual_seed(0)
    method.model_class(config).eval().save_pretrained(tmp_path / "laip")
    processor.save_pretrained(tmp_path / "laip")
    engine = build_engine(
        tmp_path / "laip", dataset="procpedes", splits=["test"], cache_dir=root / "data", dataset_options=SMALL,
        progress=False, device="cpu",
    )  # fmt: skip
    model, processor = engine.model, engine.processor
    assert engine.is_cross_encoder
    query = engine.example_queries(None)[1]
    plain, result = engine.search(query, 5), engine.search(query, 5, rerank=True)

    split = data["test"]
    text = processor(text=[query], return_tensors="pt")
    image_features = encode_images(model, processor, split["image"], progress=False)
    first = model.similarity(encode_texts(model, processor, [query], progress=False), image_features)
    final = rerank_similarity(model, text, image_features, first, min(engine.rerank_k, first.shape[1]))
    assert [h.position for h in plain.hits] == torch.argsort(first[0], descending=True, stable=True)[:5].tolist()
    assert [h.position for h in result.first_stage] == [h.position for h in plain.hits]  # the order before
    assert [h.position for h in result.hits] == torch.argsort(final[0], descending=True, stable=True)[:5].tolist()
    owner = next(r["person_id"] for r in split if query in r["captions"])
    ref = retrieval_metrics(final, [owner], split["person_id"], similarity_range=(0, 1), return_per_query=True)
    assert result.first_true_rank == int(ref["per_query"]["first_positive_rank"][0])
    assert result.ap == pytest.approx(float(ref["per_query"]["ap"][0]), abs=1e-6)
    assert "re-ranked by ITM" in result.message

    out = engine.explain(result, 0)
    assert [p for _, p in out["phrase_maps"]] == list(processor.phrase_inputs(query)["phrases"])
    assert out["phrase_maps"] and all(img.size == out["crop"].size for img, _ in out["phrase_maps"])
