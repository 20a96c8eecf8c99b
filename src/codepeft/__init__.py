"""codepeft: fine-tune code LMs with every mainstream tuning method and measure them side by side."""

from codepeft.config import RunConfig, load_config
from codepeft.errors import CodepeftError
from codepeft.training import load_run, train

__all__ = ["CodepeftError", "RunConfig", "load_config", "load_run", "train"]
__version__ = "0.1.0"
