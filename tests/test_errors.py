"""`tbps_hf.errors`: one error style, one exit status, no import circle, the shared device / port checks."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import torch

from tbps_hf.errors import (
    DeviceError,
    PortInUseError,
    TBPSUserError,
    check_port_free,
    report_user_errors,
    resolve_device,
)


def test_training_and_cli_do_not_import_each_other():
    code = (
        "import sys, tbps_hf.training, tbps_hf.errors; assert 'tbps_hf.cli' not in sys.modules, 'training imports cli'; "
        "import tbps_hf.cli; from tbps_hf.training import TrainingError; from tbps_hf.errors import TBPSUserError; "
        "assert issubclass(TrainingError, TBPSUserError) and issubclass(TrainingError, RuntimeError)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _raise(err):
    raise err


@pytest.mark.parametrize(
    "err",
    [
        TBPSUserError("bad thing\nsecond line"),
        ValueError("bad value"),
        FileNotFoundError("no such file x.json"),
        DeviceError("--device cuda: CUDA is not available"),
    ],
)
def test_user_errors_are_one_line_with_exit_status_1(err, capsys, monkeypatch):
    monkeypatch.delenv("TBPS_TRACEBACK", raising=False)
    assert report_user_errors("tbps demo", _raise, err) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tbps demo: error: ") and "TBPS_TRACEBACK=1" in lines[0]
    monkeypatch.setenv("TBPS_TRACEBACK", "1")
    with pytest.raises(type(err)):
        report_user_errors("tbps demo", _raise, err)


def test_bugs_are_not_hidden(monkeypatch):
    monkeypatch.delenv("TBPS_TRACEBACK", raising=False)
    with pytest.raises(ZeroDivisionError):
        report_user_errors("tbps x", lambda: 1 / 0)
    assert report_user_errors("tbps x", lambda a: a + 1, 41) == 42


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_on_a_cpu_machine_is_named():
    with pytest.raises(DeviceError, match=r"--device cuda: CUDA is not available here.*available: cpu"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="--device 'gpu0' is not a device torch knows"):
        resolve_device("gpu0")
    assert resolve_device(None) == "cpu" and resolve_device("cpu") == "cpu"


def test_busy_port_is_named():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"--port {port}: cannot listen on 127.0.0.1:{port}"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # free again once the server closed
    check_port_free("127.0.0.1", None)
    with pytest.raises(PortInUseError, match="not a valid TCP port"):
        check_port_free("127.0.0.1", 70000)


def test_an_error_from_a_dataloader_worker_keeps_its_own_message(tmp_path, capsys, monkeypatch):
    """DataLoader re-raises a worker's error with the worker's traceback in the message: the line shows the cause."""
    from PIL import Image

    from tbps_hf.data.views import CachedImageError, LazyImages
    from datasets import Dataset, Features, Image as ImageFeature

    Image.new("RGB", (4, 8)).save(tmp_path / "a.png")
    images = LazyImages(Dataset.from_dict({"image": [str(tmp_path / "a.png")]}, features=Features({"image": ImageFeature()})))
    (tmp_path / "a.png").unlink()
    loader = torch.utils.data.DataLoader(images, num_workers=1, collate_fn=lambda batch: batch)
    monkeypatch.delenv("TBPS_TRACEBACK", raising=False)
    assert report_user_errors("tbps train", lambda: next(iter(loader))) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"tbps train: error: image of row 0 ({tmp_path / 'a.png'}) no longer exists; restore")
    assert "Traceback" not in line and issubclass(CachedImageError, TBPSUserError)
