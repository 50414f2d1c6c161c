"""README commands are contracts: each command and snippet of README.md runs here exactly as written (in a scratch
folder that links the repository's files, on data the test makes), or is listed with the reason it cannot run here
and the test that covers its code instead. A README edit that adds, drops or changes a command fails
`test_every_readme_command_is_accounted_for` until this file says how it is tested."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

SMALL = {"num_train_identities": 24, "num_test_identities": 8, "num_test_3c_identities": 8, "images_per_identity": 2}

DDP_COMMAND = (
    "ACCELERATE_USE_CPU=1 .venv/bin/accelerate launch --multi_gpu --num_processes 2 --num_machines 1 "
    "--mixed_precision no --dynamo_backend no train.py --model ivt --preset tiny --output_dir runs/ddp "
    "--max_steps 20 --dataset_options '{\"num_train_identities\": 64, \"num_test_identities\": 16, "
    "\"num_test_3c_identities\": 16}'"
)

SMALL_OPTIONS = ("--dataset_options '{\"num_train_identities\": 32, \"num_test_identities\": 16, "
                 "\"num_test_3c_identities\": 16}'")
BEST_COMMAND = ("tbps train --model ivt --preset tiny --output_dir runs/ivt-best --num_train_epochs 3 "
                "--eval_strategy epoch --load_best_model_at_end true --save_total_limit 1 " + SMALL_OPTIONS)
RESUME_COMMAND = BEST_COMMAND + " --resume_from_checkpoint latest"

# Every bash command of the README → the test that runs it as written, or why it cannot run here.
COMMANDS: dict[str, str] = {
    "bash scripts/quickstart.sh": "not run: about 7 minutes of training by design; tests/test_cli.py "
    "test_quickstart_writes_report_model_and_plots runs the same tbps_hf.quickstart code on a small budget",
    "bash scripts/test.sh": "not run: it is this test suite",
    "accelerate launch train.py --model cfam --preset clip-b16 --dataset ufine6926 --data_dir /data/UFine6926":
        "not run: needs the UFine6926 release (manual download) and CLIP ViT-B/16 weights (no hub here); "
        "tests/test_training.py trains the same loop on ProcPEDES",
    "tbps evaluate --model runs/cfam --dataset ufine3c --data_dir /data/UFine3C":
        "not run: needs the UFine3C release; tests/test_evaluation.py evaluates on a UFine3C folder the test makes",
    "tbps train --model pcc --preset tiny --config_overrides '{\"use_cmr\": false}' --output_dir runs/pcc-no-cmr":
        "not run: the full tiny recipe on the default ProcPEDES (minutes); tests/test_training.py "
        "test_config_overrides_reach_the_saved_model_and_bad_ones_are_named trains with the same override",
    "python benchmarks/ablations.py --model cfam --switch share_decoder --seeds 0 1 2":
        "not run: three trainings per setting by design (minutes); benchmarks' own tests",
    "tbps export --dataset cuhk-pedes --data_dir /data/CUHK-PEDES --out parquet/cuhk":
        "not run: needs the CUHK-PEDES release; tests/test_export.py runs the README's ProcPEDES export commands "
        "verbatim through the same exporter and tests/test_data_builders.py builds cuhk-pedes from a folder it makes",
    DDP_COMMAND: "test_readme_ddp_command",
    BEST_COMMAND: "test_readme_best_model_and_resume_commands",
    RESUME_COMMAND: "test_readme_best_model_and_resume_commands",
    "accelerate launch --config_file configs/accelerate/multi_gpu.yaml train.py --model cfam --preset clip-b16 "
    "--dataset ufine6926 --data_dir /data/UFine6926 --gradient_checkpointing true":
        "not run: 8 GPUs, the UFine6926 release and CLIP weights; tests/test_training_distributed.py checks the "
        "config loads as MULTI_GPU, tests/test_training.py trains with --gradient_checkpointing",
    "accelerate launch --config_file configs/accelerate/fsdp.yaml --num_machines 2 --num_processes 16 --machine_rank 0 "
    "--main_process_ip 10.0.0.1 --main_process_port 29500 train.py --model laip --preset albef-b16 --dataset "
    "cuhk-pedes --data_dir /data/CUHK-PEDES":
        "not run: two GPU machines; FSDP cannot run on CPU through accelerate (tests/test_training_distributed.py "
        "runs fsdp.yaml on two gloo ranks and checks the warning that says so)",
}


# Commands of features other parts own and test as written in their own test files (the demo, converters, the hub).
OWNED_ELSEWHERE = {
    "tbps demo": "tests/test_demo.py",
    "python spaces/tbps-demo/app.py": "tests/test_demo.py",
    "tbps convert": "tests/test_convert_*.py",
    "tbps push": "tests/test_hub.py",
    "tbps export": "tests/test_export.py",
}


def _accounted(command: str) -> bool:
    return command in COMMANDS or any(command == p or command.startswith(p + " ") for p in OWNED_ELSEWHERE)


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def readme_commands() -> list[str]:
    commands = []
    for block in _blocks("bash"):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = re.sub(r"\s{2,}#.*$", "", line).strip()  # a trailing comment after two spaces
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+", " ", line))
    return commands


def test_every_readme_command_is_accounted_for():
    found = readme_commands()
    unknown = [c for c in found if not _accounted(c)]
    stale = [c for c in COMMANDS if c not in found]
    assert not unknown, f"README commands without a test or a reason in tests/test_readme.py: {unknown}"
    assert not stale, f"tests/test_readme.py lists commands the README no longer has: {stale}"


@pytest.fixture
def scratch(tmp_path):
    """A folder that looks like the repository root to a README command, but writes its runs/ and caches here."""
    for name in ("train.py", ".venv", "scripts", "benchmarks", "metrics", "src", "spaces"):
        if (ROOT / name).exists():
            (tmp_path / name).symlink_to(ROOT / name)
    env = {
        **os.environ,
        "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets"),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "OMP_NUM_THREADS": "1",
        "TQDM_DISABLE": "1",
    }
    return tmp_path, env


def _run(command: str, cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    assert command in readme_commands(), "the test must run the README's command as written"
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_readme_ddp_command(scratch):
    """Two gloo ranks, default tracker (TensorBoard) and evaluation: ends cleanly on both ranks."""
    cwd, env = scratch
    done = _run(DDP_COMMAND, cwd, env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    out = cwd / "runs" / "ddp"
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 20
    assert summary["eval_split"] == "test" and {"R@1", "mAP", "mSD"} <= set(summary["metrics"])
    assert list(out.rglob("events.out.tfevents.*")), "the TensorBoard tracker wrote nothing"
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()


def _python_snippet(marker: str) -> str:
    (snippet,) = [block for block in _blocks("python") if marker in block]
    return snippet


def _tiny_model(folder: Path, cache: Path):
    from tbps_hf.training import DataArguments, ModelArguments, TrainingArguments, train

    train(
        ModelArguments(model="ivt", preset="tiny"),
        DataArguments(dataset="procpedes", cache_dir=str(cache), dataset_options=json.dumps(SMALL), eval_split="none"),
        TrainingArguments(output_dir=str(folder), max_steps=2, per_device_train_batch_size=8, report_to="none"),
    )


def test_readme_usage_snippet(scratch, monkeypatch):
    """The 'Using it' snippet, as written, against a model at runs/quickstart/model and a person.jpg made here."""
    from accelerate.state import AcceleratorState

    from tbps_hf.data import load_tbps_dataset

    cwd, _ = scratch
    _tiny_model(cwd / "runs" / "quickstart" / "model", cwd / "cache")
    AcceleratorState._reset_state(True)
    load_tbps_dataset("procpedes", cache_dir=str(cwd / "cache"), **SMALL)["test"][0]["image"].save(cwd / "person.jpg")
    monkeypatch.chdir(cwd)
    scope: dict = {}
    exec(_python_snippet("AutoModel.from_pretrained"), scope)
    assert tuple(scope["scores"].shape) == (1, 1)


def test_readme_msd_snippet():
    """The evaluate snippet with the similarity rows and ids it names (made here)."""
    import numpy as np

    rng = np.random.default_rng(0)
    scope = {
        "similarity_rows": rng.uniform(-1, 1, size=(4, 6)).tolist(),
        "query_ids": [0, 1, 2, 0],
        "gallery_ids": [0, 0, 1, 1, 2, 3],
    }
    snippet = _python_snippet('evaluate.load("metrics/msd")')
    cwd = os.getcwd()
    try:
        os.chdir(ROOT)  # evaluate.load("metrics/msd") is relative to the repository root
        exec(snippet.replace("msd.compute(", "result = msd.compute("), scope)
    finally:
        os.chdir(cwd)
    assert 0 <= scope["result"]["mSD"] <= 100


@pytest.mark.slow
def test_readme_best_model_and_resume_commands(scratch):
    """Evaluation each epoch, the best model kept and restored; then the resume command continues from the newest
    checkpoint to the same end."""
    cwd, env = scratch
    done = _run(BEST_COMMAND, cwd, env)
    assert done.returncode == 0, done.stderr[-4000:]
    out = cwd / "runs" / "ivt-best"
    summary = json.loads((out / "run_summary.json").read_text())
    assert [e["epoch"] for e in summary["eval_history"]] == [1, 2, 3]
    best = summary["best_model_step"]
    assert f"best (R@1) at step {best}" in (out / "README.md").read_text()
    assert summary["metrics"]["R@1"] == pytest.approx(
        next(e["metrics"]["R@1"] for e in summary["eval_history"] if e["step"] == best))
    again = _run(RESUME_COMMAND, cwd, env)
    assert again.returncode == 0, again.stderr[-4000:]
    resumed = json.loads((out / "run_summary.json").read_text())
    assert resumed["global_step"] == summary["global_step"] and resumed["best_model_step"] == best
