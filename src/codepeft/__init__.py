"""codepeft: fine-tune code LMs with every mainstream tuning method and measure them side by side."""

from codepeft.config import RunConfig, load_config
from codepeft.errors import CodepeftError
from codepeft.training import load_run, train


def evaluate(*args, **kwargs):
    """Score a run directory or a model on tasks (see codepeft.evaluation.evaluate)."""
    from codepeft.evaluation import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


__all__ = ["CodepeftError", "RunConfig", "evaluate", "load_config", "load_run", "train"]
__version__ = "0.1.0"
