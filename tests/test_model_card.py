"""Model cards: the packaged template, evaluation results recorded after training (the quickstart's path), provenance."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard

from tbps_hf.model_card import TEMPLATE_PATH, add_eval_results, write_model_card
from tbps_hf.models import method_names


def test_template_ships_inside_the_package():
    import tbps_hf

    assert TEMPLATE_PATH.is_file() and TEMPLATE_PATH.parent.parent == __import__("pathlib").Path(tbps_hf.__file__).parent


def test_eval_results_added_after_training_fill_the_model_index_and_table(tmp_path):
    # as the quickstart does: training writes the card (no metrics), then evaluation on test and test_3c adds them
    write_model_card(tmp_path, "ivt", "tiny", "procpedes", metrics=None, training_args={"max_steps": 10})
    assert "_Not evaluated yet._" in (tmp_path / "README.md").read_text()
    add_eval_results(tmp_path, {"test": {"R@1": 41.234, "mAP": 30.0}, "test_3c": {"R@1": 20.0, "mAP": 15.5}}, "procpedes")
    text = (tmp_path / "README.md").read_text()
    assert "_Not evaluated yet._" not in text
    assert "| test | 41.23 | 30.00 |" in text and "| test_3c | 20.00 | 15.50 |" in text
    card = ModelCard.load(tmp_path / "README.md")
    results = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results == {("test", "R@1"): 41.23, ("test", "mAP"): 30.0, ("test_3c", "R@1"): 20.0, ("test_3c", "mAP"): 15.5}
    assert "`max_steps` | `10`" in text  # the rest of the card is kept
    # re-evaluating a split replaces its numbers rather than adding a second entry
    add_eval_results(tmp_path, {"test": {"R@1": 50.0}}, "procpedes")
    card = ModelCard.load(tmp_path / "README.md")
    assert sorted((r.dataset_split, r.metric_name, r.metric_value) for r in card.data.eval_results)[0] == ("test", "R@1", 50.0)
    assert len(card.data.eval_results) == 4


def test_converted_card_names_source_and_licence(tmp_path):
    write_model_card(tmp_path, "ivt", "converted", None, source="converted from the authors' release (MIT licence)",
                     license="mit")
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.license == "mit" and not card.data.datasets
    assert "**Weights:** converted from the authors' release (MIT licence)" in card.text


# ---------------------------------------------------------------- the card's own snippets, as written in the card
def _card_blocks(card: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", card, flags=re.S)


@pytest.mark.parametrize("name", method_names())
def test_card_usage_snippet_runs_as_written(name, built_methods, tmp_path):
    """A saved model's card: its Python usage block runs exactly as written (in the folder that holds the model,
    with a `crop.jpg` there), and each of its bash commands parses with the real `tbps` parsers (they need a
    gallery folder / a benchmark release, which the commands name as absolute paths)."""
    import argparse
    import importlib

    from PIL import Image

    from tbps_hf.cli import SUBCOMMANDS

    built = built_methods(name)
    folder = tmp_path / f"{name}-tiny"
    built.model.save_pretrained(folder)
    built.processor.save_pretrained(folder)
    write_model_card(folder, method=name, preset="tiny", dataset="procpedes", metrics={"R@1": 1.0})
    card = (folder / "README.md").read_text()
    (python,) = _card_blocks(card, "python")
    Image.new("RGB", (32, 64), (200, 40, 40)).save(tmp_path / "crop.jpg")
    snippet = python + "\nassert tuple(scores.shape) == (1, 1), scores.shape\nprint('scores', scores.tolist())\n"
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "scores [[" in done.stdout
    commands = [line.strip() for block in _card_blocks(card, "bash") for line in block.splitlines() if line.strip()]
    assert commands, "the card shows how to search and evaluate"
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "tbps" and argv[1] in SUBCOMMANDS, command
        module, configure, _, _ = SUBCOMMANDS[argv[1]]
        parser = argparse.ArgumentParser(prog=f"tbps {argv[1]}")
        getattr(importlib.import_module(module), configure)(parser)
        args = parser.parse_args(argv[2:])
        assert getattr(args, "model") == f"{name}-tiny", command
