"""Model cards: the packaged template, evaluation results recorded after training (the quickstart's path), provenance."""

from __future__ import annotations

from huggingface_hub import ModelCard

from tbps_hf.model_card import TEMPLATE_PATH, add_eval_results, write_model_card


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
