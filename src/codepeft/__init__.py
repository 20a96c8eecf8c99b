"""codepeft: fine-tune code LMs with every mainstream tuning method and measure them side by side."""

from codepeft.config import RunConfig, load_config
from codepeft.errors import CodepeftError
from codepeft.training import load_run, train


def evaluate(*args, **kwargs):
    """Score a run directory or a model on tasks (see codepeft.evaluation.evaluate)."""
    from codepeft.evaluation import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def load_study(*args, **kwargs):
    """Read a study config (see codepeft.study.load_study)."""
    from codepeft.study import load_study as _load_study

    return _load_study(*args, **kwargs)


def run_study(*args, **kwargs):
    """Run a study grid resumably into its results store (see codepeft.study.run_study)."""
    from codepeft.study import run_study as _run_study

    return _run_study(*args, **kwargs)


__all__ = ["CodepeftError", "RunConfig", "evaluate", "load_config", "load_run", "load_study", "run_study", "train"]
__version__ = "0.1.0"
