"""The package as users get it: built into a wheel, installed into a fresh virtual environment, used from outside
the source tree (a Space, `pip install tbps-hf`). Every other test runs on the editable install and cannot see a
file left outside the package or a module imported from the source tree.

The fresh environment sees the shared environment's third-party packages through a `.pth` path (nothing is
downloaded); the wheel itself is installed with `pip install --no-deps --no-index`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = {"num_train_identities": 16, "num_test_identities": 8, "num_test_3c_identities": 8, "images_per_identity": 2}


def _run(args, cwd, env, timeout=600):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of a fresh venv with the wheel installed, a working folder outside the repository, its env)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # build from a copy: the working tree gets no build/ or egg-info
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", GRADIO_ANALYTICS_ENABLED="False")
    dist = root / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
         cwd=root, env=env)
    (wheel,) = dist.glob("tbps_hf-*.whl")

    environment = root / "venv"
    venv.EnvBuilder(with_pip=False).create(environment)
    python = environment / "bin" / "python"
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True, env=env).strip())
    # third-party packages from the shared environment (its own .pth files, the editable tbps_hf among them, are
    # not processed: a path line is added, not walked as a site directory)
    (site / "shared_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
         cwd=root, env=env)
    work = root / "work"
    work.mkdir()
    return python, work, env, site


@pytest.mark.slow
def test_wheel_installs_and_trains_evaluates_and_writes_a_card(installed):
    python, work, env, site = installed
    probe = _run([str(python), "-c", "import tbps_hf, json; from tbps_hf.models import method_names; "
                  "print(json.dumps([tbps_hf.__file__, tbps_hf.__version__, method_names()]))"], cwd=work, env=env)
    location, version, methods = json.loads(probe.stdout.strip().splitlines()[-1])
    assert Path(location).is_relative_to(site), f"tbps_hf imported from {location}, not the installed wheel"
    import tomllib

    from tbps_hf.models import method_names

    assert version == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]  # one version source
    assert methods == method_names()  # every method folder ships and is discovered from the installed package

    tbps = str(python.parent / "tbps")
    help_text = _run([tbps, "--help"], cwd=work, env=env).stdout
    assert all(name in help_text for name in methods)
    _run([tbps, "train", "--model", "ivt", "--preset", "tiny", "--dataset", "procpedes", "--cache_dir", "cache",
          "--dataset_options", json.dumps(SMALL), "--output_dir", "run", "--max_steps", "3",
          "--per_device_train_batch_size", "8", "--images_per_identity", "2", "--report_to", "none",
          "--eval_split", "none"], cwd=work, env=env)
    _run([tbps, "evaluate", "--model", "run", "--dataset", "procpedes", "--split", "test", "--cache_dir", "cache",
          "--dataset_options", json.dumps(SMALL), "--output_dir", "eval", "--batch_size", "16"], cwd=work, env=env)
    assert (work / "eval").is_dir() and any((work / "eval").iterdir())
    card = (work / "run" / "README.md").read_text()
    # written from the package's own template, not huggingface_hub's generic one
    assert "[More Information Needed]" not in card
    assert "Text-based person search with **IVT**" in card and 'AutoModel.from_pretrained("run")' in card
