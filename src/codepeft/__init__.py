"""codepeft: fine-tune code LMs with every mainstream tuning method and measure them side by side.

The public functions are imported on first use (PEP 562), so `import codepeft` and the command
line start without loading torch, transformers, peft or bitsandbytes; each name is the real
function, with its own signature and docstring.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from codepeft.errors import CodepeftError

# On CPUs with AVX512_BF16, importing bitsandbytes (peft does) warns that an optional kernel of
# its bf16 4-bit path is missing; codepeft never takes that path (models.loading.keep_4bit_layout
# turns it off on every layer), so the warning is noise on every command.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

if TYPE_CHECKING:  # what the lazy names resolve to, for type checkers and IDEs
    from codepeft.config import RunConfig, load_config
    from codepeft.evaluation import evaluate
    from codepeft.study import load_study, run_study
    from codepeft.training import load_run, train

_WHERE = {
    "RunConfig": "codepeft.config",
    "load_config": "codepeft.config",
    "evaluate": "codepeft.evaluation",
    "load_study": "codepeft.study",
    "run_study": "codepeft.study",
    "load_run": "codepeft.training",
    "train": "codepeft.training",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'codepeft' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["CodepeftError", "RunConfig", "evaluate", "load_config", "load_run", "load_study", "run_study", "train"]
__version__ = "0.1.0"
