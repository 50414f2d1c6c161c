"""User-caused errors and how every command reports them.

One style for every command (``tbps <command>: error: <what, naming the argument / file / record>``), one exit
status convention (1 for an error caused by the input; argparse's usage errors keep 2) and no traceback unless
``TBPS_TRACEBACK=1``. It lives in its own module so that ``tbps_hf.cli`` and ``tbps_hf.training`` (which both
report errors) need not import each other.

The few checks several commands share (a usable ``--device``, a free ``--port``) raise :class:`TBPSUserError` here
too, so each command reports them the same way.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any, Callable

TRACEBACK_ENV = "TBPS_TRACEBACK"
USER_ERROR_EXIT_CODE = 1


class TBPSUserError(Exception):
    """An error the user must act on (a bad argument, file, record, device, port …), not a bug.

    Subclasses: ``tbps_hf.training.TrainingError``, ``tbps_hf.backbones.BackboneUnavailableError``,
    :class:`DeviceError`, :class:`PortInUseError`, :class:`WeightsMismatchError`.
    """


class DeviceError(TBPSUserError, ValueError):
    """``--device`` names a device this build of torch cannot use."""


class PortInUseError(TBPSUserError, OSError):
    """``--port`` is already taken."""


class WeightsMismatchError(TBPSUserError, ValueError):
    """A model folder's weights do not fit its config (missing / unexpected / mis-shaped keys)."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    # ValueError / FileNotFoundError: the package's own checks of arguments, files and records raise these;
    # ManualDownloadError: a dataset folder without the release's files.
    types: list[type[BaseException]] = [TBPSUserError, ValueError, FileNotFoundError]
    try:
        from datasets.exceptions import ManualDownloadError

        types.append(ManualDownloadError)
    except ImportError:  # pragma: no cover - datasets is a dependency
        pass
    return tuple(types)


def format_user_error(prog: str, err: BaseException) -> str:
    """``prog: error: message`` on one line (a message of several lines is joined with ``" | "``)."""
    text = str(err)
    if "\nOriginal Traceback" in text:  # re-raised by a DataLoader worker: keep the worker's own message
        last = [line for line in text.splitlines() if line.strip()][-1]  # "module.SomeError: message"
        name, _, rest = last.partition(": ")
        text = rest if rest and name.endswith(("Error", "Exception")) else last
    message = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    if not message:
        message = type(err).__name__
    elif isinstance(err, KeyError) and message.startswith(("'", '"')):  # KeyError quotes its message
        message = message[1:-1]
    return f"{prog}: error: {message} (set {TRACEBACK_ENV}=1 for the traceback)"


def report_user_errors(prog: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)``. An error caused by the input (see :class:`TBPSUserError`; also ``ValueError``,
    ``FileNotFoundError`` and ``datasets``' ``ManualDownloadError``) becomes one ``prog: error: …`` line on stderr
    and the return value ``1`` instead of a traceback. ``TBPS_TRACEBACK=1`` re-raises, for debugging.

    Returns ``fn``'s own return value when it succeeds.
    """
    try:
        return fn(*args)
    except _user_error_types() as err:
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(format_user_error(prog, err), file=sys.stderr)
        return USER_ERROR_EXIT_CODE


def resolve_device(device: str | None) -> str:
    """``device`` checked against this build of torch (``None`` → ``"cuda"`` when available, else ``"cpu"``).

    Raises :class:`DeviceError` naming the device and what is available instead of torch's assertion deep inside
    ``model.to`` (e.g. ``--device cuda`` on a CPU-only build).
    """
    import torch

    if device is None or str(device).strip() == "":
        return "cuda" if torch.cuda.is_available() else "cpu"
    name = str(device).strip()
    try:
        parsed = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise DeviceError(f"--device {name!r} is not a device torch knows ({err}); use cpu, cuda or cuda:N") from None
    available = ["cpu"]
    if torch.cuda.is_available():
        available += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        available.append("mps")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no visible CUDA device"
            raise DeviceError(f"--device {name}: CUDA is not available here ({build}); available: {', '.join(available)}")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s); available: {', '.join(available)}")
    elif parsed.type == "mps" and "mps" not in available:
        raise DeviceError(f"--device {name}: MPS is not available here; available: {', '.join(available)}")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"--device {name}: unsupported device type {parsed.type!r}; available: {', '.join(available)}")
    return name


def check_port_free(host: str, port: int | None) -> None:
    """Raise :class:`PortInUseError` when ``host:port`` cannot be bound (``None``: let the server pick).

    Servers such as gradio otherwise fail with a long traceback or silently move to another port.
    """
    if port is None:
        return
    if not 0 < int(port) < 65536:
        raise PortInUseError(f"--port {port} is not a valid TCP port (1-65535)")
    family = socket.AF_INET6 if ":" in (host or "") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As servers do: a port held only by connections closing (TIME_WAIT) is free, a listening one is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host or "127.0.0.1", int(port)))
        except OSError as err:
            raise PortInUseError(
                f"--port {port}: cannot listen on {host or '127.0.0.1'}:{port} ({err.strerror or err}); "
                "another server may be using it — pick another --port or stop that server"
            ) from None


__all__ = [
    "TBPSUserError",
    "DeviceError",
    "PortInUseError",
    "WeightsMismatchError",
    "report_user_errors",
    "format_user_error",
    "resolve_device",
    "check_port_free",
    "USER_ERROR_EXIT_CODE",
    "TRACEBACK_ENV",
]
