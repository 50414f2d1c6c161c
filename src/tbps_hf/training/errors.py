"""Errors the training loop reports to the user as one line (no traceback); see tbps_hf.errors."""

from __future__ import annotations

from ..errors import TBPSUserError


class TrainingError(TBPSUserError, RuntimeError):
    """Training stopped for a reason the user must act on (NaN loss, bad checkpoint, used output folder…)."""


class TrainingInterrupted(TrainingError):
    """SIGINT / SIGTERM: a resumable checkpoint was saved; the message says how to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
