"""The Gradio demo (tbps_hf.demo / spaces/tbps-demo): launched on localhost and queried with gradio_client."""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import numpy as np
import pytest
import torch
from PIL import Image

from tbps_hf.demo import EMPTY_QUERY_MESSAGE, build_demo, configure_demo_parser, run_demo
from tbps_hf.retrieval import GalleryIndex, encode_images, encode_texts
from test_retrieval import save_tiny_pretrained

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    model, processor = save_tiny_pretrained(root / "model", seed=11)
    gallery = root / "crops"
    (gallery / "cam2").mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = []
    for i in range(7):
        name = f"cam2/p{i}.png" if i % 3 == 0 else f"p{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (32, 16, 3), dtype=np.uint8)).save(gallery / name)
        names.append(name)
    (gallery / "corrupt.jpg").write_bytes(b"not an image")
    return root, model.eval(), processor, gallery, sorted(names)


def test_demo_search_via_gradio_client(setup):
    from gradio_client import Client

    root, model, processor, gallery, names = setup
    demo = build_demo(root / "model", gallery, index_dir=root / "index", top_k=3, progress=False)
    assert demo.index.ids == names and (root / "index" / "index.faiss").is_file()
    # Expected ranking, computed without the index: brute-force similarity over the crops.
    query = "a woman in a black coat carrying a red bag"
    sim = model.similarity(
        encode_texts(model, processor, [query], progress=False),
        encode_images(model, processor, [gallery / n for n in names], progress=False),
    )[0]
    expected = [names[i] for i in torch.argsort(sim, descending=True, stable=True)[:4].tolist()]

    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        items, message = client.predict(query, 4, api_name="/search")
        captions = [item["caption"] for item in items]
        assert [c.split(" · ")[0] for c in captions] == expected
        scores = [float(c.split(" · ")[1]) for c in captions]
        assert scores == pytest.approx(sorted(sim.tolist(), reverse=True)[:4], abs=2e-3)
        assert all(Path(item["image"]).is_file() for item in items)
        assert "Top 4 of 7" in message

        items, message = client.predict("   ", 4, api_name="/search")
        assert items == [] and message == EMPTY_QUERY_MESSAGE
    finally:
        demo.close()


def test_saved_index_is_reused_and_rebuilt_when_the_model_changes(setup, tmp_path):
    root, model, processor, gallery, names = setup
    index_dir = tmp_path / "idx"
    build_demo(root / "model", gallery, index_dir=index_dir, progress=False)
    stamp = (index_dir / "index.faiss").stat().st_mtime_ns
    demo = build_demo(root / "model", gallery, index_dir=index_dir, progress=False)
    assert (index_dir / "index.faiss").stat().st_mtime_ns == stamp  # loaded, not rebuilt
    assert len(demo.index) == len(names)
    loaded = GalleryIndex.load(index_dir)
    assert loaded.ids == names and loaded.metadata["gallery"] == str(gallery.resolve())
    # Another model → the stale index is rebuilt.
    save_tiny_pretrained(tmp_path / "other", seed=99)
    build_demo(tmp_path / "other", gallery, index_dir=index_dir, progress=False)
    assert GalleryIndex.load(index_dir).metadata["model"] != loaded.metadata["model"]


def test_demo_cli_errors(setup, capsys, tmp_path):
    root, *_ = setup
    env_backup = {k: os.environ.pop(k, None) for k in ("TBPS_MODEL", "TBPS_GALLERY")}
    try:
        parser = configure_demo_parser(argparse.ArgumentParser())
        assert run_demo(parser.parse_args([])) == 2
        assert "pass --model and --gallery" in capsys.readouterr().err
        assert run_demo(parser.parse_args(["--model", str(root / "model"), "--gallery", str(tmp_path / "none")])) == 2
        assert "does not exist" in capsys.readouterr().err
    finally:
        os.environ.update({k: v for k, v in env_backup.items() if v is not None})


def test_space_launcher_help(capsys, monkeypatch):
    # Run the Space's app.py in-process (a subprocess would re-import torch/transformers: slow on 2 cores).
    monkeypatch.setattr(sys, "argv", ["app.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "spaces" / "tbps-demo" / "app.py"), run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--gallery" in out and "--index_dir" in out and "--top_k" in out
