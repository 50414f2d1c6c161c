"""The `tbps` console script and `tbps quickstart` (on a small ProcPEDES, so it takes seconds, not minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tbps_hf.cli import SUBCOMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"num_train_identities": 40, "num_test_identities": 8, "num_test_3c_identities": 8, "images_per_identity": 2}


# every test starts from a fresh accelerate state (the fixture lives in conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def test_help_lists_every_command(capsys):
    assert main([]) == 0
    text = capsys.readouterr().out
    for name in ["train", *SUBCOMMANDS]:
        assert name in text


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--" in capsys.readouterr().out  # documents its options


def test_train_help_and_unknown_command():
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--resume_from_checkpoint" in done.stdout and "--lora_r" in done.stdout
    with pytest.raises(SystemExit) as exit_info:
        main(["bogus"])
    assert exit_info.value.code == 2


def test_user_errors_are_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    assert main(["quickstart", "--model", "nope", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    from tbps_hf.models import method_names

    assert f"tbps quickstart: error: Unknown model 'nope'; valid models: {', '.join(method_names())}" in err
    assert "Traceback" not in err and "TBPS_TRACEBACK=1" in err
    assert main(["train", "--model", "pcc", "--config_overrides", '{"use_cmrr": false}', "--output_dir", str(tmp_path)]) == 1
    assert "train: error: --config_overrides: PCCConfig has no field 'use_cmrr' (did you mean 'use_cmr'" in capsys.readouterr().err
    monkeypatch.setenv("TBPS_TRACEBACK", "1")  # for debugging: the exception itself
    with pytest.raises(ValueError, match="valid models: .*ivt"):
        main(["quickstart", "--model", "nope", "--out", str(tmp_path)])


def test_quickstart_writes_report_model_and_plots(tmp_path, capsys):
    out = tmp_path / "qs"
    code = main(
        ["quickstart", "--out", str(out), "--train_minutes", "0.1", "--num_train_epochs", "1",
         "--dataset_options", json.dumps(SMALL)]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "ivt" and report["global_step"] >= 1
    for key in ("total_seconds", "train_seconds"):
        assert report[key] > 0
    for split in ("test", "test_3c"):
        assert set(report["metrics"][split]) == {"R@1", "R@5", "R@10", "mAP", "mINP", "mSD"}
        for name in ("cmc.png", "retrieval_grid.png", "sd_distribution.png"):
            assert (out / "eval" / split / name).stat().st_size > 0
    assert "granularity" in report["groups"]["test_3c"]
    assert (out / "model" / "model.safetensors").exists()
    card = (out / "model" / "README.md").read_text()  # the card shows what the quickstart measured
    assert "_Not evaluated yet._" not in card and f"| test_3c | {report['metrics']['test_3c']['R@1']:.2f} |" in card
    md = (out / "report.md").read_text()
    assert "What the numbers mean" in md and "Running on a real benchmark" in md
    assert "R@1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, says",
    [
        (["verify", "--dataset", "rstpreid", "--data_dir", "{tmp}/nowhere"], "data_dir '{tmp}/nowhere' does not exist"),
        (["export", "--dataset", "rstpreid", "--data_dir", "{tmp}/nowhere", "--out", "{tmp}/o"], "does not exist"),
        (["evaluate", "--model", "{tmp}/nowhere", "--dataset", "ufine3c"], "does not exist; pass --model a folder"),
        (["quickstart", "--model", "nope", "--out", "{tmp}/q"], "Unknown model 'nope'"),
    ],
    ids=["verify", "export", "evaluate", "quickstart"],
)
def test_every_command_reports_input_errors_in_one_style(argv, says, tmp_path, capsys, monkeypatch):
    """One `tbps <command>: error: …` line (a multi-line message joined), exit status 1, no traceback."""
    monkeypatch.delenv("TBPS_TRACEBACK", raising=False)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith(f"tbps {argv[0]}: error: "), err
    assert says.replace("{tmp}", str(tmp_path)) in lines[0] and "Traceback" not in err


def test_ctrl_c_is_one_line_with_the_sigint_status(capsys, monkeypatch):
    import tbps_hf.data.cli as data_cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.delenv("TBPS_TRACEBACK", raising=False)
    monkeypatch.setattr(data_cli, "run_verify", interrupted)
    assert main(["verify", "--dataset", "rstpreid", "--data_dir", "x"]) == 130
    assert capsys.readouterr().err.strip() == "tbps verify: interrupted"
