"""Training through transformers.Trainer, with run directories, loss curves and cost records."""

from codepeft.training.artifacts import load_run
from codepeft.training.runner import RunResult, train

__all__ = ["RunResult", "load_run", "train"]
